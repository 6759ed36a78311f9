"""Similarity measures between query embeddings and neighbour embeddings.

Every measure returns a ``(b, N)`` matrix computed with matrix products (or
``torch.cdist`` for ``l1``); no ``(b, N, d)`` tensor is ever built. The
Euclidean distances (``l2`` and ``rbf``) have a hand-written backward pass:
autograd through the matmul expansion, the clamps and the square root keeps
five ``(b, N)`` temporaries alive and runs a dozen elementwise kernels, where
the analytic gradient needs one division and two matrix products.
"""

from __future__ import annotations

import torch
from torch import Tensor

SIMILARITIES = ("l2", "l1", "dot", "cos", "rbf")


def check_similarity_kind(kind: str) -> str:
    """Return ``kind`` if it names a known similarity, else raise ValueError."""
    if kind not in SIMILARITIES:
        raise ValueError(f"unknown similarity {kind!r}; expected one of {', '.join(SIMILARITIES)}")
    return kind


def _squared_floor(dtype: torch.dtype) -> float:
    # sqrt has an infinite derivative at 0 (duplicate points, the masked
    # diagonal): squared distances are floored at sqrt(tiny) before the root,
    # and entries at the floor get no gradient, as the derivative of a clamp.
    return torch.finfo(dtype).tiny ** 0.5


# Row i's own column: a tensor of columns, or an int offset o for column i + o (a diagonal).
OwnColumns = Tensor | int


def put_own(matrix: Tensor, own: OwnColumns, values: Tensor | float) -> Tensor:
    """In place: write ``values`` (a scalar or one per row) at each row's own column; returns ``matrix``."""
    if isinstance(own, int):
        # A diagonal view: one kernel and no index tensors.
        diagonal = matrix.diagonal(offset=own)
        diagonal.fill_(values) if isinstance(values, float) else diagonal.copy_(values)
        return matrix
    rows = torch.arange(matrix.shape[0], device=matrix.device)
    return matrix.index_put_((rows, own), torch.as_tensor(values, dtype=matrix.dtype, device=matrix.device))


def own_values(matrix: Tensor, own: OwnColumns) -> Tensor:
    """A copy of each row's entry at its own column, shape ``(rows,)``."""
    if isinstance(own, int):
        return matrix.diagonal(offset=own).clone()
    return matrix[torch.arange(matrix.shape[0], device=matrix.device), own]


def _rows_times_matrix(weights: Tensor, points: Tensor, transpose: bool) -> Tensor:
    # weights @ points (or weights.T @ points) as (points.T @ weights.T).T: with the
    # (rows x N) factor second, MKL's gemm runs these shapes 1.5-2x faster.
    return (points.T @ (weights if transpose else weights.T)).T


def _both_roles(weights: Tensor, zc: Tensor) -> Tensor:
    # sum_j W_ij (z_i - z_j) + sum_j W_ji (z_i - z_j), for z_n = z: with S = W + W^T,
    # S 1 * z - S z, one product. Below 512 rows the strided transpose is added directly
    # (one kernel; 32 rows: 6.4 against 10.9 µs, 256: 39 against 100). From 512 rows it is
    # copied contiguous first: at 512 and 1024 rows the strided read runs 1.2-2.5x slower
    # than copy + add (cache conflicts of power-of-two strides). The same sums either way.
    if weights.shape[0] < 512:
        both = torch.add(weights, weights.T)
    else:
        both = weights.T.contiguous().add_(weights)
    return both.sum(dim=1, keepdim=True).mul(zc).sub_(both @ zc)


def distances_forward(
    z: Tensor, z_n: Tensor, own: OwnColumns | None, root: bool, own_value: float = 0.0
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None]]:
    """The forward pass of :class:`_Distances`: the ``(b, N)`` matrix and the tensors its backward pass needs.

    ``own_value`` is written at the own entries (0, the exact self-distance; a
    caller that owns the result may ask for ``-inf`` directly).
    """
    # Centring on the neighbours' mean is exact (distances are translation
    # invariant) and shrinks the cancellation error of the matmul expansion.
    centre = z_n.mean(dim=0, keepdim=True)
    zc = z - centre
    same = z_n is z
    znc = zc if same else z_n - centre
    sq = torch.linalg.vecdot(zc, zc)
    sq_n = sq if same else torch.linalg.vecdot(znc, znc)
    # |z - z_n|^2 = |z_n|^2 - 2 z z_n^T + |z|^2: one product that starts from |z_n|^2, one sum.
    out = torch.addmm(sq_n.unsqueeze(0), zc, znc.T, alpha=-2.0).add_(sq.unsqueeze(1))
    floor = _squared_floor(out.dtype) if root else 0.0
    out.clamp_min_(floor)
    slope = None
    if root:
        if own is not None:
            # A placeholder: the own entries are not floored distances, and rsqrt(inf)
            # gives them a zero slope (no gradient) without a second write.
            put_own(out, own, float("inf"))
        floored = out <= floor if out.amin().item() <= floor else None
        # dsim/dD = -1/(2 sqrt(D)): kept for the backward pass, and sim = D * slope
        # is one multiplication where sqrt then neg would be a slower root and a pass.
        slope = out.rsqrt().neg_()
        out.mul_(slope)
        if floored is not None:
            slope.masked_fill_(floored, 0.0)
    if own is not None:
        put_own(out, own, own_value)
    return out, (zc, znc, slope)


