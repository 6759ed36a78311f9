"""The training step's hand-written gradients against plain autograd.

Also the self-neighbour warning and fixed SoftStep parameters.

The plain implementation below builds the ``(b, b, d)`` differences and lets
autograd differentiate every formula; it shares no code with the package
except the mask parameters' sigmoid (``SoftStep.parameters_for``).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from nona import NCA, NONA, DifferentiableKNN, SoftStep
from nona.heads import SelfNeighbourWarning
from nona.softstep import T_MARGIN, minmax_normalise

DIM = 6
CONFIGS = [
    ("l2", None),
    ("rbf", None),
    ("l2", ("s1", "global")),
    ("l2", ("s1", "pointwise")),
    ("l2", ("s2", "global")),
    ("l2", ("s2", "pointwise")),
    ("rbf", ("s2", "pointwise")),
]


def make_head(kind: str, variant, dtype: torch.dtype) -> NONA:
    torch.manual_seed(0)
    softstep = None if variant is None else SoftStep(fn=variant[0], params=variant[1], dim=DIM)
    head = NONA(kind, softstep=softstep, gamma=0.7).to(dtype)
    if softstep is not None:
        with torch.no_grad():
            for p in softstep.parameters():
                p.copy_(torch.randn_like(p))
    return head


def plain_sim(z: torch.Tensor, kind: str, gamma: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(z), dtype=torch.bool)
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    if kind == "rbf":
        return torch.where(eye, 0.0, -gamma * sq)
    return torch.where(eye, 0.0, -torch.where(eye, 1.0, sq).sqrt())


def plain_log_mask(sim: torch.Tensor, p: torch.Tensor, fn: str, eps: float) -> torch.Tensor:
    x = minmax_normalise(sim)
    t = p[:, -1:].clamp(T_MARGIN, 1 - T_MARGIN)
    if fn == "s2":
        b = p[:, :1]
        below = x < b
        xs = torch.where(below, x.clamp_min(torch.finfo(x.dtype).tiny ** 0.5), b)
        return torch.where(below, (b - xs) * t / (1 - t) * torch.log(xs / b), 0.0)
    others = x.masked_fill(torch.eye(len(x), dtype=torch.bool), float("-inf"))
    a = torch.minimum(p[:, :1], others.amax(dim=1, keepdim=True)) - eps
    b = a + p[:, 1:2] * (1 - a)
    inside = (x > a) & (x < b)
    up = torch.where(inside, x - a, 1.0).log()
    down = torch.where(inside, b - x, 1.0).log()
    transition = -torch.nn.functional.softplus((down - up) / t)
    return torch.where(x <= a, float("-inf"), torch.where(x >= b, 0.0, transition))


def plain_step(head: NONA, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The NONA training prediction, batch as its own neighbour set, differentiated by autograd alone."""
    gamma = head.gamma if head.similarity == "rbf" else torch.tensor(1.0)
    sim = plain_sim(z, head.similarity, gamma)
    if head.softstep is not None:
        p = head.softstep.parameters_for(z).expand(len(z), -1)
        sim = sim + plain_log_mask(sim, p, head.softstep.fn, head.softstep.eps)
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool), float("-inf"))
    return torch.softmax(sim, dim=1) @ y


def gradients(head: NONA, z: torch.Tensor, y: torch.Tensor, plain: bool) -> list[torch.Tensor]:
    z = z.clone().requires_grad_(True)
    y = y.clone().requires_grad_(True)
    head.zero_grad()
    out = plain_step(head, z, y) if plain else head(z, z, y, exclude_self=True)
    torch.nn.functional.mse_loss(out, torch.linspace(0, 1, len(z), dtype=z.dtype)).backward()
    return [out.detach(), z.grad, y.grad] + [p.grad for p in head.parameters()]


# float32: S2 with t near 1 (t/(1-t) ~ 100 here) amplifies rounding to about 1e-3 of the
# largest entry; the eager autograd version of the same formulas had the same error.
@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-9), (torch.float32, 5e-3)], ids=["float64", "float32"])
@pytest.mark.parametrize("kind,variant", CONFIGS)
# 40 and 200 rows: both sides of the batch size where the distances' backward changes form.
@pytest.mark.parametrize("rows", [40, 200])
def test_training_step_matches_plain_autograd_in_float64(kind, variant, dtype, rtol, rows):
    head = make_head(kind, variant, dtype)
    torch.manual_seed(1)
    z, y = torch.randn(rows, DIM, dtype=torch.float64), torch.rand(rows, dtype=torch.float64)
    ours = gradients(head, z.to(dtype), y.to(dtype), plain=False)
    want = gradients(head.double(), z, y, plain=True)
    names = ["output", "z", "y"] + [name for name, _ in head.named_parameters()]
    for name, got, expected in zip(names, ours, want, strict=True):
        scale = expected.abs().max().item()
        torch.testing.assert_close(got.double(), expected, rtol=0, atol=rtol * max(scale, 1e-12), msg=name)


