"""Gradient-free NONA prediction against a large neighbour set, in bounded memory.

Hand-written instead of reusing the autograd path because at N = 1e5..1e6
neighbours the cost is memory traffic over (rows x N) matrices: this path
prepares the neighbour side once, reuses one preallocated chunk buffer (fresh
large allocations are page-faulted in on every chunk), works in place, and
gets the softmax numerator and denominator from one matrix-vector product
and one row sum (a product with the two columns [y, 1] is a two-column gemm,
several times slower on CPU).
``tests/test_nona_core.py`` checks it against the float64 reference and the
autograd path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nona.softstep import T_MARGIN

# Chunk rows are sized so one chunk buffer stays cache-friendly (bytes).
CACHE_FRIENDLY_CHUNK = 64 * 2**20


class PreparedNeighbours:
    """Neighbour-side quantities computed once per prediction call."""

    def __init__(self, z_n: Tensor, y_n: Tensor, kind: str) -> None:
        self.kind = kind
        self.centre = z_n.mean(dim=0, keepdim=True)
        if kind in ("l2", "rbf"):
            self.points = z_n - self.centre
            self.sq = (self.points * self.points).sum(dim=1)
        elif kind == "cos":
            self.points = torch.nn.functional.normalize(z_n, dim=1)
        else:
            self.points = z_n
        self.labels = y_n


def similarity_into(out: Tensor, z: Tensor, prepared: PreparedNeighbours, gamma: float) -> Tensor:
    """Write ``sim(z, z_n)`` into the buffer ``out`` of shape ``(rows, N)`` in place."""
    kind = prepared.kind
    if kind in ("l2", "rbf"):
        zc = z - prepared.centre
        torch.addmm(prepared.sq.unsqueeze(0), zc, prepared.points.T, alpha=-2.0, out=out)
        out.add_((zc * zc).sum(dim=1, keepdim=True))
        if kind == "l2":
            return out.clamp_(min=torch.finfo(out.dtype).tiny ** 0.5).sqrt_().neg_()
        return out.clamp_(min=0.0).mul_(-gamma)
    if kind == "l1":
        return out.copy_(torch.cdist(z, prepared.points, p=1.0)).neg_()
    if kind == "cos":
        return torch.mm(torch.nn.functional.normalize(z, dim=1), prepared.points.T, out=out)
    return torch.mm(z, prepared.points.T, out=out).div_(z.shape[1])


def add_log_s2_(sim: Tensor, b: Tensor, t: Tensor, scratch: Tensor) -> Tensor:
    """In place: ``sim += log S2(minmax(sim); b, t)`` using ``scratch`` as working memory."""
    low = sim.amin(dim=1, keepdim=True)
    span = sim.amax(dim=1, keepdim=True) - low
    flat = span <= 0
    x = torch.sub(sim, low, out=scratch).div_(torch.where(flat, torch.ones_like(span), span))
    if bool(flat.any()):
        x.masked_fill_(flat.expand_as(x), 1.0)
    k = t / (1.0 - t)
    # scratch now holds x; turn it into (b - x) * k * log(max(x, floor) / b) where x < b, else 0.
    floor = torch.finfo(sim.dtype).tiny ** 0.5
    # b is floored like x, as in the training path (nona.softstep.log_s2).
    b = b.clamp_min(floor)
    logs = x.clamp(min=floor).div_(b).log_()
    x.neg_().add_(b)
    keep = x <= 0
    logs.mul_(x).mul_(k).masked_fill_(keep, 0.0)
    return sim.add_(logs)


def predict_no_grad(head, z: Tensor, z_n: Tensor, y_n: Tensor) -> Tensor:
    """NONA predictions for ``z`` against ``(z_n, y_n)`` without autograd, chunked under the head's budget."""
    prepared = PreparedNeighbours(z_n, y_n, head.similarity)
    n = z_n.shape[0]
    itemsize = z.element_size()
    budget_rows = head.rows_per_chunk(n, itemsize)
    cache_rows = max(1, CACHE_FRIENDLY_CHUNK // (n * itemsize))
    step = min(budget_rows, cache_rows, z.shape[0])
    buffer = torch.empty(step, n, dtype=z.dtype, device=z.device)
    gamma = float(head.gamma) if head.similarity == "rbf" else 1.0
    softstep = head.softstep
    s2_fast = softstep is not None and softstep.fn == "s2"
    scratch = torch.empty_like(buffer) if s2_fast else None
    out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
    for start in range(0, z.shape[0], step):
        chunk = z[start : start + step]
        rows = chunk.shape[0]
        sim = similarity_into(buffer[:rows], chunk, prepared, gamma)
        if s2_fast:
            p = softstep.parameters_for(chunk)
            t = p[:, -1:].clamp(T_MARGIN, 1.0 - T_MARGIN)
            add_log_s2_(sim, p[:, 0:1], t, scratch[:rows])
        elif softstep is not None:
            sim.add_(softstep.log_mask(sim, chunk))
        sim.sub_(sim.amax(dim=1, keepdim=True)).exp_()
        torch.div(sim @ prepared.labels, sim.sum(dim=1), out=out[start : start + rows])
    return out