def distances_backward(
    grad: Tensor, saved: tuple[Tensor, Tensor, Tensor | None], own: OwnColumns | None, both: bool, needs: tuple
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients ``(to z, to z_n)`` of :func:`distances_forward` from the gradient to its output.

    ``both``: z is z_n and both need a gradient, returned summed as the first
    (the second is then None); ``needs``: which of the two need one.
    """
    zc, znc, slope = saved
    # weights = 2 dL/dD: the factor 2 of dD/dz = 2 (z_i - z_n_j) is folded in.
    if slope is not None:
        weights = grad * slope
    else:
        weights = grad * 2.0
        if own is not None:
            put_own(weights, own, 0.0)
    if both:
        # z is z_n: one gradient with both roles summed, none for the second argument.
        return _both_roles(weights, zc), None
    grad_z = grad_zn = None
    if needs[0]:
        grad_z = weights.sum(dim=1, keepdim=True) * zc - _rows_times_matrix(weights, znc, transpose=False)
    if needs[1]:
        grad_zn = weights.sum(dim=0).unsqueeze(1) * znc - _rows_times_matrix(weights, zc, transpose=True)
    return grad_z, grad_zn


class _Distances(torch.autograd.Function):
    """Euclidean distances ``-||z_i - z_n_j||`` (``root``) or squared ``||z_i - z_n_j||^2``, with analytic backward.

    ``own`` (see :func:`put_own`), if given, marks each row's own column, whose
    value is set to an exact 0 and gets no gradient.
    """

    @staticmethod
    def forward(ctx, z: Tensor, z_n: Tensor, own: OwnColumns | None, root: bool) -> Tensor:
        out, saved = distances_forward(z, z_n, own, root)
        ctx.own = own
        ctx.same = z_n is z
        ctx.save_for_backward(*saved)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        saved = ctx.saved_tensors
        both = ctx.same and all(ctx.needs_input_grad[:2])
        grad_z, grad_zn = distances_backward(grad, saved, ctx.own, both, ctx.needs_input_grad)
        return grad_z, grad_zn, None, None


def squared_distances(z: Tensor, z_n: Tensor, self_index: OwnColumns | None = None) -> Tensor:
    """Squared Euclidean distances ``||z_i - z_n_j||^2`` as a ``(b, N)`` matrix, clamped at 0.

    ``self_index``, if given, marks each row's own column (see :func:`similarity`), set to an exact 0.
    """
    return _Distances.apply(z, z_n, self_index, False)


def similarity(
    z: Tensor, z_n: Tensor, kind: str, gamma: Tensor | float = 1.0, self_index: OwnColumns | None = None
) -> Tensor:
    """Similarity matrix ``sim(z_i, z_n_j)`` of shape ``(b, N)`` for the named measure.

    ``l2`` = -||z - z'||_2, ``l1`` = -||z - z'||_1, ``dot`` = z.z'/d,
    ``cos`` = cosine similarity, ``rbf`` = -gamma ||z - z'||^2.
    ``self_index``, if given, marks each row's own column, which gets the
    exact self-similarity (the matmul expansion leaves rounding noise there):
    a tensor whose entry i is row i's column, or an int ``o`` for column ``i + o``.
    """
    check_similarity_kind(kind)
    if z.dim() != 2 or z_n.dim() != 2:
        raise ValueError(f"z and z_n must be 2-D (rows are points); got shapes {tuple(z.shape)} and {tuple(z_n.shape)}")
    if z.shape[1] != z_n.shape[1]:
        raise ValueError(f"z has dimension {z.shape[1]} but z_n has dimension {z_n.shape[1]}; they must match")
    if kind == "l2":
        return _Distances.apply(z, z_n, self_index, True)
    if kind == "rbf":
        return -gamma * _Distances.apply(z, z_n, self_index, False)
    if kind == "l1":
        sim = -torch.cdist(z, z_n, p=1.0)
    elif kind == "dot":
        sim = (z @ z_n.T) / z.shape[1]
    else:
        sim = torch.nn.functional.normalize(z, dim=1) @ torch.nn.functional.normalize(z_n, dim=1).T
    if self_index is not None:
        # In place: none of the ops above keeps its output for the backward pass.
        sim = put_own(sim, self_index, self_similarity(z, kind))
    return sim


def self_similarity(z: Tensor, kind: str) -> Tensor:
    """Exact ``sim(z_i, z_i)`` for each row: 0 for the distances, 1 for cos, ``|z|^2/d`` for dot."""
    check_similarity_kind(kind)
    if kind == "dot":
        return (z * z).sum(dim=1) / z.shape[1]
    if kind == "cos":
        return (z.norm(dim=1) > 0).to(z.dtype)
    return torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
