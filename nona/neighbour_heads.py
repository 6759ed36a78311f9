"""The SoftStep paper's other neighbour-based heads: NCA and a differentiable k-NN, both with SoftStep.

Both are :class:`~nona.heads.NONA` variants and follow its calling convention,
``head(z, z_n, y_n, exclude_self=False) -> (b,)``, its input validation and its
query chunking; each prediction is a convex combination of neighbour labels.

* :class:`NCA`: ``softmax(-gamma ||z - z'||^2 + log SoftStep(x)) @ y_N`` with
  ``x`` the row-wise min-max normalised similarity ("~" in Figure 1 of the
  SoftStep paper); the ``(l, u)`` SoftStep by default.
* :class:`DifferentiableKNN`: the weights are the SoftStep mask of normalised
  *soft ranks* ("~" = soft ranking in Figure 1), so SoftStep learns a soft k.

The SoftStep paper names these heads but its soft ranking is not public in a
form we could check, so the soft rank here is defined in :func:`~nona.neighbour_heads.soft_rank`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nona.heads import DEFAULT_MEMORY_BUDGET, NONA
from nona.similarity import similarity
from nona.softstep import SoftStep, minmax_normalise, softstep_from_spec

# Working memory of the soft-rank path per (query, neighbour) entry, in bytes: some
# fifteen float64/int64 temporaries (sort, prefix sums, searchsorted indices) plus the
# similarity and mask ones. Measured peaks (5000 neighbours, no grad): about 190 bytes
# per entry in large chunks, more in small ones; 384 keeps them below the budget.
_RANK_BYTES_PER_ENTRY = 384
# Below this the soft rank's window is narrower than float64 can resolve next to 1.
MIN_TEMPERATURE = 1e-6


def _build_softstep(softstep: SoftStep | str | None, dim: int | None) -> SoftStep | None:
    return softstep_from_spec(softstep, dim) if isinstance(softstep, str) else softstep


class NCA(NONA):
    """NCA regression head (the SoftStep paper): ``softmax(-gamma ||z - z'||^2 + log SoftStep) @ y_N``.

    Neighbourhood Components Analysis weights (Gaussian-kernel regression) with
    a learned bandwidth ``gamma`` and a SoftStep mask of the row-wise min-max
    normalised similarities. Called like :class:`~nona.heads.NONA`:
    ``head(z, z_n, y_n, exclude_self=False)`` returns predictions of shape ``(b,)``.

    Parameters
    ----------
    softstep : SoftStep, str or None
        A SoftStep module, a spec such as ``"lu-global"`` (the default) or
        ``"lu-pointwise"`` (which needs ``dim``), or None for plain NCA.
    dim : int or None
        The embedding dimension, for a pointwise SoftStep spec.
    gamma : float
        Initial bandwidth (learned, kept positive).
    memory_budget : int
        Cap, in bytes, on the working memory of one chunk of queries.
    """

    def __init__(
        self,
        softstep: SoftStep | str | None = "lu-global",
        dim: int | None = None,
        gamma: float = 1.0,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        super().__init__(
            similarity="rbf", softstep=_build_softstep(softstep, dim), gamma=gamma, memory_budget=memory_budget
        )


def soft_rank(sim: Tensor, temperature: float = 1.0, self_index: Tensor | None = None) -> Tensor:
    """Soft rank of each neighbour in its row, 1 = most similar; ``self_index[i]`` (row i's own column) is left out.

    With ``s`` the row's similarities min-max normalised over its ``n`` valid
    entries and the window ``w = temperature / (n - 1)`` (``temperature``
    average gaps between consecutive normalised similarities),
    ``r_j = 1 + sum_{k != j valid} h((s_k - s_j) / w)``,
    ``h(d) = clamp((1 + d) / 2, 0, 1)``. ``temperature -> 0`` gives the exact
    ranks (ties share the mean rank). The own entry gets rank ``n + 1``.
    """
    # The clipped-linear h (not the logistic sigmoid) makes the sum exact in
    # O(N log N) per row through a sort and prefix sums: the logistic pairwise
    # soft rank needs all N^2 pairs, 45 s for 300 queries x 5000 neighbours on
    # 2 CPU cores. (torchsort, the maintained soft-rank library, ships only a
    # source distribution that compiles a C++/CUDA extension against torch.)
    rows, n_cols = sim.shape
    n_valid = n_cols - (self_index is not None)
    width = temperature / max(n_valid - 1, 1)
    # float64: prefix sums of up to N values must resolve differences of size width.
    s = minmax_normalise(sim, self_index).to(torch.float64)
    if self_index is not None:
        # Far enough below every valid entry (all in [0, 1]) to add 0 to their ranks.
        sentinel = torch.tensor(-1.0 - 2.0 * width, dtype=s.dtype, device=s.device)
        s = s.index_put((torch.arange(rows, device=s.device), self_index), sentinel)
    ordered, order = torch.sort(s, dim=1)
    prefix = torch.nn.functional.pad(ordered.cumsum(dim=1), (1, 0))
    # Ranks are computed in sorted order (sorted queries make searchsorted twice as
    # fast), then put back. Entries at least `width` above s_j add 1, those at least
    # `width` below add 0, those in between 1/2 + (s_k - s_j) / (2 width); s_j adds 1/2.
    above = torch.searchsorted(ordered, ordered + width)
    below = torch.searchsorted(ordered, ordered - width, right=True)
    count = (above - below).to(s.dtype)
    window = prefix.gather(1, above) - prefix.gather(1, below)
    rank = 1.0 + (n_cols - above) + 0.5 * (count - 1.0) + (window - count * ordered) / (2.0 * width)
    return torch.zeros_like(rank).scatter(1, order, rank).to(sim.dtype)


class DifferentiableKNN(NONA):
    """Differentiable k-NN regression head: ``y_hat_i = sum_j S(x_ij) y_j / sum_j S(x_ij)``.

    Called like :class:`~nona.heads.NONA` (see :meth:`forward`).

    ``x_ij = clamp(1 - (r_ij - min_k r_ik) / K, 0, 1)`` rescales the
    :func:`~nona.neighbour_heads.soft_rank` ``r_ij`` of neighbour j for query i (similarity
    ``similarity``) so that the nearest valid neighbour is at 1, where every
    SoftStep keeps full weight; ``S`` is the SoftStep mask, so SoftStep's
    bounds learn a soft k: with the ``(l, u)`` SoftStep, ranks up to
    ``1 + (1 - u) K`` get full weight and ranks from ``1 + (1 - l) K`` on get none.
    ``K = max_rank``, or ``n - 1`` for ``n`` valid neighbours when ``max_rank``
    is None (then k is a fraction of the neighbour set and changes with its
    size; set ``max_rank`` when training batches and the inference neighbour
    set differ in size). ``temperature`` is the soft rank's, in average gaps
    between neighbours. ``gamma`` is unused by the weights for ``rbf``: the
    normalisation removes it.

    Parameters
    ----------
    similarity : str
        ``"l2"``, ``"l1"``, ``"dot"``, ``"cos"`` or ``"rbf"``: what the soft ranks rank by.
    softstep : SoftStep or str
        A SoftStep module or a spec such as ``"lu-global"`` (the default); required.
    dim : int or None
        The embedding dimension, for a pointwise SoftStep spec.
    temperature : float
        The soft rank's temperature, in average gaps between neighbours (at least 1e-6).
    max_rank : int or None
        The rank scale ``K``, or None for the number of valid neighbours minus one.
    gamma : float
        Initial bandwidth of ``rbf``; does not change the weights.
    memory_budget : int
        Cap, in bytes, on the working memory of one chunk of queries.

    Raises
    ------
    ValueError
        Without a SoftStep, with a temperature below 1e-6 or a non-positive ``max_rank``.
    """

    def __init__(
        self,
        similarity: str = "l2",
        softstep: SoftStep | str = "lu-global",
        dim: int | None = None,
        temperature: float = 1.0,
        max_rank: int | None = None,
        gamma: float = 1.0,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        module = _build_softstep(softstep, dim)
        if module is None:
            raise ValueError(
                "DifferentiableKNN learns its k through SoftStep and needs one: pass softstep='lu-global' "
                "(or another SoftStep spec or module)"
            )
        super().__init__(similarity=similarity, softstep=module, gamma=gamma, memory_budget=memory_budget)
        if not temperature >= MIN_TEMPERATURE:
            raise ValueError(f"temperature must be at least {MIN_TEMPERATURE:g}, got {temperature}")
        if max_rank is not None and max_rank < 1:
            raise ValueError(f"max_rank must be a positive number of ranks or None, got {max_rank}")
        self.temperature = float(temperature)
        self.max_rank = max_rank

    def extra_repr(self) -> str:
        return f"similarity={self.similarity!r}, temperature={self.temperature}, max_rank={self.max_rank}"

    def rank_scores(self, sim: Tensor, self_index: Tensor | None = None) -> Tensor:
        """The rescaled soft ranks ``x_ij`` in [0, 1] (1 = nearest valid neighbour) that SoftStep masks."""
        rank = soft_rank(sim, self.temperature, self_index)
        n_valid = sim.shape[1] - (self_index is not None)
        scale = self.max_rank if self.max_rank is not None else max(n_valid - 1, 1)
        # The own entry's rank n + 1 exceeds every valid rank, so the row minimum is a valid one.
        best = rank.amin(dim=1, keepdim=True)
        return (1.0 - (rank - best) / scale).clamp(0.0, 1.0)

    def logits(self, z: Tensor, z_n: Tensor, self_index: Tensor | None = None) -> Tensor:
        """Attention logits ``log S(x_ij)`` of shape ``(b, N)``, ``-inf`` at each row's own column."""
        sim = similarity(z, z_n, self.similarity, gamma=self.gamma)
        logits = self.softstep.log_step(self.rank_scores(sim, self_index), z, self_index)
        if self_index is not None:
            rows = torch.arange(z.shape[0], device=z.device)
            logits = logits.index_put(
                (rows, self_index), torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
            )
        return logits

    def rows_per_chunk(self, n_neighbours: int, element_size: int) -> int:
        """How many query rows fit in ``memory_budget`` against ``n_neighbours`` neighbours."""
        return max(1, self.memory_budget // (n_neighbours * _RANK_BYTES_PER_ENTRY))

    def forward(self, z: Tensor, z_n: Tensor, y_n: Tensor, exclude_self: bool = False) -> Tensor:
        """Predict each query's label from its neighbours, chunked over queries.

        Parameters
        ----------
        z : torch.Tensor
            Query embeddings, shape ``(b, d)``.
        z_n : torch.Tensor
            Neighbour embeddings, shape ``(N, d)``.
        y_n : torch.Tensor
            Neighbour labels, shape ``(N,)``.
        exclude_self : bool
            True in training, when the batch is its own neighbour set: each
            point's own entry is left out of the ranks and the weights.

        Returns
        -------
        torch.Tensor
            Predictions, shape ``(b,)``.
        """
        self._validate(z, z_n, y_n, exclude_self)
        y_n = y_n.to(z.dtype)
        step = self.rows_per_chunk(z_n.shape[0], z.element_size())
        outputs = []
        for start in range(0, z.shape[0], step):
            chunk = z[start : start + step]
            self_index = torch.arange(start, start + chunk.shape[0], device=z.device) if exclude_self else None
            outputs.append(torch.softmax(self.logits(chunk, z_n, self_index), dim=1) @ y_n)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
