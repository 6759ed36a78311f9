"""Similarity measures between query embeddings and neighbour embeddings.

Every measure returns a ``(b, N)`` matrix computed with matrix products (or
``torch.cdist`` for ``l1``); no ``(b, N, d)`` tensor is ever built. The
Euclidean distances (``l2`` and ``rbf``) have a hand-written backward pass:
autograd through the matmul expansion, the clamps and the square root keeps
five ``(b, N)`` temporaries alive and runs a dozen elementwise kernels, where
the analytic gradient needs one division and two matrix products.
"""

from __future__ import annotations

import functools

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


@functools.lru_cache(maxsize=None)
def _root_floor(dtype: torch.dtype) -> float:
    # The floored distance exactly as the forward pass computes it (sqrt in dtype).
    return torch.tensor(_squared_floor(dtype), dtype=dtype).sqrt().item()


def _self_entries(matrix: Tensor, self_index: Tensor) -> tuple[Tensor, Tensor]:
    return torch.arange(matrix.shape[0], device=matrix.device), self_index


class _Distances(torch.autograd.Function):
    """Euclidean distances ``-||z_i - z_n_j||`` (``root``) or squared ``||z_i - z_n_j||^2``, with analytic backward.

    ``self_index[i]``, if given, is row i's own column, whose value is set to an
    exact 0 and gets no gradient.
    """

    @staticmethod
    def forward(ctx, z: Tensor, z_n: Tensor, self_index: Tensor | None, root: bool) -> Tensor:
        # Centring on the neighbours' mean is exact (distances are translation
        # invariant) and shrinks the cancellation error of the matmul expansion.
        centre = z_n.mean(dim=0, keepdim=True)
        zc = z - centre
        znc = zc if z_n is z else z_n - centre
        ones = torch.ones(z.shape[0], 1, dtype=z.dtype, device=z.device)
        ones_n = ones if z_n is z else torch.ones(z_n.shape[0], 1, dtype=z.dtype, device=z.device)
        # One product [-2 z, |z|^2, 1] [z_n, 1, |z_n|^2]^T writes |z - z_n|^2 in a single pass.
        left = torch.cat([zc * -2.0, (zc * zc).sum(dim=1, keepdim=True), ones], dim=1)
        right = torch.cat([znc, ones_n, (znc * znc).sum(dim=1, keepdim=True)], dim=1)
        out = torch.mm(left, right.T).clamp_min_(0.0)
        if root:
            out.clamp_min_(_squared_floor(out.dtype)).sqrt_().neg_()
        if self_index is not None:
            out[_self_entries(out, self_index)] = 0.0
        ctx.root = root
        ctx.self_index = self_index
        ctx.save_for_backward(zc, znc, out if root else None)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        zc, znc, sim = ctx.saved_tensors
        if ctx.root:
            # d(-sqrt(D))/dD = 1/(2 sim); the 2 cancels the 2 of dD/dz below.
            weights = grad / sim
            weights.masked_fill_(sim >= -_root_floor(sim.dtype), 0.0)
        else:
            weights = grad * 2.0
        if ctx.self_index is not None:
            weights[_self_entries(weights, ctx.self_index)] = 0.0
        # dD_ij/dz_i = 2 (z_i - z_n_j) and dD_ij/dz_n_j = -2 (z_i - z_n_j).
        grad_z = grad_zn = None
        if ctx.needs_input_grad[0]:
            grad_z = weights.sum(dim=1, keepdim=True) * zc - weights @ znc
        if ctx.needs_input_grad[1]:
            grad_zn = weights.sum(dim=0).unsqueeze(1) * znc - weights.T @ zc
        return grad_z, grad_zn, None, None


def squared_distances(z: Tensor, z_n: Tensor, self_index: Tensor | None = None) -> Tensor:
    """Squared Euclidean distances ``||z_i - z_n_j||^2`` as a ``(b, N)`` matrix, clamped at 0.

    ``self_index[i]``, if given, is row i's own column, set to an exact 0.
    """
    return _Distances.apply(z, z_n, self_index, False)


def similarity(
    z: Tensor, z_n: Tensor, kind: str, gamma: Tensor | float = 1.0, self_index: Tensor | None = None
) -> Tensor:
    """Similarity matrix ``sim(z_i, z_n_j)`` of shape ``(b, N)`` for the named measure.

    ``l2`` = -||z - z'||_2, ``l1`` = -||z - z'||_1, ``dot`` = z.z'/d,
    ``cos`` = cosine similarity, ``rbf`` = -gamma ||z - z'||^2.
    ``self_index[i]``, if given, is row i's own column: it gets the exact
    self-similarity (the matmul expansion leaves rounding noise there).
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
        sim = sim.index_put_(_self_entries(sim, self_index), self_similarity(z, kind))
    return sim


def self_similarity(z: Tensor, kind: str) -> Tensor:
    """Exact ``sim(z_i, z_i)`` for each row: 0 for the distances, 1 for cos, ``|z|^2/d`` for dot."""
    check_similarity_kind(kind)
    if kind == "dot":
        return (z * z).sum(dim=1) / z.shape[1]
    if kind == "cos":
        return (z.norm(dim=1) > 0).to(z.dtype)
    return torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
