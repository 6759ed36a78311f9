"""The (l, u) SoftStep, the NCA head and the differentiable k-NN head against float64 loop references.

Also: gradients, degenerate inputs, errors, chunking, the hard k-NN limit,
memory, and training through ``nona.train``.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nona import NCA, NONA, DifferentiableKNN, SoftStep
from nona.neighbour_heads import soft_rank
from nona.softstep import T_MARGIN, softstep_from_spec
from nona.train import RegressionModel, TrainConfig, fit, predict
from tests.degenerate import degenerate_cases
from tests.reference import s1_ref, s2_ref, sim_ref

DIM = 5
PARAMS = ["global", "pointwise"]
HEADS = ["nca", "dknn"]


# ---------------------------------------------------------------- references
# Loops over the formulas of nona/neighbour_heads.py and SoftStep(fn="lu"), numpy only.


def lu_ref(x: float, l0: float, u0: float, t: float) -> float:
    """The (l, u) SoftStep mask from its raw sigmoids (l0, u0, t)."""
    low = min(l0, 1 - T_MARGIN)
    up = low + u0 * (1 - low)
    return s1_ref(x, low, up, min(max(t, T_MARGIN), 1 - T_MARGIN))


def normalise_ref(row: np.ndarray, valid: list[int]) -> np.ndarray:
    lo, hi = min(row[j] for j in valid), max(row[j] for j in valid)
    return (row - lo) / (hi - lo) if hi > lo else np.ones_like(row)


def weights_ref(logits: np.ndarray) -> np.ndarray:
    w = np.exp(logits - logits.max())
    return w / w.sum()


def nona_lu_ref(z, zn, yn, kind, params, exclude_self=False, gamma=1.0):
    """NONA (NCA when kind is rbf) with the (l, u) SoftStep: normalisation over the valid neighbours only."""
    sim = sim_ref(z, zn, kind, gamma)
    b, n = sim.shape
    out = np.empty(b)
    for i in range(b):
        valid = [j for j in range(n) if not (exclude_self and j == i)]
        row = sim[i]
        x = normalise_ref(row, valid)
        mask = np.array([lu_ref(v, *params[i]) for v in x])
        with np.errstate(divide="ignore"):
            logits = row + np.log(mask)
        if exclude_self:
            logits[i] = -np.inf
        out[i] = weights_ref(logits) @ yn
    return out


def soft_rank_ref(sim_row: np.ndarray, valid: list[int], temperature: float) -> dict[int, float]:
    s = normalise_ref(sim_row, valid)
    width = temperature / max(len(valid) - 1, 1)
    return {j: 1 + sum(min(max(0.5 + (s[k] - s[j]) / (2 * width), 0.0), 1.0) for k in valid if k != j) for j in valid}


def dknn_ref(z, zn, yn, kind, fn, params, exclude_self=False, temperature=1.0, max_rank=None, eps=1e-6):
    sim = sim_ref(z, zn, kind)
    b, n = sim.shape
    out = np.empty(b)
    for i in range(b):
        valid = [j for j in range(n) if not (exclude_self and j == i)]
        rank = soft_rank_ref(sim[i], valid, temperature)
        scale = max_rank if max_rank is not None else max(len(valid) - 1, 1)
        best = min(rank.values())
        x = {j: min(max(1 - (rank[j] - best) / scale, 0.0), 1.0) for j in valid}
        p = params[i]
        t = min(max(p[-1], T_MARGIN), 1 - T_MARGIN)
        if fn == "lu":
            mask = {j: lu_ref(x[j], *p) for j in valid}
        elif fn == "s2":
            mask = {j: s2_ref(x[j], p[0], t) for j in valid}
        else:
            a = min(p[0], max(x.values())) - eps
            mask = {j: s1_ref(x[j], a, a + p[1] * (1 - a), t) for j in valid}
        weights = np.array([mask[j] for j in valid]) / sum(mask.values())
        out[i] = weights @ yn[valid]
    return out


# ------------------------------------------------------------------- helpers


def make_head(head: str, params: str, fn: str = "lu", dim: int = DIM, seed: int = 0, dtype=torch.float64, **kwargs):
    torch.manual_seed(seed)
    softstep = SoftStep(fn=fn, params=params, dim=dim)
    if head == "nca":
        module = NCA(softstep=softstep, gamma=0.7, **kwargs)
    elif head == "dknn":
        module = DifferentiableKNN(softstep=softstep, **kwargs)
    else:
        module = NONA(head, softstep=softstep, **kwargs)
    module = module.to(dtype)
    # Spread the parameters away from the defaults so every branch of the masks is used.
    with torch.no_grad():
        for p in softstep.parameters():
            p.copy_(torch.randn_like(p))
    return module


def mask_params(head, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return head.softstep.parameters_for(z).expand(z.shape[0], -1).numpy()


# ------------------------------------------------------------ (l, u) SoftStep


def test_lu_softstep_matches_closed_form_and_bounds():
    rng = np.random.default_rng(0)
    step = SoftStep(fn="lu").double()
    for _ in range(50):
        raw = rng.normal(size=3) * 2
        with torch.no_grad():
            step.raw.copy_(torch.from_numpy(raw))
        l0, u0, t = 1 / (1 + np.exp(-raw))
        x = torch.from_numpy(rng.uniform(0, 1, size=40))
        got = step.log_step(x.unsqueeze(0), torch.zeros(1, 1, dtype=torch.float64)).exp().squeeze(0).detach().numpy()
        want = np.array([lu_ref(v, l0, u0, t) for v in x.numpy()])
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        low, up = l0, l0 + u0 * (1 - l0)
        assert np.all(got[x.numpy() <= low] == 0) and np.all(got[x.numpy() >= up] == 1)


def test_lu_limits_in_t():
    step = SoftStep(fn="lu").double()
    x = torch.linspace(0, 1, 101, dtype=torch.float64).unsqueeze(0)
    z = torch.zeros(1, 1, dtype=torch.float64)
    low, up = 0.2, 0.6  # l0 = 0.2, u0 = 0.5
    with torch.no_grad():
        step.raw.copy_(torch.tensor([np.log(0.2 / 0.8), 0.0, -60.0]))
    hard = step.log_step(x, z).exp()[0].detach()
    assert torch.all(hard[x[0] < 0.39] < 1e-6) and torch.all(hard[x[0] > 0.41] > 1 - 1e-6)  # step at (l+u)/2
    with torch.no_grad():
        step.raw[-1] = 60.0
    ramp = step.log_step(x, z).exp()[0].detach()
    inside = (x[0] > low) & (x[0] < up)
    np.testing.assert_allclose(ramp[inside].numpy(), ((x[0][inside] - low) / (up - low)).numpy(), atol=1e-3)


def test_lu_normalises_over_valid_neighbours_so_the_nearest_is_kept():
    # l0 -> 1 would reject every neighbour below the row's best; the best valid one survives
    # because the own entry (the row's maximum) is left out of the normalisation.
    step = SoftStep(fn="lu").double()
    with torch.no_grad():
        step.raw.copy_(torch.tensor([60.0, 0.0, 0.0]))
    z = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    sim = -torch.cdist(z, z)
    rows = torch.arange(4)
    log_mask = step.log_mask(sim, z, self_index=rows)
    log_mask[rows, rows] = float("-inf")
    assert torch.equal(log_mask.argmax(dim=1), torch.tensor([1, 0, 1, 2]))
    assert (torch.isfinite(log_mask).sum(dim=1) == 1).all()


def test_softstep_specs():
    assert softstep_from_spec("none") is None
    step = softstep_from_spec("lu-pointwise", dim=3)
    assert (step.fn, step.params, step.linear.in_features, step.n_params) == ("lu", "pointwise", 3, 3)
    assert TrainConfig(softstep="lu-global").softstep == "lu-global"
    with pytest.raises(ValueError, match="unknown SoftStep spec 'lu'"):
        softstep_from_spec("lu")


def _predict_random(head, seed: int, exclude_self: bool, grad: bool):
    """Random float64 queries, neighbours and labels, and the head's predictions on them (with or without autograd)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(9, DIM))
    zn = z if exclude_self else rng.normal(size=(13, DIM))
    yn = rng.uniform(size=len(zn))
    with torch.set_grad_enabled(grad):
        got = (
            head(torch.from_numpy(z), torch.from_numpy(zn), torch.from_numpy(yn), exclude_self=exclude_self)
            .detach()
            .numpy()
        )
    return z, zn, yn, got


