"""Gradient-free NONA prediction against a large neighbour set, in bounded memory.

Hand-written instead of reusing the autograd path because at N = 1e5..1e6
neighbours the cost is memory traffic over (rows x N) matrices. On a CPU the
similarities are computed in tiles of TILE_ROWS x TILE_COLUMNS that stay in
cache (4 MB in float32), and the softmax is accumulated across tiles online:
each tile's row maximum rescales the running numerator and denominator, so
no (rows x N) matrix is ever written to memory. Measured on a 2-core AVX2
machine, b = 1024, N = 1e5 (benchmarks/head.py), against the floor
``exp(z @ z_n.T)``: l2 1.21x with whole rows in 64 MB chunks, 0.92x with
tiles; rbf 1.17x -> 0.81x; l2 + S2 3.47x -> 2.0x.
The neighbour side is prepared once, one tile buffer is reused (fresh large
allocations are page-faulted in every time), and the softmax numerator and
denominator are one matrix-vector product and one row sum (a product with
the two columns [y, 1] is a two-column gemm, several times slower on CPU).
A GPU, and SoftSteps other than S2 (whose masks need whole rows), take whole
rows of neighbours per chunk instead: one tile per chunk.
``tests/test_nona_core.py`` checks it against the float64 reference and the
autograd path.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from nona.softstep import T_MARGIN

# Whole-row chunks (a GPU, SoftSteps other than S2) are sized so one chunk buffer stays
# cache-friendly (bytes); a CPU's tiles are TILE_ROWS x TILE_COLUMNS (measured best of
# 128-1024 rows x 512-2048 columns at N = 1e5).
CACHE_FRIENDLY_CHUNK = 64 * 2**20
TILE_ROWS = 1024
TILE_COLUMNS = 1024


class PreparedNeighbours:
    """Neighbour-side quantities computed once per prediction call.

    For ``l2`` and ``rbf`` the points are the rows ``[z_n - c, 1, |z_n - c|^2]``
    (``c`` their mean: distances are translation invariant and centring shrinks
    the cancellation error); with the query rows ``[-2 (z - c), |z - c|^2, 1]``
    one product then writes the squared distances in a single pass.
    """

    def __init__(self, z_n: Tensor, y_n: Tensor, kind: str) -> None:
        self.kind = kind
        self.centre = z_n.mean(dim=0, keepdim=True)
        if kind in ("l2", "rbf"):
            centred = z_n - self.centre
            ones = torch.ones(len(z_n), 1, dtype=z_n.dtype, device=z_n.device)
            self.points = torch.cat([centred, ones, (centred * centred).sum(dim=1, keepdim=True)], dim=1)
        elif kind == "cos":
            self.points = torch.nn.functional.normalize(z_n, dim=1)
        else:
            self.points = z_n
        self.labels = y_n

    def __len__(self) -> int:
        return self.points.shape[0]

    def queries(self, z: Tensor) -> Tensor:
        """The query side of the scores' product (see the class docstring)."""
        if self.kind in ("l2", "rbf"):
            zc = z - self.centre
            ones = torch.ones(len(z), 1, dtype=z.dtype, device=z.device)
            return torch.cat([zc * -2.0, (zc * zc).sum(dim=1, keepdim=True), ones], dim=1)
        if self.kind == "cos":
            return torch.nn.functional.normalize(z, dim=1)
        return z / z.shape[1] if self.kind == "dot" else z

    def columns(self, start: int, stop: int) -> PreparedNeighbours:
        """The neighbours ``start:stop`` (views, no copy)."""
        if start == 0 and stop == len(self):
            return self
        part = copy.copy(self)
        part.points, part.labels = self.points[start:stop], self.labels[start:stop]
        return part


