"""No NaN, whatever the SoftStep parameters saturate to.

Every similarity x SoftStep variant gets its mask parameters driven to exactly
0 or 1, to subnormal numbers and to within 1e-30 of either end, on inputs
from 1e-6 to 1e6 in magnitude; outputs and gradients (to the embeddings, the
labels and every parameter) must stay finite.

Saturation is produced the way training produces it, through the sigmoid:
global parameters get large raw values; pointwise ones get them through the
output of the parameter network (a forward hook on its linear layer), for
every other row only, so that saturated and ordinary rows share a batch.
The CPU sigmoid flushes subnormal results to 0, so subnormal parameters (and
the largest number below 1) are written into the sigmoid's output instead,
straight-through: the forward pass sees the value, the backward pass still
reaches the raw parameters.
"""

from __future__ import annotations

import itertools
from unittest import mock

import pytest
import torch

from nona import NONA, SoftStep
from nona.similarity import SIMILARITIES

DIM = 4
VARIANTS = [None] + [(fn, mode) for fn in ("s1", "s2", "lu") for mode in ("global", "pointwise")]
MAGNITUDES = [1e-6, 1.0, 1e4, 1e6]


# Raw (pre-sigmoid) values and what the sigmoid makes of them.
SATURATING_LOGITS = {"exactly 0": -1e4, "1e-30": -69.0, "1 - 1e-30 (rounds to 1)": 69.0, "exactly 1": 1e4}


def direct_values(dtype: torch.dtype) -> dict[str, float]:
    """Parameter values the sigmoid cannot produce on CPU, written into its output."""
    info = torch.finfo(dtype)
    return {
        "subnormal": info.tiny / 2**10,
        "smallest subnormal": info.tiny * info.eps,
        "largest below 1": 1.0 - info.eps / 2,
    }


def test_saturating_values_are_what_they_claim():
    for dtype in (torch.float32, torch.float64):
        sig = {name: torch.sigmoid(torch.tensor(raw, dtype=dtype)).item() for name, raw in SATURATING_LOGITS.items()}
        assert sig["exactly 0"] == 0.0 and sig["exactly 1"] == 1.0
        assert sig["1e-30"] == pytest.approx(1e-30, rel=0.2)
        direct = {name: torch.tensor(v, dtype=dtype).item() for name, v in direct_values(dtype).items()}
        assert 0.0 < direct["smallest subnormal"] < direct["subnormal"] < torch.finfo(dtype).tiny
        assert direct["largest below 1"] < 1.0


def make_head(kind: str, variant, dtype: torch.dtype) -> NONA:
    torch.manual_seed(0)
    softstep = None if variant is None else SoftStep(fn=variant[0], params=variant[1], dim=DIM)
    return NONA(similarity=kind, softstep=softstep, gamma=0.7).to(dtype)


def saturate(head: NONA, column: int, raw: float):
    """Drive mask parameter ``column`` to ``sigmoid(raw)``; returns a hook handle to remove, or None."""
    softstep = head.softstep
    if softstep.params == "global":
        with torch.no_grad():
            softstep.raw.zero_()
            softstep.raw[column] = raw
        return None

    def hook(_module, _inputs, output):
        output = output.clone()
        output[::2, column] = raw
        return output

    return softstep.linear.register_forward_hook(hook)


def write_directly(head: NONA, column: int, value: float):
    """Make mask parameter ``column`` equal ``value`` (every other row), straight-through; a context manager."""
    softstep = head.softstep
    original = softstep.parameters_for

    def parameters_for(z):
        p = original(z)
        rows = slice(None, None, 2) if p.shape[0] > 1 else slice(None)
        forced = p.detach().clone()
        forced[rows, column] = value
        # forced + 0 in the forward pass, so the value is exact (p + (forced - p) would round a
        # subnormal next to 0.5 to 0); the gradient still reaches p.
        written = forced + (p - p.detach())
        assert written[rows, column].eq(value).all(), "the written parameter value is not exact"
        return written

    return mock.patch.object(softstep, "parameters_for", parameters_for)


def check_finite_step(head: NONA, magnitude: float, dtype: torch.dtype, exclude_self: bool, label: str) -> None:
    torch.manual_seed(1)
    z = (magnitude * torch.randn(8, DIM, dtype=dtype)).requires_grad_(True)
    z_n = z if exclude_self else (magnitude * torch.randn(11, DIM, dtype=dtype)).requires_grad_(True)
    y = torch.rand(z_n.shape[0], dtype=dtype, requires_grad=True)
    head.zero_grad()
    out = head(z, z_n, y, exclude_self=exclude_self)
    (out**2).sum().backward()
    assert torch.isfinite(out).all(), f"{label}: non-finite output"
    grads = {"z": z.grad, "z_n": z_n.grad, "y": y.grad}
    grads.update({name: p.grad for name, p in head.named_parameters() if p.grad is not None})
    for name, grad in grads.items():
        assert torch.isfinite(grad).all(), f"{label}: non-finite gradient of {name}"
    if not exclude_self:
        # Inference has its own, gradient-free path.
        with torch.no_grad():
            assert torch.isfinite(head(z, z_n, y)).all(), f"{label}: non-finite output without gradients"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kind,variant", list(itertools.product(SIMILARITIES, VARIANTS)))
def test_saturated_parameters_give_finite_values_and_gradients(kind, variant, dtype):
    head = make_head(kind, variant, dtype)
    if variant is None:
        for magnitude, exclude_self in itertools.product(MAGNITUDES, [True, False]):
            check_finite_step(head, magnitude, dtype, exclude_self, f"|z| ~ {magnitude:g}, exclude_self={exclude_self}")
        return
    for magnitude, exclude_self, column in itertools.product(MAGNITUDES, [True, False], range(head.softstep.n_params)):
        label = f"|z| ~ {magnitude:g}, exclude_self={exclude_self}, parameter {column}"
        for name, raw in SATURATING_LOGITS.items():
            handle = saturate(head, column, raw)
            try:
                check_finite_step(head, magnitude, dtype, exclude_self, f"{label} = {name}")
            finally:
                if handle is not None:
                    handle.remove()
        for name, value in direct_values(dtype).items():
            with write_directly(head, column, value):
                check_finite_step(head, magnitude, dtype, exclude_self, f"{label} = {name}")


def test_s2_pointwise_row_with_b_near_zero_has_finite_gradients():
    # The reported failure: inputs of magnitude 1e4, one row's b at about 1e-31.
    for kind in SIMILARITIES:
        head = make_head(kind, ("s2", "pointwise"), torch.float32)
        with torch.no_grad():
            head.softstep.linear.weight.zero_()
            head.softstep.linear.bias[0] = -71.0
        check_finite_step(head, 1e4, torch.float32, True, kind)