@pytest.mark.parametrize("kind", ["l2", "rbf", "cos"])
@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("grad", [True, False], ids=["autograd path", "no-grad inference path"])
def test_nona_and_nca_with_lu_match_reference(kind, params, exclude_self, grad):
    head = make_head("nca", params) if kind == "rbf" else make_head(kind, params)
    z, zn, yn, got = _predict_random(head, 1, exclude_self, grad)
    want = nona_lu_ref(z, zn, yn, kind, mask_params(head, torch.from_numpy(z)), exclude_self, gamma=0.7)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_nca_is_rbf_nona_with_lu_by_default():
    head = NCA()
    assert head.similarity == "rbf" and head.softstep.fn == "lu" and head.softstep.params == "global"
    assert NCA(softstep=None).softstep is None
    assert NCA(softstep="lu-pointwise", dim=7).softstep.linear.in_features == 7


# ----------------------------------------------------------------- soft rank


@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_soft_rank_matches_reference(temperature, exclude_self):
    rng = np.random.default_rng(2)
    sim = rng.normal(size=(6, 6 if exclude_self else 11))
    sim[:, 3] = sim[:, 4]  # ties
    self_index = torch.arange(6) if exclude_self else None
    got = soft_rank(torch.from_numpy(sim), temperature, self_index).numpy()
    for i in range(6):
        valid = [j for j in range(sim.shape[1]) if not (exclude_self and j == i)]
        want = soft_rank_ref(sim[i], valid, temperature)
        np.testing.assert_allclose([got[i, j] for j in valid], [want[j] for j in valid], rtol=0, atol=1e-10)
        if exclude_self:
            assert got[i, i] == len(valid) + 1