@pytest.mark.parametrize("params", ["global", "pointwise"])
@pytest.mark.parametrize("kind", ["l2", "rbf"])
def test_s2_t_beyond_its_clamp_gets_no_gradient(kind, params):
    # The S2 nodes split the parameters into b and t and clamp t themselves. Where
    # sigmoid(raw t) lies below T_MARGIN (global: all rows; pointwise: about half of them,
    # the logits spread across T_MARGIN's logit, -9.21), t's gradient must be exactly 0,
    # as autograd's clamp gives it, and equal to autograd's elsewhere. The low end (t -> 0)
    # because near 1, t / (1 - t) ~ 1e4 would amplify rounding beyond any fair tolerance.
    head = make_head(kind, ("s2", params), torch.float64)
    with torch.no_grad():
        if params == "global":
            head.softstep.raw[-1] = -10.0
        else:
            head.softstep.linear.bias[-1] = -9.21
    torch.manual_seed(2)
    z, y = torch.randn(40, DIM, dtype=torch.float64), torch.rand(40, dtype=torch.float64)
    t = head.softstep.parameters_for(z)[:, -1]
    clamped = t < T_MARGIN
    assert clamped.all() if params == "global" else 5 < int(clamped.sum()) < 35
    ours = gradients(head, z, y, plain=False)
    want = gradients(head, z, y, plain=True)
    names = ["output", "z", "y"] + [name for name, _ in head.named_parameters()]
    for name, got, expected in zip(names, ours, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9 * max(expected.abs().max().item(), 1e-12), msg=name)
    if params == "global":
        assert ours[names.index("softstep.raw")][-1].item() == 0.0


@pytest.mark.parametrize(
    "make", [lambda: NONA("l2"), lambda: NCA(), lambda: DifferentiableKNN()], ids=["NONA", "NCA", "DifferentiableKNN"]
)
def test_self_neighbours_in_training_warn(make):
    head = make()
    z, y = torch.randn(6, 3, requires_grad=True), torch.rand(6)
    with pytest.warns(SelfNeighbourWarning, match="own label.*exclude_self=True"):
        head(z, z, y)
    # A view of the same memory with the same shape is the same neighbour set.
    with pytest.warns(SelfNeighbourWarning):
        head(z, z[:], y)


@pytest.mark.parametrize(
    "call",
    [
        lambda head, z, y: head(z, z, y, exclude_self=True),
        lambda head, z, y: head(z, z.detach().clone(), y),
        lambda head, z, y: head(z[:3], z, y),
    ],
    ids=["exclude_self", "distinct tensors", "different shape"],
)
def test_no_self_neighbour_warning_otherwise(call):
    head = NONA("l2")
    z, y = torch.randn(6, 3, requires_grad=True), torch.rand(6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SelfNeighbourWarning)
        call(head, z, y)
        with torch.no_grad():
            head(z, z, y)


def test_self_neighbour_warning_is_a_user_warning():
    assert issubclass(SelfNeighbourWarning, UserWarning)


@pytest.mark.parametrize("fn", ["s1", "s2", "lu"])
def test_log_mask_with_fixed_parameters(fn):
    step = SoftStep(fn=fn, params="pointwise", dim=3).double()
    z = torch.randn(5, 3, dtype=torch.float64)
    sim = -torch.cdist(z, z)
    learned = step.parameters_for(z).detach()
    # Given the learned parameters, the mask is the learned one.
    torch.testing.assert_close(step.log_mask(sim, z, parameters=learned), step.log_mask(sim, z), rtol=0, atol=0)
    # A different t changes the mask, and one row of parameters serves every query.
    other = learned.clone()
    other[:, -1] = 0.9
    assert not torch.equal(step.log_mask(sim, z, parameters=other), step.log_mask(sim, z))
    shared = learned[:1]
    torch.testing.assert_close(
        step.log_mask(sim, z, parameters=shared), step.log_mask(sim, z, parameters=shared.expand(5, -1))
    )
    with pytest.raises(ValueError, match=r"must have shape \(5, "):
        step.log_mask(sim, z, parameters=learned[:, :1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("variant", [None, ("s2", "global"), ("s2", "pointwise")])
def test_fused_training_node_trains_to_the_same_bits_as_the_separate_nodes(monkeypatch, variant, dtype):
    # Several Adam steps of a projector and a head: every parameter ends equal to the last bit,
    # so a build's runs do not depend on which path computed them.
    import nona.heads
    from nona.heads import Projector

    def train(fused: bool) -> list[torch.Tensor]:
        monkeypatch.setattr(nona.heads, "FUSED_SELF_ATTEND", fused)
        torch.manual_seed(0)
        x, y = torch.randn(192, 40, dtype=dtype), torch.rand(192, dtype=dtype)
        projector = Projector(40, 12).to(dtype)
        softstep = None if variant is None else SoftStep(fn=variant[0], params=variant[1], dim=12)
        head = NONA("l2", softstep=softstep).to(dtype)
        parameters = [*projector.parameters(), *head.parameters()]
        optimiser = torch.optim.Adam(parameters, lr=1e-2)
        for step in range(6):
            rows = slice(64 * (step % 3), 64 * (step % 3 + 1))
            z = projector(x[rows])
            loss = torch.nn.functional.mse_loss(head(z, z, y[rows], exclude_self=True), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        return [p.detach().clone() for p in parameters]

    for fused, separate in zip(train(True), train(False), strict=True):
        assert torch.equal(fused, separate)
