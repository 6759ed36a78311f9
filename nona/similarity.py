"""Similarity measures between query embeddings and neighbour embeddings.

Every measure returns a ``(b, N)`` matrix computed with matrix products (or
``torch.cdist`` for ``l1``); no ``(b, N, d)`` tensor is ever built.
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


def squared_distances(z: Tensor, z_n: Tensor) -> Tensor:
    """Squared Euclidean distances ``||z_i - z_n_j||^2`` as a ``(b, N)`` matrix, clamped at 0."""
    # Centring on the neighbours' mean is exact (distances are translation
    # invariant) and shrinks the cancellation error of the matmul expansion.
    centre = z_n.mean(dim=0, keepdim=True)
    z = z - centre
    z_n = z_n - centre
    sq = (z * z).sum(dim=1, keepdim=True)
    sq_n = (z_n * z_n).sum(dim=1)
    return torch.addmm(sq + sq_n, z, z_n.T, alpha=-2.0).clamp_min(0.0)


def _safe_sqrt(x: Tensor) -> Tensor:
    # sqrt has an infinite derivative at 0 (duplicate points, the masked
    # diagonal); flooring at a tiny value keeps values and gradients finite.
    return x.clamp_min(torch.finfo(x.dtype).tiny ** 0.5).sqrt()


def similarity(z: Tensor, z_n: Tensor, kind: str, gamma: Tensor | float = 1.0) -> Tensor:
    """Similarity matrix ``sim(z_i, z_n_j)`` of shape ``(b, N)`` for the named measure.

    ``l2`` = -||z - z'||_2, ``l1`` = -||z - z'||_1, ``dot`` = z.z'/d,
    ``cos`` = cosine similarity, ``rbf`` = -gamma ||z - z'||^2.
    """
    check_similarity_kind(kind)
    if z.dim() != 2 or z_n.dim() != 2:
        raise ValueError(f"z and z_n must be 2-D (rows are points); got shapes {tuple(z.shape)} and {tuple(z_n.shape)}")
    if z.shape[1] != z_n.shape[1]:
        raise ValueError(f"z has dimension {z.shape[1]} but z_n has dimension {z_n.shape[1]}; they must match")
    if kind == "l2":
        return -_safe_sqrt(squared_distances(z, z_n))
    if kind == "rbf":
        return -gamma * squared_distances(z, z_n)
    if kind == "l1":
        return -torch.cdist(z, z_n, p=1.0)
    if kind == "dot":
        return (z @ z_n.T) / z.shape[1]
    z_unit = torch.nn.functional.normalize(z, dim=1)
    z_n_unit = torch.nn.functional.normalize(z_n, dim=1)
    return z_unit @ z_n_unit.T


def self_similarity(z: Tensor, kind: str) -> Tensor:
    """Exact ``sim(z_i, z_i)`` for each row: 0 for the distances, 1 for cos, ``|z|^2/d`` for dot."""
    check_similarity_kind(kind)
    if kind == "dot":
        return (z * z).sum(dim=1) / z.shape[1]
    if kind == "cos":
        return (z.norm(dim=1) > 0).to(z.dtype)
    return torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