def test_sharp_soft_rank_is_the_exact_rank_with_ties_averaged():
    sim = torch.tensor([[0.3, 0.9, 0.1, 0.9, 0.5]], dtype=torch.float64)
    got = soft_rank(sim, temperature=1e-6)
    torch.testing.assert_close(got, torch.tensor([[4.0, 1.5, 5.0, 1.5, 3.0]], dtype=torch.float64))
    # Ranks in a flat row are all tied.
    torch.testing.assert_close(soft_rank(torch.ones(1, 4)), torch.full((1, 4), 2.5))


# ------------------------------------------------------------ dknn reference


@pytest.mark.parametrize("fn,params", [("lu", "global"), ("lu", "pointwise"), ("s1", "pointwise"), ("s2", "global")])
@pytest.mark.parametrize("exclude_self", [False, True])
@pytest.mark.parametrize("max_rank", [None, 4])
@pytest.mark.parametrize("grad", [True, False], ids=["autograd", "no grad"])
def test_dknn_matches_reference(fn, params, exclude_self, max_rank, grad):
    head = make_head("dknn", params, fn=fn, temperature=0.7, max_rank=max_rank)
    z, zn, yn, got = _predict_random(head, 3, exclude_self, grad)
    want = dknn_ref(z, zn, yn, "l2", fn, mask_params(head, torch.from_numpy(z)), exclude_self, 0.7, max_rank)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10)


def test_dknn_weights_are_a_convex_combination_without_the_own_entry():
    head = make_head("dknn", "pointwise", dtype=torch.float32)
    torch.manual_seed(4)
    z = torch.randn(12, DIM)
    z[5] = z[4]  # a duplicate must not be mistaken for "self"
    weights = head.attention(z, z, exclude_self=True)
    assert torch.all(weights >= 0) and torch.allclose(weights.sum(dim=1), torch.ones(12))
    assert torch.all(weights.diagonal() == 0)
    assert weights[4, 5] == weights[4].max()


@pytest.mark.parametrize("k,max_rank", [(1, None), (5, None), (5, 10)])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_sharp_dknn_with_hard_step_is_k_nearest_neighbours(k, max_rank, exclude_self):
    torch.manual_seed(5)
    zn, yn = torch.randn(50, 4, dtype=torch.float64), torch.rand(50, dtype=torch.float64)
    z = zn if exclude_self else torch.randn(20, 4, dtype=torch.float64)
    n_valid = 49 if exclude_self else 50
    scale = max_rank if max_rank is not None else n_valid - 1
    head = DifferentiableKNN("l2", softstep="lu-global", temperature=1e-4, max_rank=max_rank).double()
    # l halfway between the k-th and (k+1)-th rank, u -> l, t -> 0: keep exactly the k nearest.
    low = 1 - (k - 0.5) / scale
    with torch.no_grad():
        head.softstep.raw.copy_(torch.tensor([np.log(low / (1 - low)), -60.0, -60.0]))
    distances = torch.cdist(z, zn)
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    nearest = distances.topk(k, largest=False).indices
    torch.testing.assert_close(head(z, zn, yn, exclude_self=exclude_self), yn[nearest].mean(dim=1), rtol=0, atol=1e-9)


# ----------------------------------------------------------------- gradients