def distances_into(out: Tensor, queries: Tensor, prepared: PreparedNeighbours) -> Tensor:
    """``l2``/``rbf``: write the squared distances into ``out`` (rows x N), unclamped; else the similarity."""
    if prepared.kind == "l1":
        return out.copy_(torch.cdist(queries, prepared.points, p=1.0)).neg_()
    return torch.mm(queries, prepared.points.T, out=out)


def similarity_from_distances_(out: Tensor, kind: str, gamma: float) -> Tensor:
    """In place: squared distances to ``l2`` or ``rbf`` similarities (other kinds are returned as they are)."""
    if kind == "l2":
        return out.clamp_(min=torch.finfo(out.dtype).tiny ** 0.5).sqrt_().neg_()
    if kind == "rbf":
        return out.clamp_(min=0.0).mul_(-gamma)
    return out


def similarity_into(out: Tensor, queries: Tensor, prepared: PreparedNeighbours, gamma: float) -> Tensor:
    """Write ``sim(z, z_n)`` into ``out`` (rows x N); ``queries`` is ``prepared.queries(z)``."""
    return similarity_from_distances_(distances_into(out, queries, prepared), prepared.kind, gamma)


def add_log_s2_(sim: Tensor, b: Tensor, t: Tensor, scratch: Tensor, low: Tensor, span: Tensor) -> Tensor:
    """In place: ``sim += log S2((sim - low) / span; b, t)``; ``scratch``: two buffers shaped like ``sim``.

    ``low`` and ``span`` are each row's minimum and range over all its neighbours
    (see :func:`row_range`); a flat row (span 0) has every neighbour at x = 1.
    As in the training path (``nona.softstep``), x and b are floored at
    sqrt(float tiny) and x is clamped to b, so that ``k (b - x) log(x / b)`` is
    exactly 0 from b on without a mask.
    """
    flat = span <= 0
    x = torch.sub(sim, low, out=scratch[0]).div_(torch.where(flat, torch.ones_like(span), span))
    if bool(flat.any()):
        x.masked_fill_(flat.expand_as(x), 1.0)
    floor = torch.finfo(sim.dtype).tiny ** 0.5
    b = b.clamp_min(floor)
    x = torch.minimum(x.clamp_(min=floor), b, out=x)
    log_ratio = torch.div(x, b, out=scratch[1]).log_()
    # k (b - x), k = t / (1 - t), then sim + k (b - x) log(x / b) in one fused pass.
    return sim.addcmul_(torch.sub(b, x, out=x).mul_(t / (1.0 - t)), log_ratio)


def row_range(queries: Tensor, prepared: PreparedNeighbours, buffer: Tensor, gamma: float) -> tuple[Tensor, Tensor]:
    """Each row's minimum similarity and range over all neighbours, a tile of ``buffer``'s width at a time.

    For ``l2`` and ``rbf`` the extremes are taken on the squared distances and
    converted once: the conversion is monotone, also in floating point, so the
    result equals the extremes of the similarities themselves.
    """
    low = high = None
    width = buffer.shape[1]
    for start in range(0, len(prepared), width):
        part = prepared.columns(start, min(start + width, len(prepared)))
        tile = distances_into(buffer[:, : len(part)], queries, part)
        tile_low, tile_high = tile.amin(dim=1, keepdim=True), tile.amax(dim=1, keepdim=True)
        low = tile_low if low is None else torch.minimum(low, tile_low)
        high = tile_high if high is None else torch.maximum(high, tile_high)
    if prepared.kind in ("l2", "rbf"):
        # A larger distance is a smaller similarity.
        low, high = (
            similarity_from_distances_(high, prepared.kind, gamma),
            similarity_from_distances_(low, prepared.kind, gamma),
        )
    return low, high - low


