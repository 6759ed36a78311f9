"""Regression heads: NONA (the NONA paper, Section 3.1) and the dense baseline, plus the projector MLP."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from nona.inference import predict_no_grad
from nona.similarity import (
    OwnColumns,
    check_similarity_kind,
    distances_backward,
    distances_forward,
    own_values,
    put_own,
    similarity,
)
from nona.softstep import SoftStep, s2_shift_backward, s2_shift_forward

# Number of (rows x N) temporaries alive at once in one chunk of the forward
# pass (similarity, mask, weights and their autograd buffers); sets chunk size.
_LIVE_TEMPORARIES = 6
DEFAULT_MEMORY_BUDGET = 512 * 2**20


class SelfNeighbourWarning(UserWarning):
    """A training call whose neighbour set is the query batch itself, without ``exclude_self=True``."""


def _check_finite(*named: tuple[str, Tensor]) -> None:
    """Raise ValueError naming the first of the ``(name, tensor)`` pairs that holds a NaN or inf."""
    # One reduction per tensor and a single sync in the common case: a finite total
    # means finite entries; an infinite or NaN total may still be an overflow of
    # finite entries (or inf - inf across tensors), so check each tensor then.
    total = None
    for _, tensor in named:
        total = tensor.sum() if total is None else total + tensor.sum()
    if total is None or math.isfinite(total.item()):
        return
    for name, tensor in named:
        if not torch.isfinite(tensor).all():
            bad = (~torch.isfinite(tensor)).nonzero()[:5].tolist()
            raise ValueError(f"{name} contains NaN or inf (first offending indices: {bad}); clean the input first")


def _check_inputs_finite(z: Tensor, z_n: Tensor, y_n: Tensor) -> None:
    _check_finite(("z", z), ("y_n", y_n)) if z_n is z else _check_finite(("z", z), ("z_n", z_n), ("y_n", y_n))


def _check_prediction_finite(out: Tensor, z: Tensor, z_n: Tensor, y_n: Tensor) -> Tensor:
    """Return ``out``; if it holds a NaN or inf, raise ValueError naming the input that holds one first.

    A NaN or inf anywhere in ``z``, ``z_n`` or ``y_n`` reaches every prediction it
    touches (a weight of exactly 0 times a NaN or inf label is NaN), so checking
    the ``b`` predictions finds bad inputs with one reduction instead of one per
    input. Finite inputs whose prediction still overflows pass, as before.
    """
    if not math.isfinite(out.sum().item()):
        _check_inputs_finite(z, z_n, y_n)
    return out


def _same_points(z: Tensor, z_n: Tensor) -> bool:
    # The same tensor, or a view of the same memory with the same layout.
    return z is z_n or (
        z.shape == z_n.shape
        and z.stride() == z_n.stride()
        and z.storage_offset() == z_n.storage_offset()
        and z.untyped_storage().data_ptr() == z_n.untyped_storage().data_ptr()
    )


def warn_if_self_neighbours(z: Tensor, z_n: Tensor, exclude_self: bool) -> None:
    """Warn (:class:`SelfNeighbourWarning`) when a training batch is its own neighbour set without exclude_self."""
    if not exclude_self and torch.is_grad_enabled() and _same_points(z, z_n):
        warnings.warn(
            "the queries are also the neighbours (z_n is z) while gradients are enabled: each point would see "
            "its own label with the largest weight and the head would learn to copy it; pass exclude_self=True "
            "to leave each point's own entry out when training",
            SelfNeighbourWarning,
            stacklevel=3,
        )


def attend_forward(
    logits: Tensor, y: Tensor, own: OwnColumns | None, owned: bool = False
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``softmax(logits) @ y`` with each row's own column left out, and what :func:`attend_backward` needs.

    ``owned``: the caller owns ``logits`` (no autograd node saved it), whose own
    entries may then be overwritten with ``-inf`` rather than restored afterwards.
    """
    if own is None:
        weights = torch.softmax(logits, dim=1)
    elif owned:
        weights = torch.softmax(put_own(logits.data, own, float("-inf")), dim=1)
    else:
        # The own entries are set to -inf for the softmax, then restored: through
        # .data, so that autograd, which may have saved `logits` for another node,
        # does not see a modification.
        raw = logits.data
        saved = own_values(raw, own)
        weights = torch.softmax(put_own(raw, own, float("-inf")), dim=1)
        put_own(raw, own, saved)
    out = weights @ y
    return out, (weights, y, out)