@pytest.mark.parametrize("head_name,params", list(itertools.product(HEADS, PARAMS)))
def test_gradcheck(head_name, params):
    head = (
        make_head(head_name, params, dim=3, temperature=1.5)
        if head_name == "dknn"
        else make_head(head_name, params, dim=3)
    )
    torch.manual_seed(6)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    zn = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    yn = torch.rand(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: head(a, b, c), (z, zn, yn), eps=1e-7, atol=1e-5)
    assert torch.autograd.gradcheck(lambda a, c: head(a, a, c[:5], exclude_self=True), (z, yn), eps=1e-7, atol=1e-5)
    # The embeddings do move the predictions (through the similarities and the soft ranks).
    assert torch.autograd.grad(head(z, z, yn[:5], exclude_self=True).sum(), z)[0].abs().sum() > 0


@pytest.mark.parametrize("head_name,params", list(itertools.product(HEADS + ["l2"], PARAMS)))
def test_gradcheck_of_mask_parameters(head_name, params):
    head = make_head(head_name, params, dim=3)
    torch.manual_seed(7)
    z, y = torch.randn(6, 3, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    name = "softstep.linear.weight" if params == "pointwise" else "softstep.raw"
    value = dict(head.named_parameters())[name].detach().clone().requires_grad_(True)

    def predict_with(p):
        return torch.func.functional_call(head, {name: p}, (z, z, y), {"exclude_self": True})

    assert torch.autograd.gradcheck(predict_with, (value,), eps=1e-7, atol=1e-5)
    # The check above would also pass if the prediction ignored the parameters.
    assert torch.autograd.grad(predict_with(value).sum(), value)[0].abs().sum() > 0


DEGENERATE_HEADS = [
    ("nca", "global"),
    ("nca", "pointwise"),
    ("dknn", "global"),
    ("dknn", "pointwise"),
    ("l2", "pointwise"),
    ("cos", "global"),
]
# Raw (l0, u0, t) extremes: sigmoids that round to 0 or 1 in float32.
RAW_EXTREMES = {
    "mid": (0.0, 0.0, 0.0),
    "t near 0": (0.0, 0.0, -60.0),
    "t near 1": (0.0, 0.0, 60.0),
    "l near 1": (60.0, 0.0, 0.0),
    "u at l": (0.0, -60.0, -60.0),
    "l near 0, u near 1": (-60.0, 60.0, 0.0),
}


@pytest.mark.parametrize("head_name,params", DEGENERATE_HEADS)
@pytest.mark.parametrize("raw", list(RAW_EXTREMES.values()), ids=list(RAW_EXTREMES))
def test_degenerate_inputs_give_finite_values_and_gradients(head_name, params, raw):
    for name, points, exclude_self in degenerate_cases(8, DIM):
        head = make_head(head_name, params, dtype=torch.float32)
        with torch.no_grad():
            if params == "global":
                head.softstep.raw.copy_(torch.tensor(raw))
            else:
                head.softstep.linear.weight.zero_()
                head.softstep.linear.bias.copy_(torch.tensor(raw))
        z = points.clone().requires_grad_(True)
        y = torch.rand(len(points))
        out = head(z, z, y, exclude_self=exclude_self)
        (out**2).sum().backward()
        grads = [z.grad] + [p.grad for p in head.parameters() if p.grad is not None]
        assert torch.isfinite(out).all(), name
        assert all(torch.isfinite(g).all() for g in grads), name
        assert torch.all(out >= y.min() - 1e-6) and torch.all(out <= y.max() + 1e-6), name


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: NCA()(torch.randn(3, 4), torch.randn(5, 3), torch.rand(5)), "dimension 4 but z_n has 3"),
        (lambda: DifferentiableKNN()(torch.randn(3, 4), torch.randn(5, 3), torch.rand(5)), "dimension 4 but z_n has 3"),
        (lambda: DifferentiableKNN()(torch.randn(3, 4), torch.randn(5, 4), torch.rand(4)), "one label per neighbour"),
        (lambda: NCA()(torch.randn(4), torch.randn(5, 4), torch.rand(5)), "must be 2-D"),
        (
            lambda: DifferentiableKNN()(torch.full((3, 4), float("nan")), torch.randn(5, 4), torch.rand(5)),
            "z contains NaN",
        ),
        (
            lambda: NCA()(torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0.1, float("nan"), 0, 0, 0])),
            "y_n contains NaN",
        ),
        (
            lambda: DifferentiableKNN()(torch.randn(1, 4), torch.randn(1, 4), torch.rand(1), exclude_self=True),
            "no neighbour",
        ),
        (
            lambda: DifferentiableKNN()(torch.randn(3, 4), torch.randn(5, 4), torch.rand(5), exclude_self=True),
            "its own neighbour set",
        ),
        (
            lambda: DifferentiableKNN(softstep="lu-pointwise", dim=25)(
                torch.randn(3, 4), torch.randn(5, 4), torch.rand(5)
            ),
            "built for dim=25",
        ),
        (lambda: NCA(softstep="lu-pointwise"), "needs the embedding dimension"),
        (lambda: NCA(softstep="s3-global"), "unknown SoftStep spec 's3-global'"),
        (lambda: NCA(softstep=3), "must be a nona.SoftStep"),
        (lambda: NCA(gamma=-1.0), "gamma must be positive"),
        (lambda: DifferentiableKNN(softstep=None), "needs one"),
        (lambda: DifferentiableKNN(softstep="none"), "needs one"),
        (lambda: DifferentiableKNN(temperature=0.0), "temperature must be at least"),
        (lambda: DifferentiableKNN(max_rank=0), "max_rank must be a positive"),
        (lambda: DifferentiableKNN("l3"), "unknown similarity 'l3'"),
        (lambda: TrainConfig(head="nca"), "set similarity='rbf'"),
        (lambda: TrainConfig(head="dknn", softstep="none"), "needs one"),
        (lambda: TrainConfig(head="dknn", batch_size=1), "differentiable k-NN head needs batch_size >= 2"),
        (lambda: TrainConfig(softstep="lu"), "unknown softstep 'lu'"),
    ],
)
def test_bad_input_raises_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


