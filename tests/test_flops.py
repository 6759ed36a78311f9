"""FLOP counting and timing of one training step per head (nona.paper.flops, follow-up paper Figure 4)."""

from __future__ import annotations

import pytest
import torch

from nona.heads import NONA, DenseHead
from nona.paper.flops import (
    HEAD_VARIANTS,
    ProjectedHead,
    build_head,
    check_device,
    count_flops_by_operator,
    counted_operators,
    loglog_slope,
    measure_step,
    projection_flops,
)


def head_flops(name: str, n: int, dim: int) -> int:
    return measure_step(name, n, dim, timed=False).head_flops


@pytest.mark.parametrize("name", [h for h in HEAD_VARIANTS if h != "dense"])
def test_nona_head_flops_grow_quadratically_in_n_and_linearly_in_d(name):
    # Pointwise SoftStep adds an O(Nd) linear layer, so the N^2 term dominates only from N ~ 64 on.
    ns = [64, 128, 256, 512]
    ds = [8, 16, 32, 64]
    assert loglog_slope(ns, [head_flops(name, n, 25) for n in ns]) == pytest.approx(2.0, abs=0.05)
    assert loglog_slope(ds, [head_flops(name, 32, d) for d in ds]) == pytest.approx(1.0, abs=0.05)


def test_dense_head_flops_are_linear_in_n_and_d():
    ns, ds = [16, 32, 64, 128], [8, 16, 32, 64]
    assert loglog_slope(ns, [head_flops("dense", n, 25) for n in ns]) == pytest.approx(1.0, abs=1e-9)
    assert loglog_slope(ds, [head_flops("dense", 32, d) for d in ds]) == pytest.approx(1.0, abs=1e-9)


def test_counted_flops_match_the_matrix_products():
    n, d = 40, 12
    # The similarity is one product forward (addmm) and one backward: the batch is its own
    # neighbour set, so both operands' gradients come from one product (W + W^T) z: 2 x 2dN^2.
    assert head_flops("nona-l2", n, d) == 4 * d * n * n
    assert head_flops("nona-rbf", n, d) == 4 * d * n * n
    assert head_flops("nona-l2", n, 2 * d) - head_flops("nona-l2", n, d) == 4 * d * n * n
    # The dense head: forward, and gradients for its weight and its input: 3 x 2Nd.
    assert head_flops("dense", n, d) == 6 * n * d
    # The linear layer 4d -> d: forward and weight gradient only (its inputs need no gradient).
    assert projection_flops(n, d) == 2 * (2 * n * 4 * d * d)
    # Pointwise SoftStep adds its linear layer d -> 3 (S1) or d -> 2 (S2): forward, weight and input gradients.
    assert head_flops("nona-l2-s1-pointwise", n, d) - head_flops("nona-l2", n, d) == 3 * 2 * n * d * 3
    assert head_flops("nona-l2-s2-pointwise", n, d) - head_flops("nona-l2", n, d) == 3 * 2 * n * d * 2


def test_only_matrix_products_are_counted():
    assert {"mm", "addmm", "bmm"} <= set(counted_operators())
    assert "cdist" not in counted_operators()
    assert set(count_flops_by_operator("nona-l2-s1-global", 16, 4)) == {"aten.addmm", "aten.mm"}


def test_measure_step_times_only_when_asked():
    timed = measure_step("nona-l2-s2-global", 16, 4, repeats=2, min_seconds=0.0)
    assert timed.seconds is not None and timed.seconds > 0
    assert timed.flops == timed.projection_flops + timed.head_flops
    assert measure_step("dense", 16, 4, timed=False).seconds is None


def test_projected_head_predicts_one_value_per_point():
    for name in HEAD_VARIANTS:
        model = ProjectedHead(name, 5)
        out = model(torch.randn(7, 20), torch.rand(7))
        assert out.shape == (7,) and torch.isfinite(out).all()
    assert isinstance(build_head("dense", 3), DenseHead)
    assert isinstance(build_head("nona-rbf", 3), NONA)


def test_bad_inputs_are_refused_with_actionable_messages():
    with pytest.raises(ValueError, match="unknown head 'nona-l3'; expected one of dense"):
        build_head("nona-l3", 4)
    with pytest.raises(ValueError, match="at least 2 points"):
        measure_step("dense", 1, 4)
    with pytest.raises(ValueError, match="repeats must be positive"):
        measure_step("dense", 4, 4, repeats=0)
    with pytest.raises(ValueError, match="positive values"):
        loglog_slope([1, 2], [0, 1])
    with pytest.raises(ValueError, match="at least 2 values"):
        loglog_slope([1], [1])
    with pytest.raises(ValueError, match="use 'auto', 'cpu' or 'cuda'"):
        check_device("tpu")


def test_device_auto_falls_back_to_the_cpu():
    assert check_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA GPU"):
            check_device("cuda")


def test_loglog_slope_recovers_a_power_law():
    xs = [2.0, 4.0, 8.0, 16.0]
    assert loglog_slope(xs, [3 * x**1.5 for x in xs]) == pytest.approx(1.5)
