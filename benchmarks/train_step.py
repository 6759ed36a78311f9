"""Training step of the NONA head: this package against the authors' approach, side by side.

A training step is forward + backward of the head with the batch as its own
neighbour set (``head(z, z, y, exclude_self=True)``), mean squared error, and
the backward pass to ``z`` and to the head's parameters. Configurations: l2,
l2 + S1 and l2 + S2 (global and pointwise parameters), b in {32, 128, 512,
1024}, d = 25, float32 and float64.

"Authors' approach" is a re-implementation written here, in this file, of how
the authors' public code computes the head (``torch.cdist`` for the distances,
a ``b x b`` diagonal ``inf`` matrix built on every call, ``torch.equal(z, z_n)``
to detect training, and their SoftStep formulas evaluated eagerly with
autograd). It is not their code and shares none of it; it is what the speed-up
column is measured against.

The two implementations are timed alternately, step by step, so that machine
load affects both alike; each time is the median of ``--repeats`` steps after
warm-up. ``--clock cpu`` times the process's CPU time instead of wall time:
on a shared, loaded machine and with one thread (``OMP_NUM_THREADS=1``) it
leaves out the time the process waits for a core. Prints a Markdown table.

Usage: ``python benchmarks/train_step.py [--repeats 30] [--sizes 32 128 512 1024]
[--dtypes float32 float64] [--clock wall|cpu]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn

from nona import NONA, SoftStep

D = 25
EPS = 1e-12  # the authors' clamp margin
CONFIGS = ("l2", "l2+S1 global", "l2+S1 pointwise", "l2+S2 global", "l2+S2 pointwise")


class AuthorsHead(nn.Module):
    """Eager re-implementation of the authors' approach (see the module docstring)."""

    def __init__(self, fn: str | None, params: str | None, dim: int) -> None:
        super().__init__()
        self.fn = fn
        self.params = params
        n_params = {"s1": 3, "s2": 2, None: 0}[fn]
        if params == "pointwise":
            self.linear = nn.Linear(dim, n_params)
        elif params == "global":
            self.raw = nn.Parameter(torch.zeros(n_params))

    def mask_parameters(self, z: Tensor) -> list[Tensor]:
        if self.params == "pointwise":
            p = torch.sigmoid(self.linear(z)).clamp(min=EPS, max=1 - EPS)
            return [col.unsqueeze(-1) for col in p.T]
        return list(torch.sigmoid(self.raw).clamp(EPS, 1 - EPS))

    def s2(self, sim: Tensor, z: Tensor) -> Tensor:
        k, t = self.mask_parameters(z)
        low = sim.min(dim=1, keepdim=True)[0]
        high = sim.max(dim=1, keepdim=True)[0]
        x = ((sim - low) / (high - low)).clamp(min=EPS)
        shift = t / (1 - t) * (k - x) * (x / k).log()
        return sim + torch.where(x <= k, shift, 0)

    def s1(self, sim: Tensor, z: Tensor, train: bool) -> Tensor:
        a, b, s = self.mask_parameters(z)
        b = a + b * (1 - a)
        low = sim.min(dim=1, keepdim=True)[0]
        high = sim.max(dim=1, keepdim=True)[0]
        x = (sim - low) / (high - low)
        top = (x - x.diag().diag()).max(dim=1)[0] if train else x.max(dim=1)[0]
        a = torch.minimum(a, top.unsqueeze(-1)) - EPS if self.params == "pointwise" else torch.min(a, top.min()) - EPS
        num = torch.abs(x - a).pow(1 / s).clamp(EPS)
        denom = num + torch.abs(b - x).pow(1 / s).clamp(EPS)
        mask = num / denom
        mask[x < a] = 0
        mask[x > b] = 1
        return sim + mask.log()

    def forward(self, z: Tensor, z_n: Tensor, y_n: Tensor) -> Tensor:
        sim = -torch.cdist(z, z_n, p=2)
        train = torch.equal(z, z_n)
        if self.fn == "s2":
            sim = self.s2(sim, z)
        elif self.fn == "s1":
            sim = self.s1(sim, z, train)
        if train:
            inf_id = torch.diag(torch.full((len(sim),), float("inf"), dtype=sim.dtype, device=sim.device))
            sim = sim - inf_id
        return torch.softmax(sim, dim=1) @ y_n


def make_heads(config: str, dtype: torch.dtype) -> tuple[nn.Module, nn.Module]:
    """(this package's head, the authors' approach) for a configuration name, with equal parameters."""
    fn, params = (None, None) if config == "l2" else (config[3:5].lower(), config.split()[1])
    torch.manual_seed(0)
    ours = NONA("l2", softstep=None if fn is None else SoftStep(fn, params, dim=D)).to(dtype)
    theirs = AuthorsHead(fn, params, D).to(dtype)
    if fn is not None:
        with torch.no_grad():
            if params == "pointwise":
                theirs.linear.weight.copy_(ours.softstep.linear.weight)
                theirs.linear.bias.copy_(ours.softstep.linear.bias)
            else:
                theirs.raw.copy_(ours.softstep.raw)
    return ours, theirs


def _step_fn(head: nn.Module, z: Tensor, y: Tensor, ours: bool):
    def step() -> None:
        z.grad = None
        for p in head.parameters():
            p.grad = None
        pred = head(z, z, y, exclude_self=True) if ours else head(z, z, y)
        nn.functional.mse_loss(pred, y).backward()

    return step


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _timed(fn, clock=time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def measure(
    config: str, b: int, dtype: torch.dtype, repeats: int, warmup: int = 5, clock: str = "wall"
) -> tuple[float, float]:
    """Median seconds per training step (ours, theirs), the two timed alternately."""
    ours, theirs = make_heads(config, dtype)
    torch.manual_seed(1)
    z = torch.randn(b, D, dtype=dtype, requires_grad=True)
    y = torch.rand(b, dtype=dtype)
    step_ours, step_theirs = _step_fn(ours, z, y, True), _step_fn(theirs, z, y, False)
    for _ in range(warmup):
        step_ours()
        step_theirs()
    times_ours, times_theirs = [], []
    for _ in range(repeats):
        times_ours.append(_timed(step_ours, CLOCKS[clock]))
        times_theirs.append(_timed(step_theirs, CLOCKS[clock]))
    return statistics.median(times_ours), statistics.median(times_theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 512, 1024])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--clock", default="wall", choices=sorted(CLOCKS))
    args = parser.parse_args()
    print(
        f"\n## Training step (forward + backward), d = {D}, torch threads = {torch.get_num_threads()}, "
        f"clock = {args.clock}\n"
    )
    print("| config | b | dtype | ours (ms) | authors' approach (ms) | speed-up |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for config in args.configs:
        for dtype_name in args.dtypes:
            for b in args.sizes:
                ours, theirs = measure(config, b, getattr(torch, dtype_name), args.repeats, clock=args.clock)
                print(
                    f"| {config} | {b} | {dtype_name} | {1e3 * ours:.2f} | {1e3 * theirs:.2f} | {theirs / ours:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
