"""Degenerate inputs every neighbour head must survive with finite values and gradients."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def degenerate_cases(seed: int, dim: int) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """(name, points, exclude_self): flat rows, duplicates, a single neighbour, an identical batch, large magnitudes."""
    torch.manual_seed(seed)
    yield "flat rows", torch.ones(6, dim), False
    yield "duplicate points", torch.randn(3, dim).repeat(3, 1), True
    yield "single valid neighbour", torch.randn(2, dim), True
    yield "all identical batch", torch.zeros(4, dim), True
    yield "large magnitudes", 1e4 * torch.randn(8, dim), True
    yield "large magnitudes, inference", 1e4 * torch.randn(8, dim), False