def _s2_shift(softstep, chunk: Tensor, scratch: Tensor, low_span: tuple[Tensor, Tensor] | None):
    """A function adding S2's log-mask in place to a tile of ``chunk``'s similarities.

    ``low_span``: each row's minimum and range over all neighbours, or None when
    each tile holds whole rows (they are then the tile's own).
    """
    p = softstep.parameters_for(chunk)
    b, t = p[:, 0:1], p[:, -1:].clamp(T_MARGIN, 1.0 - T_MARGIN)

    def shift(sim: Tensor) -> None:
        if low_span is None:
            low = sim.amin(dim=1, keepdim=True)
            span = sim.amax(dim=1, keepdim=True) - low
        else:
            low, span = low_span
        add_log_s2_(sim, b, t, scratch[:, :, : sim.shape[1]], low, span)

    return shift


def _log_mask_shift(softstep, chunk: Tensor):
    """A function adding the SoftStep's log-mask in place to whole rows of ``chunk``'s similarities."""

    def shift(sim: Tensor) -> None:
        sim.add_(softstep.log_mask(sim, chunk))

    return shift


def _attend(queries: Tensor, prepared: PreparedNeighbours, tile: Tensor, gamma: float, shift) -> Tensor:
    """``softmax(sim(z, z_n) [+ shift]) @ y_n`` for ``queries = prepared.queries(z)``, a tile of neighbours at a time.

    The softmax is accumulated online: ``top`` is each row's largest score so
    far, ``numerator`` and ``denominator`` the sums of ``exp(score - top)``
    (times the labels), rescaled when a later tile raises ``top``.
    """
    top = numerator = denominator = None
    width = tile.shape[1]
    for column in range(0, len(prepared), width):
        part = prepared.columns(column, min(column + width, len(prepared)))
        scores = similarity_into(tile[:, : len(part)], queries, part, gamma)
        if shift is not None:
            shift(scores)
        tile_top = scores.amax(dim=1, keepdim=True)
        new_top = tile_top if top is None else torch.maximum(top, tile_top)
        weights = scores.sub_(new_top).exp_()
        if top is None:
            numerator, denominator = weights @ part.labels, weights.sum(dim=1)
        else:
            rescale = torch.sub(top, new_top).exp_().squeeze(1)
            numerator.mul_(rescale).addmv_(weights, part.labels)
            denominator.mul_(rescale).add_(weights.sum(dim=1))
        top = new_top
    return numerator.div_(denominator)


def predict_no_grad(head, z: Tensor, z_n: Tensor, y_n: Tensor) -> Tensor:
    """NONA predictions for ``z`` against ``(z_n, y_n)`` without autograd, under the head's memory budget."""
    prepared = PreparedNeighbours(z_n, y_n, head.similarity)
    n = z_n.shape[0]
    itemsize = z.element_size()
    softstep = head.softstep
    s2 = softstep is not None and softstep.fn == "s2"
    if z.device.type == "cpu" and (softstep is None or s2):
        width = min(n, TILE_COLUMNS)
        rows = max(1, min(TILE_ROWS, head.rows_per_chunk(width, itemsize), z.shape[0]))
    else:
        width = n
        rows = max(1, min(head.rows_per_chunk(n, itemsize), CACHE_FRIENDLY_CHUNK // (n * itemsize), z.shape[0]))
    buffer = torch.empty(rows, width, dtype=z.dtype, device=z.device)
    scratch = torch.empty((2, *buffer.shape), dtype=z.dtype, device=z.device) if s2 else None
    gamma = float(head.gamma) if head.similarity == "rbf" else 1.0
    out = torch.empty(z.shape[0], dtype=z.dtype, device=z.device)
    for start in range(0, z.shape[0], rows):
        chunk = z[start : start + rows]
        tile = buffer[: chunk.shape[0]]
        queries = prepared.queries(chunk)
        shift = None
        if s2:
            low_span = row_range(queries, prepared, tile, gamma) if width < n else None
            shift = _s2_shift(softstep, chunk, scratch[:, : chunk.shape[0]], low_span)
        elif softstep is not None:
            shift = _log_mask_shift(softstep, chunk)
        out[start : start + chunk.shape[0]] = _attend(queries, prepared, tile, gamma, shift)
    return out