def attend_backward(grad: Tensor, saved: tuple[Tensor, ...], needs: tuple) -> tuple[Tensor | None, Tensor | None]:
    """Gradients ``(to logits, to y)`` of :func:`attend_forward`; ``needs`` as autograd's needs_input_grad."""
    weights, y, out = saved
    grad_logits = grad_y = None
    if needs[0]:
        # p_ij (y_j - out_i) grad_i, in three elementwise passes (torch.addr is slower).
        grad_logits = torch.sub(y, out.unsqueeze(1)).mul_(weights).mul_(grad.unsqueeze(1))
    if needs[1]:
        grad_y = grad @ weights
    return grad_logits, grad_y


class _Attend(torch.autograd.Function):
    """``softmax(logits) @ y`` with each row's own column (``own``) left out, analytic backward.

    The backward pass needs only the weights and the prediction:
    ``d y_hat_i / d logit_ij = p_ij (y_j - y_hat_i)``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, y: Tensor, own: OwnColumns | None) -> Tensor:
        out, saved = attend_forward(logits, y, own)
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (*attend_backward(grad, ctx.saved_tensors, ctx.needs_input_grad), None)


# Whether the common training call (l2, no SoftStep or S2, the batch as its own neighbours,
# one chunk) runs as the single node _SelfAttend; False runs the separate nodes, to the same bits.
FUSED_SELF_ATTEND = True


class _SelfAttend(torch.autograd.Function):
    """The training prediction of an ``l2`` head, with or without an S2 SoftStep, in one node.

    The batch ``z`` is its own neighbour set (``exclude_self``) and is one
    chunk. The same arithmetic as :class:`~nona.similarity._Distances`, then
    :class:`~nona.softstep._S2Shift` (when S2's parameters are given), then
    :class:`_Attend`, so the same values, with fewer kernels and autograd nodes
    in between: the similarity matrix is this node's own, so its own entries
    are written ``-inf`` once instead of saved and restored.
    """

    @staticmethod
    def forward(ctx, z: Tensor, y: Tensor, p: Tensor | None) -> Tensor:
        s2 = p is not None
        # Without SoftStep the diagonal can be -inf at once: nothing normalises over it.
        sim, distances = distances_forward(z, z, 0, True, own_value=0.0 if s2 else float("-inf"))
        shift = ()
        if s2:
            sim, shift = s2_shift_forward(sim, p)
        out, attend = attend_forward(sim, y, 0 if s2 else None, owned=True)
        ctx.sizes = (len(distances), len(shift))
        ctx.save_for_backward(*distances, *shift, *attend)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        n_distances, n_shift = ctx.sizes
        distances, shift = saved[:n_distances], saved[n_distances : n_distances + n_shift]
        needs_z, needs_y, needs_p = ctx.needs_input_grad
        needs_sim = needs_z or needs_p
        grad_sim, grad_y = attend_backward(grad, saved[n_distances + n_shift :], (needs_sim, needs_y))
        grad_p = None
        if shift:
            grad_sim, grad_p = s2_shift_backward(grad_sim, shift, (needs_z, needs_p))
        grad_z = distances_backward(grad_sim, distances, 0, True, (True, True))[0] if needs_z else None
        if grad_z is not None and shift and shift[1].shape[0] > 1:  # shift[1] is b: (rows, 1) when pointwise
            # Pointwise parameters come from z, so z gets a second gradient (through
            # SoftStep's linear layer), which autograd adds into whichever arrives first.
            # As separate nodes, that one was the linear layer's (row-major); this node runs
            # first now, and its column-major gradient would make the sum column-major, so
            # the projector's reductions below would round differently. Row-major keeps
            # every bit of the separate nodes' training.
            grad_z = grad_z.contiguous()
        return grad_z, grad_y, grad_p


class NONA(nn.Module):
    """Nearness of Neighbors Attention: ``y_hat = softmax(sim(Z, Z_N) [+ log SoftStep]) @ y_N``.

    Parameters
    ----------
    similarity : str
        The similarity measure: ``"l2"`` (the paper's choice), ``"l1"``,
        ``"dot"``, ``"cos"`` or ``"rbf"``.
    softstep : SoftStep or None
        An optional learned attention mask (:class:`~nona.softstep.SoftStep`).
    gamma : float
        Initial bandwidth of ``rbf`` (learned, kept positive); unused otherwise.
    memory_budget : int
        Cap, in bytes, on the working memory of one chunk of queries.

    Raises
    ------
    ValueError
        On an unknown similarity, a ``softstep`` that is not a SoftStep, a
        non-positive ``gamma`` or ``memory_budget``.
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

    def _validate(self, z: Tensor, z_n: Tensor, y_n: Tensor, exclude_self: bool, values: bool = True) -> None:
        """Raise ValueError on bad shapes, and (``values``) on a NaN or inf in the inputs."""
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
                raise ValueError(
                    "exclude_self=True with a single point leaves it no neighbour; use a batch of 2 or more"
                )
        if values:
            _check_inputs_finite(z, z_n, y_n)
        warn_if_self_neighbours(z, z_n, exclude_self)

    def scores(self, z: Tensor, z_n: Tensor, self_index: Tensor | int | None = None) -> Tensor:
        """Attention scores ``(b, N)`` before the own-entry mask: similarities plus the SoftStep shift.

        Parameters
        ----------
        z : torch.Tensor
            Queries, shape ``(b, d)``.
        z_n : torch.Tensor
            Neighbours, shape ``(N, d)``.
        self_index : torch.Tensor, int or None
            Row i's own column (training): ``self_index[i]``, or
            ``i + self_index`` for an int; None when there is none.

        Returns
        -------
        torch.Tensor
            Shape ``(b, N)``; row i's own column holds its exact self-similarity
            (plus shift), which takes part in SoftStep's min-max normalisation.
        """
        sim = similarity(z, z_n, self.similarity, gamma=self.gamma, self_index=self_index)
        if self.softstep is not None:
            sim = self.softstep(sim, z, self_index)
        return sim

    def logits(self, z: Tensor, z_n: Tensor, self_index: Tensor | None = None) -> Tensor:
        """Attention logits ``(b, N)``: similarities, SoftStep shift, and ``-inf`` at each row's own column."""
        sim = self.scores(z, z_n, self_index)
        if self_index is not None:
            rows = torch.arange(z.shape[0], device=z.device)
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
        """Predict each query's label from its neighbours.

        Parameters
        ----------
        z : torch.Tensor
            Query embeddings, shape ``(b, d)``.
        z_n : torch.Tensor
            Neighbour embeddings, shape ``(N, d)``.
        y_n : torch.Tensor
            Neighbour labels, shape ``(N,)``.
        exclude_self : bool
            True in training, when the batch is its own neighbour set
            (``z_n`` is ``z``): each point's own entry is masked by index.

        Returns
        -------
        torch.Tensor
            Predictions, shape ``(b,)``.

        Raises
        ------
        ValueError
            On mismatched shapes, an empty neighbour set, or NaN/inf inputs.

        Warns
        -----
        SelfNeighbourWarning
            When gradients are enabled, ``z_n`` is ``z`` and ``exclude_self``
            is False: each point would see its own label.
        """
        self._validate(z, z_n, y_n, exclude_self, values=False)
        if y_n.dtype != z.dtype:
            y_n = y_n.to(z.dtype)
        return _check_prediction_finite(self._predict(z, z_n, y_n, exclude_self), z, z_n, y_n)

    def _predict(self, z: Tensor, z_n: Tensor, y_n: Tensor, exclude_self: bool) -> Tensor:
        if not exclude_self and not torch.is_grad_enabled():
            return predict_no_grad(self, z, z_n, y_n)
        step = self.rows_per_chunk(z_n.shape[0], z.element_size())
        if FUSED_SELF_ATTEND and exclude_self and z_n is z and step >= z.shape[0] and self.similarity == "l2":
            if self.softstep is None:
                return _SelfAttend.apply(z, y_n, None)
            if self.softstep.fn == "s2":
                return _SelfAttend.apply(z, y_n, self.softstep.parameters_for(z))
        outputs = []
        for start in range(0, z.shape[0], step):
            # A single chunk is z itself: slicing would add a node to the backward pass.
            chunk = z if step >= z.shape[0] else z[start : start + step]
            # Row i of the chunk is column start + i: a diagonal, written without index tensors.
            own = start if exclude_self else None
            outputs.append(_Attend.apply(self.scores(chunk, z_n, own), y_n, own))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


class DenseHead(nn.Module):
    """The linear regression head of the baseline: ``y_hat = z w + c``.

    Parameters
    ----------
    dim : int
        The embedding dimension.
    """

    def __init__(self, dim: int = 25) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, 1)

    def forward(self, z: Tensor) -> Tensor:
        """Predict one label per embedding.

        Parameters
        ----------
        z : torch.Tensor
            Embeddings, shape ``(b, dim)``.

        Returns
        -------
        torch.Tensor
            Predictions, shape ``(b,)``.
        """
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"DenseHead expects embeddings of shape (b, {self.dim}), got {tuple(z.shape)}")
        return self.linear(z).squeeze(1)


