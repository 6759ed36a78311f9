"""Regression heads: NONA (paper 000, Section 3.1) and the dense baseline, plus the projector MLP."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nona.inference import predict_no_grad
from nona.similarity import check_similarity_kind, self_similarity, similarity
from nona.softstep import SoftStep

# Number of (rows x N) temporaries alive at once in one chunk of the forward
# pass (similarity, mask, weights and their autograd buffers); sets chunk size.
_LIVE_TEMPORARIES = 6
DEFAULT_MEMORY_BUDGET = 512 * 2**20


def _check_finite(name: str, tensor: Tensor) -> None:
    if not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).nonzero()[:5].tolist()
        raise ValueError(f"{name} contains NaN or inf (first offending indices: {bad}); clean the input first")


class NONA(nn.Module):
    """Nearness of Neighbors Attention: ``y_hat = softmax(sim(Z, Z_N) [+ log SoftStep]) @ y_N``.

    ``similarity`` is one of ``l2``, ``l1``, ``dot``, ``cos``, ``rbf``;
    ``softstep`` is an optional :class:`~nona.softstep.SoftStep` module;
    ``gamma`` is the initial bandwidth of ``rbf`` (learned, kept positive);
    ``memory_budget`` caps, in bytes, the working memory of one chunk of queries.
    """

    def __init__(
        self,
        similarity: str = "l2",
        softstep: SoftStep | None = None,
        gamma: float = 1.0,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        super().__init__()
        self.similarity = check_similarity_kind(similarity)
        if softstep is not None and not isinstance(softstep, SoftStep):
            raise ValueError(f"softstep must be a nona.SoftStep module or None, got {type(softstep).__name__}")
        self.softstep = softstep
        if gamma <= 0:
            raise ValueError(f"gamma must be positive, got {gamma}")
        self.log_gamma = nn.Parameter(torch.tensor(math.log(gamma))) if similarity == "rbf" else None
        if memory_budget <= 0:
            raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
        self.memory_budget = int(memory_budget)

    def extra_repr(self) -> str:
        return f"similarity={self.similarity!r}"

    @property
    def gamma(self) -> Tensor | float:
        """The rbf bandwidth (1.0 for the other similarities, where it is unused)."""
        return self.log_gamma.exp() if self.log_gamma is not None else 1.0

    def _validate(self, z: Tensor, z_n: Tensor, y_n: Tensor, exclude_self: bool) -> None:
        if z.dim() != 2 or z_n.dim() != 2:
            raise ValueError(
                f"z and z_n must be 2-D (one row per point); got shapes {tuple(z.shape)} and {tuple(z_n.shape)}"
            )
        if z.shape[1] != z_n.shape[1]:
            raise ValueError(f"z has embedding dimension {z.shape[1]} but z_n has {z_n.shape[1]}; they must match")
        if y_n.dim() != 1 or y_n.shape[0] != z_n.shape[0]:
            raise ValueError(
                f"y_n must be a 1-D tensor with one label per neighbour: z_n has {z_n.shape[0]} rows, "
                f"y_n has shape {tuple(y_n.shape)}"
            )
        if z_n.shape[0] == 0:
            raise ValueError("the neighbour set is empty; NONA needs at least one neighbour")
        if exclude_self:
            if z.shape[0] != z_n.shape[0]:
                raise ValueError(
                    f"exclude_self=True means the batch is its own neighbour set, but z has {z.shape[0]} rows "
                    f"and z_n has {z_n.shape[0]}"
                )
            if z.shape[0] < 2:
                raise ValueError("exclude_self=True with a single point leaves it no neighbour; use a batch of 2 or more")
        _check_finite("z", z)
        _check_finite("z_n", z_n)
        _check_finite("y_n", y_n)

    def logits(self, z: Tensor, z_n: Tensor, self_index: Tensor | None = None) -> Tensor:
        """Attention logits ``(b, N)``: similarities, SoftStep shift, and ``-inf`` at each row's own column."""
        sim = similarity(z, z_n, self.similarity, gamma=self.gamma)
        if self_index is not None:
            # The matmul expansion leaves rounding noise on the diagonal; its exact
            # value matters because it takes part in SoftStep's min-max normalisation.
            rows = torch.arange(z.shape[0], device=z.device)
            sim = sim.index_put((rows, self_index), self_similarity(z, self.similarity))
        if self.softstep is not None:
            sim = self.softstep(sim, z, self_index)
        if self_index is not None:
            sim = sim.index_put((rows, self_index), torch.tensor(float("-inf"), dtype=sim.dtype, device=sim.device))
        return sim

    def rows_per_chunk(self, n_neighbours: int, element_size: int) -> int:
        """How many query rows fit in ``memory_budget`` against ``n_neighbours`` neighbours."""
        return max(1, self.memory_budget // (n_neighbours * element_size * _LIVE_TEMPORARIES))

    def attention(self, z: Tensor, z_n: Tensor, exclude_self: bool = False) -> Tensor:
        """The attention weights ``p_ij`` as a dense ``(b, N)`` matrix (for analysis, not chunked)."""
        self._validate(z, z_n, torch.zeros(z_n.shape[0], dtype=z.dtype, device=z.device), exclude_self)
        self_index = torch.arange(z.shape[0], device=z.device) if exclude_self else None
        return torch.softmax(self.logits(z, z_n, self_index), dim=1)

    def forward(self, z: Tensor, z_n: Tensor, y_n: Tensor, exclude_self: bool = False) -> Tensor:
        """Predictions of shape ``(b,)`` for queries ``z`` from neighbours ``(z_n, y_n)``.

        With ``exclude_self=True`` the batch is its own neighbour set and each
        point's own entry is masked by index (training mode).
        """
        self._validate(z, z_n, y_n, exclude_self)
        y_n = y_n.to(z.dtype)
        if not exclude_self and not torch.is_grad_enabled():
            return predict_no_grad(self, z, z_n, y_n)
        step = self.rows_per_chunk(z_n.shape[0], z.element_size())
        outputs = []
        for start in range(0, z.shape[0], step):
            chunk = z[start : start + step]
            self_index = torch.arange(start, start + chunk.shape[0], device=z.device) if exclude_self else None
            weights = torch.softmax(self.logits(chunk, z_n, self_index), dim=1)
            outputs.append(weights @ y_n)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class DenseHead(nn.Module):
    """The linear regression head of the baseline: ``y_hat = z w + c``."""

    def __init__(self, dim: int = 25) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, 1)

    def forward(self, z: Tensor) -> Tensor:
        """Predictions of shape ``(b,)``."""
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"DenseHead expects embeddings of shape (b, {self.dim}), got {tuple(z.shape)}")
        return self.linear(z).squeeze(1)


class Projector(nn.Module):
    """The MLP between a backbone and a head: ``in_dim -> hidden -> dim`` (paper: hidden 200, dim 25)."""

    def __init__(self, in_dim: int, dim: int = 25, hidden: int = 200) -> None:
        super().__init__()
        if min(in_dim, dim, hidden) < 1:
            raise ValueError(f"Projector sizes must be positive, got in_dim={in_dim}, dim={dim}, hidden={hidden}")
        self.in_dim = in_dim
        self.dim = dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings of shape ``(b, dim)``."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"Projector expects inputs of shape (b, {self.in_dim}), got {tuple(x.shape)}")
        return self.net(x)