# ------------------------------------------------------------- chunking, memory


@pytest.mark.parametrize("head_name,params", [("nca", "pointwise"), ("dknn", "global"), ("dknn", "pointwise")])
@pytest.mark.parametrize("exclude_self", [False, True])
def test_chunked_equals_unchunked(head_name, params, exclude_self):
    head = make_head(head_name, params)
    torch.manual_seed(9)
    zn = torch.randn(300, DIM, dtype=torch.float64)
    z = zn if exclude_self else torch.randn(70, DIM, dtype=torch.float64)
    y = torch.rand(300, dtype=torch.float64)
    whole = head(z, zn, y, exclude_self=exclude_self)
    head.memory_budget = 1  # one row per chunk
    assert head.rows_per_chunk(300, 8) == 1
    # Equal up to the summation order of the matrix products on differently sized blocks.
    torch.testing.assert_close(head(z, zn, y, exclude_self=exclude_self), whole, rtol=0, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(head(z, zn, y, exclude_self=exclude_self), whole.detach(), rtol=0, atol=1e-12)


def test_dknn_inference_memory_stays_within_budget():
    # A fresh process so that its peak resident memory measures this call alone.
    script = textwrap.dedent(
        """
        import json, resource, torch
        from nona import DifferentiableKNN
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(0)
        zn, yn, z = torch.randn(5000, 25, generator=g), torch.rand(5000, generator=g), torch.randn(300, 25, generator=g)
        head = DifferentiableKNN(softstep="lu-pointwise", dim=25, max_rank=30, memory_budget=64 * 2**20)
        with torch.no_grad():
            head(z[:2], zn[:10], yn[:10])
            base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            out = head(z, zn, yn)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        finite = bool(torch.isfinite(out).all())
        print(json.dumps({"peak": peak, "finite": finite, "rows": head.rows_per_chunk(5000, 4)}))
        """
    )
    result = json.loads(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    )
    assert result["finite"] and result["rows"] < 300  # several chunks
    # Unchunked, the 300 x 5000 soft-rank temporaries alone take over 150 MB.
    assert result["peak"] < 64 * 2**20


# ------------------------------------------------------------------ training


@pytest.mark.parametrize(
    "head,similarity,softstep",
    [
        ("nca", "rbf", "lu-global"),
        ("nca", "rbf", "none"),
        ("dknn", "l2", "lu-pointwise"),
        ("nona", "l2", "lu-pointwise"),
    ],
)
def test_regression_model_trains_neighbour_heads(head, similarity, softstep):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(90, 4, generator=g)
    y = (torch.sin(2 * x[:, 0]) + 1) / 2
    config = TrainConfig(
        head=head, similarity=similarity, softstep=softstep, batch_size=16, lr=1e-2, max_epochs=2, patience=5
    )
    model = RegressionModel(4, config)
    assert model.predicts_from_neighbours
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = fit(model, (x[:60], y[:60], x[60:], y[60:]), config)
    assert result.epochs_run == 2 and all(np.isfinite(result.history["train_mse"]))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("head."))
    prediction = predict(model, x[60:], x[:60], y[:60])
    assert prediction.shape == (30,) and torch.all((prediction >= y[:60].min()) & (prediction <= y[:60].max()))
    if head == "dknn":
        assert model.head.max_rank == config.batch_size - 2


def test_dense_head_does_not_predict_from_neighbours():
    assert not RegressionModel(4, TrainConfig(head="dense")).predicts_from_neighbours