PROJECTOR_STYLES = ("tanh", "relu")


class Projector(nn.Module):
    """The MLP between a backbone and a head: ``in_dim -> hidden -> dim`` (paper: hidden 200, dim 25).

    Parameters
    ----------
    in_dim : int
        Size of the backbone's features.
    dim : int, optional (default=25)
        Size of the embeddings the head sees.
    hidden : int, optional (default=200)
        Width of the hidden layer.
    style : {"tanh", "relu"}, optional (default="tanh")
        ``"tanh"`` is the authors' code (repository aviadsusman/nona):
        BatchNorm -> Linear(in_dim, hidden) -> Tanh -> BatchNorm -> Linear(hidden, dim) -> Tanh,
        so every embedding coordinate lies in (-1, 1). ``"relu"`` is
        Linear -> ReLU -> Linear, with unbounded embeddings (an extension).
    """

    def __init__(self, in_dim: int, dim: int = 25, hidden: int = 200, style: str = "tanh") -> None:
        super().__init__()
        if min(in_dim, dim, hidden) < 1:
            raise ValueError(f"Projector sizes must be positive, got in_dim={in_dim}, dim={dim}, hidden={hidden}")
        if style not in PROJECTOR_STYLES:
            raise ValueError(f"unknown projector style {style!r}; valid values are: {', '.join(PROJECTOR_STYLES)}")
        self.in_dim = in_dim
        self.dim = dim
        self.style = style
        if style == "tanh":
            self.net = nn.Sequential(
                nn.BatchNorm1d(in_dim),
                nn.Linear(in_dim, hidden),
                nn.Tanh(),
                nn.BatchNorm1d(hidden),
                nn.Linear(hidden, dim),
                nn.Tanh(),
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings of shape ``(b, dim)``."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"Projector expects inputs of shape (b, {self.in_dim}), got {tuple(x.shape)}")
        return self.net(x)
