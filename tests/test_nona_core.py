"""The NONA layer against an independent float64 reference, gradients, degenerate inputs and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nona import NONA, DenseHead, Projector, SoftStep, inference
from nona.similarity import SIMILARITIES, similarity
from nona.softstep import s1, s2
from tests.degenerate import degenerate_cases
from tests.reference import nona_ref, s1_ref, s2_ref, sim_ref

SOFTSTEPS = [None, ("s1", "global"), ("s1", "pointwise"), ("s2", "global"), ("s2", "pointwise")]
DIM = 5


def make_head(kind: str, variant, dim: int = DIM, seed: int = 0, dtype=torch.float64) -> NONA:
    torch.manual_seed(seed)
    softstep = None if variant is None else SoftStep(fn=variant[0], params=variant[1], dim=dim)
    head = NONA(similarity=kind, softstep=softstep, gamma=0.7).to(dtype)
    if softstep is not None:
        # Spread the parameters away from the defaults so every branch of the masks is used.
        with torch.no_grad():
            for p in softstep.parameters():
                p.copy_(torch.randn_like(p))
    return head


def mask_params(head: NONA, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return head.softstep.parameters_for(z).expand(z.shape[0], -1).numpy()


@pytest.mark.parametrize("kind", SIMILARITIES)
def test_similarity_matches_reference(kind):
    rng = np.random.default_rng(1)
    z, zn = rng.normal(size=(7, DIM)), rng.normal(size=(11, DIM))
    got = similarity(torch.from_numpy(z), torch.from_numpy(zn), kind, gamma=0.7).numpy()
    np.testing.assert_allclose(got, sim_ref(z, zn, kind, 0.7), rtol=1e-10, atol=1e-10)


def test_similarity_offset_embeddings_stay_accurate():
    # Far from the origin the matmul expansion cancels badly unless centred.
    rng = np.random.default_rng(2)
    z, zn = rng.normal(size=(6, DIM)) + 1e4, rng.normal(size=(9, DIM)) + 1e4
    got = similarity(torch.from_numpy(z).float(), torch.from_numpy(zn).float(), "l2").numpy()
    np.testing.assert_allclose(got, sim_ref(z, zn, "l2"), rtol=1e-3, atol=1e-3)


def test_s1_s2_match_closed_forms():
    rng = np.random.default_rng(3)
    for _ in range(300):
        x, a, t = rng.uniform(0, 1), rng.uniform(0, 0.5), rng.uniform(0.02, 0.98)
        b = rng.uniform(a + 0.01, 1)
        assert s1(torch.tensor(x, dtype=torch.float64), a, b, t).item() == pytest.approx(
            s1_ref(x, a, b, t), rel=1e-9, abs=1e-12
        )
        assert s2(torch.tensor(x, dtype=torch.float64), b, t).item() == pytest.approx(
            s2_ref(x, b, t), rel=1e-9, abs=1e-12
        )


def test_s1_limits_in_t():
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    a, b = 0.2, 0.6
    step = s1(x, a, b, 1e-3)
    assert torch.all(step[x < 0.39] < 1e-6) and torch.all(step[x > 0.41] > 1 - 1e-6)
    ramp = s1(x, a, b, 1 - 1e-9)
    inside = (x > a) & (x < b)
    np.testing.assert_allclose(ramp[inside].numpy(), ((x[inside] - a) / (b - a)).numpy(), atol=1e-6)


@pytest.mark.parametrize("kind,variant", list(itertools.product(SIMILARITIES, SOFTSTEPS)))
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("grad", [True, False], ids=["autograd path", "no-grad inference path"])
def test_head_matches_reference(kind, variant, exclude_self, grad):
    rng = np.random.default_rng(4)
    head = make_head(kind, variant)
    z = rng.normal(size=(9, DIM))
    zn = z if exclude_self else rng.normal(size=(13, DIM))
    yn = rng.uniform(size=len(zn))
    zt = torch.from_numpy(z)
    with torch.set_grad_enabled(grad):
        got = head(zt, torch.from_numpy(zn), torch.from_numpy(yn), exclude_self=exclude_self).detach().numpy()
    params = None if variant is None else mask_params(head, zt)
    want = nona_ref(z, zn, yn, kind, None if variant is None else variant[0], params, exclude_self, gamma=0.7)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", SIMILARITIES)
@pytest.mark.parametrize("variant", [None, ("s2", "global"), ("s2", "pointwise"), ("s1", "pointwise")])
def test_tiled_inference_matches_reference(kind, variant, monkeypatch):
    # Tiles of 16 rows x 40 neighbours over 9 x 130 scores: several tiles per row, the last
    # one partial. The nearest neighbours are last and the others 40-400 units away, so the
    # first tiles' weights would underflow to 0 in float32 without the online rescaling.
    monkeypatch.setattr(inference, "TILE_ROWS", 16)
    monkeypatch.setattr(inference, "TILE_COLUMNS", 40)
    rng = np.random.default_rng(12)
    head = make_head(kind, variant)
    z = rng.normal(size=(9, DIM))
    far = rng.normal(size=(120, DIM)) * 10 + rng.uniform(40, 400, size=(120, 1))
    zn = np.concatenate([far, z[:5] + rng.normal(size=(5, DIM)), rng.normal(size=(5, DIM))])
    yn = rng.uniform(size=len(zn))
    zt = torch.from_numpy(z)
    with torch.no_grad():
        got = head(zt, torch.from_numpy(zn), torch.from_numpy(yn)).numpy()
    params = None if variant is None else mask_params(head, zt)
    want = nona_ref(z, zn, yn, kind, None if variant is None else variant[0], params, gamma=0.7)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)
    # float32: finite, and within the float32 precision of the distance expansion with the
    # neighbours' centre pulled ~200 units away (a NaN or a 0/0 would fail here).
    with torch.no_grad():
        got32 = head.float()(zt.float(), torch.from_numpy(zn).float(), torch.from_numpy(yn).float()).numpy()
    np.testing.assert_allclose(got32, want, rtol=5e-3, atol=1e-4)


def test_s1_threshold_is_clipped_below_best_non_self_neighbour():
    softstep = SoftStep(fn="s1", params="global").double()
    with torch.no_grad():
        softstep.raw.copy_(torch.tensor([30.0, 0.0, 0.0]))  # a0 -> 1: would reject every neighbour
    z = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    sim = similarity(z, z, "l2")
    rows = torch.arange(4)
    log_mask = softstep.log_mask(sim, z, self_index=rows)
    masked = log_mask.clone()
    masked[rows, rows] = float("-inf")
    best = masked.argmax(dim=1)
    # The nearest other point survives the clipped threshold; farther ones are rejected outright.
    assert torch.equal(best, torch.tensor([1, 0, 1, 2]))
    assert torch.isfinite(masked[rows, best]).all()
    assert (torch.isinf(masked).sum(dim=1) == 3).all()
    # Without exclude_self the diagonal is a row's best entry and alone survives.
    log_mask_all = softstep.log_mask(sim, z)
    assert torch.equal(torch.isfinite(log_mask_all), torch.eye(4, dtype=torch.bool))


def test_exclude_self_masks_own_entry_by_index():
    head = NONA("l2")
    z = torch.randn(6, 3)
    z[3] = z[2]  # a duplicate must not be mistaken for "self"
    weights = head.attention(z, z, exclude_self=True)
    assert torch.all(weights.diagonal() == 0)
    assert weights[2, 3] > weights[2].max() - 1e-6


@pytest.mark.parametrize("kind,variant", list(itertools.product(SIMILARITIES, SOFTSTEPS)))
def test_gradcheck(kind, variant):
    head = make_head(kind, variant, dim=3)
    torch.manual_seed(5)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    zn = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    yn = torch.rand(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: head(a, b, c), (z, zn, yn), eps=1e-7, atol=1e-5)
    assert torch.autograd.gradcheck(lambda a, c: head(a, a, c[:5], exclude_self=True), (z, yn), eps=1e-7, atol=1e-5)


def test_gradcheck_of_mask_parameters():
    for fn in ("s1", "s2"):
        head = make_head("l2", (fn, "pointwise"), dim=3)
        z = torch.randn(5, 3, dtype=torch.float64)
        y = torch.rand(5, dtype=torch.float64)
        weight = head.softstep.linear.weight.detach().clone().requires_grad_(True)

        def predict(w, head=head, z=z, y=y):
            return torch.func.functional_call(head, {"softstep.linear.weight": w}, (z, z, y), {"exclude_self": True})

        assert torch.autograd.gradcheck(predict, (weight,), eps=1e-7, atol=1e-5)


def test_rbf_with_large_gamma_is_one_nearest_neighbour():
    torch.manual_seed(6)
    zn, yn, z = torch.randn(50, 4), torch.rand(50), torch.randn(20, 4)
    head = NONA("rbf", gamma=1e6)
    nearest = torch.cdist(z, zn).argmin(dim=1)
    torch.testing.assert_close(head(z, zn, yn), yn[nearest])


@pytest.mark.parametrize("kind,variant", list(itertools.product(SIMILARITIES, SOFTSTEPS)))
@pytest.mark.parametrize("t_raw", [0.0, -60.0, 60.0], ids=["t mid", "t near 0", "t near 1"])
def test_degenerate_inputs_give_finite_values_and_gradients(kind, variant, t_raw):
    for name, points, exclude_self in degenerate_cases(7, DIM):
        head = make_head(kind, variant, dtype=torch.float32)
        if variant is not None:
            with torch.no_grad():
                if variant[1] == "global":
                    head.softstep.raw[-1] = t_raw
                else:
                    head.softstep.linear.bias[-1] = t_raw
        z = points.clone().requires_grad_(True)
        y = torch.rand(len(points))
        out = head(z, z, y, exclude_self=exclude_self)
        (out**2).sum().backward()
        grads = [z.grad] + [p.grad for p in head.parameters() if p.grad is not None]
        assert torch.isfinite(out).all(), name
        assert all(torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize(
    "kind,variant", [("l2", None), ("l2", ("s2", "pointwise")), ("rbf", ("s1", "global")), ("cos", ("s1", "pointwise"))]
)
@pytest.mark.parametrize("exclude_self", [False, True])
def test_chunked_equals_unchunked(kind, variant, exclude_self):
    head = make_head(kind, variant)
    torch.manual_seed(8)
    zn = torch.randn(300, DIM, dtype=torch.float64)
    z = zn if exclude_self else torch.randn(70, DIM, dtype=torch.float64)
    y = torch.rand(300, dtype=torch.float64)
    whole = head(z, zn, y, exclude_self=exclude_self)
    head.memory_budget = 300 * 8 * 6 * 7  # seven rows per chunk
    assert head.rows_per_chunk(300, 8) == 7
    # Equal up to the summation order of the matrix products on differently sized blocks.
    torch.testing.assert_close(head(z, zn, y, exclude_self=exclude_self), whole, rtol=0, atol=1e-13)
    with torch.no_grad():
        torch.testing.assert_close(head(z, zn, y, exclude_self=exclude_self), whole.detach(), rtol=0, atol=1e-13)


def test_dense_head_and_projector_shapes():
    proj, dense = Projector(12), DenseHead(25)
    assert proj(torch.randn(4, 12)).shape == (4, 25)
    assert dense(proj(torch.randn(4, 12))).shape == (4,)
    linear = [m for m in Projector(12, dim=7, hidden=9).net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [9, 7]


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: NONA("l3"), "unknown similarity 'l3'"),
        (lambda: SoftStep(fn="s3"), "unknown SoftStep function 's3'"),
        (lambda: SoftStep(params="local"), "unknown SoftStep parameter mode 'local'"),
        (lambda: SoftStep(params="pointwise"), "needs the embedding dimension"),
        (lambda: NONA("rbf", gamma=0.0), "gamma must be positive"),
        (lambda: NONA()(torch.randn(3, 4), torch.randn(5, 3), torch.rand(5)), "dimension 4 but z_n has 3"),
        (lambda: NONA()(torch.randn(3, 4), torch.randn(5, 4), torch.rand(4)), "one label per neighbour"),
        (lambda: NONA()(torch.randn(3, 4), torch.randn(5, 4), torch.rand(5, 1)), "one label per neighbour"),
        (lambda: NONA()(torch.randn(4), torch.randn(5, 4), torch.rand(5)), "must be 2-D"),
        (lambda: NONA()(torch.full((3, 4), float("nan")), torch.randn(5, 4), torch.rand(5)), "z contains NaN"),
        (
            lambda: NONA()(torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0.1, float("nan"), 0, 0, 0])),
            "y_n contains NaN",
        ),
        (lambda: NONA()(torch.randn(1, 4), torch.randn(1, 4), torch.rand(1), exclude_self=True), "no neighbour"),
        (
            lambda: NONA()(torch.randn(3, 4), torch.randn(5, 4), torch.rand(5), exclude_self=True),
            "its own neighbour set",
        ),
        (
            lambda: NONA(softstep=SoftStep(params="pointwise", dim=25))(
                torch.randn(3, 4), torch.randn(5, 4), torch.rand(5)
            ),
            "built for dim=25",
        ),
        (lambda: NONA(softstep="s2"), "must be a nona.SoftStep"),
        (lambda: DenseHead(25)(torch.randn(3, 4)), "DenseHead expects"),
        (lambda: Projector(8)(torch.randn(3, 4)), "Projector expects"),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
