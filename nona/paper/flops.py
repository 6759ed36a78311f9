"""Cost of one training step of each regression head: counted FLOPs and wall time (follow-up paper, Figure 4).

As in that figure, every head sits behind a linear layer ``4d -> d``; the batch
of ``N`` points is its own neighbour set (each point's own entry masked) and the
loss is the MSE. FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`,
which only has formulas for matrix-product-like operators (see :func:`counted_operators`):
element-wise work such as the softmax, the SoftStep mask or ``torch.cdist`` is
not counted, although it shows up in the wall time.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from nona.heads import NONA, DenseHead
from nona.softstep import SoftStep

# Head name -> (similarity, SoftStep function, SoftStep parameter mode); None marks the dense head.
HEAD_VARIANTS: dict[str, tuple[str, str | None, str | None] | None] = {
    "dense": None,
    "nona-l2": ("l2", None, None),
    "nona-rbf": ("rbf", None, None),
    "nona-l2-s1-global": ("l2", "s1", "global"),
    "nona-l2-s1-pointwise": ("l2", "s1", "pointwise"),
    "nona-l2-s2-global": ("l2", "s2", "global"),
    "nona-l2-s2-pointwise": ("l2", "s2", "pointwise"),
}

HEAD_LABELS = {
    "dense": "Dense",
    "nona-l2": "NONA (l2)",
    "nona-rbf": "NONA (rbf)",
    "nona-l2-s1-global": "NONA + S1 global",
    "nona-l2-s1-pointwise": "NONA + S1 pointwise",
    "nona-l2-s2-global": "NONA + S2 global",
    "nona-l2-s2-pointwise": "NONA + S2 pointwise",
}


def check_head_name(name: str) -> str:
    """Return ``name`` if it names a head of :data:`HEAD_VARIANTS`, else raise ValueError."""
    if name not in HEAD_VARIANTS:
        raise ValueError(f"unknown head {name!r}; expected one of {', '.join(HEAD_VARIANTS)}")
    return name


def build_head(name: str, dim: int) -> nn.Module:
    """A fresh head of the named kind for embeddings of dimension ``dim``."""
    spec = HEAD_VARIANTS[check_head_name(name)]
    if spec is None:
        return DenseHead(dim)
    kind, fn, mode = spec
    softstep = SoftStep(fn, params=mode, dim=dim) if fn is not None else None
    return NONA(kind, softstep=softstep)


class ProjectedHead(nn.Module):
    """A linear layer ``in_factor * dim -> dim`` followed by a head, trained with the batch as its own neighbours."""

    def __init__(self, name: str, dim: int, in_factor: int = 4) -> None:
        super().__init__()
        if dim < 1 or in_factor < 1:
            raise ValueError(f"dim and in_factor must be positive, got {dim} and {in_factor}")
        self.name = check_head_name(name)
        self.dim = dim
        self.in_dim = in_factor * dim
        self.project = nn.Linear(self.in_dim, dim)
        self.head = build_head(name, dim)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Predictions ``(N,)`` for the batch ``x`` with labels ``y`` as its own neighbour set."""
        z = self.project(x)
        if isinstance(self.head, DenseHead):
            return self.head(z)
        return self.head(z, z, y, exclude_self=True)


def _inputs(n: int, in_dim: int, seed: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    if n < 2:
        raise ValueError(f"the batch must hold at least 2 points (each needs a neighbour), got N={n}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, in_dim, generator=generator).to(device), torch.rand(n, generator=generator).to(device)


def check_device(device: str) -> torch.device:
    """The torch device named ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:<k>``).

    Raises ValueError if it is not usable here.

    ``auto`` is the first CUDA GPU when torch sees one, else the CPU.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'") from error
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported; use 'auto', 'cpu' or 'cuda'")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but torch sees no CUDA GPU here; use device='cpu'")
    return parsed


def _step(model: nn.Module, x: Tensor, y: Tensor) -> None:
    # One forward and backward pass of the MSE; gradients are dropped afterwards.
    loss = nn.functional.mse_loss(model(x, y), y)
    loss.backward()
    model.zero_grad(set_to_none=True)


def count_flops_by_operator(name: str, n: int, dim: int, seed: int = 0) -> dict[str, int]:
    """FLOPs counted by FlopCounterMode in one forward+backward step (projection and head), per ATen operator."""
    torch.manual_seed(seed)
    model = ProjectedHead(name, dim)
    x, y = _inputs(n, model.in_dim, seed)
    with FlopCounterMode(display=False) as counter:
        _step(model, x, y)
    return {str(op): int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}


def projection_flops(n: int, dim: int, in_factor: int = 4) -> int:
    """FLOPs counted for the linear layer ``in_factor * dim -> dim`` alone in one training step on ``n`` inputs."""
    layer = nn.Linear(in_factor * dim, dim)
    x = torch.zeros(n, in_factor * dim)
    with FlopCounterMode(display=False) as counter:
        # The inputs need no gradient, as in the full model: the backward pass only forms the weight gradient.
        layer(x).sum().backward()
    return int(counter.get_total_flops())


@dataclass
class StepCost:
    """Counted FLOPs of one training step (all, the projection's, the head's) and its median wall time."""

    head: str
    n: int
    dim: int
    flops: int
    projection_flops: int
    head_flops: int
    seconds: float | None


def measure_step(
    name: str,
    n: int,
    dim: int,
    repeats: int = 3,
    min_seconds: float = 0.1,
    timed: bool = True,
    seed: int = 0,
    device: str = "cpu",
) -> StepCost:
    """Count the FLOPs of one forward+backward step of the projected head and, if ``timed``, time it on ``device``.

    The wall time is the median over at least ``repeats`` steps, and over as many more (up to 100)
    as fit in ``min_seconds``, after one warm-up step.
    """
    if repeats < 1 or min_seconds < 0:
        raise ValueError(f"repeats must be positive and min_seconds non-negative, got {repeats} and {min_seconds}")
    target = check_device(device)
    torch.manual_seed(seed)
    model = ProjectedHead(name, dim).to(target)
    x, y = _inputs(n, model.in_dim, seed, target)
    with FlopCounterMode(display=False) as counter:
        _step(model, x, y)
    flops = int(counter.get_total_flops())
    seconds = None
    if timed:
        # GPU kernels run asynchronously: wait for them before reading the clock.
        sync = torch.cuda.synchronize if target.type == "cuda" else (lambda: None)
        _step(model, x, y)
        times: list[float] = []
        # Cheap steps are repeated many times: their single timings are dominated by scheduler noise.
        while len(times) < repeats or (sum(times) < min_seconds and len(times) < 100):
            sync()
            start = time.perf_counter()
            _step(model, x, y)
            sync()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
    proj = projection_flops(n, dim)
    return StepCost(name, n, dim, flops, proj, flops - proj, seconds)


def loglog_slope(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> float:
    """Least-squares slope of ``log2 y`` against ``log2 x``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"need two equal-length sequences of at least 2 values, got shapes {x.shape} and {y.shape}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log-log slope needs positive values")
    return float(np.polyfit(np.log2(x), np.log2(y), 1)[0])


def counted_operators() -> list[str]:
    """Names of the ATen operators FlopCounterMode has a FLOP formula for (all others count as zero)."""
    return sorted({str(op).removeprefix("aten.").split(".")[0] for op in flop_registry})
