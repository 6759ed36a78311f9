"""One fine-tuning step of a backbone's top on cached activations, in two layouts each.

What a fine-tuned run repeats: the trainable top (``backbone.top(1)``), the
authors' projector and a head, on the cached activations that enter the top,
forward + backward + Adam update.

- **EfficientNet-Lite0's last stage** (digits-rotation, 64 x 64 images: cached
  ``(b, 192, 2, 2)`` maps): ``pixel rows`` is what ``top(1)`` runs on a CPU (1x1
  convolutions as matrix products over pixels, the depthwise convolution as a
  per-channel mixing of the four pixels); ``channels-last`` runs the convolution
  modules on NHWC maps, what it ran before and still runs on a GPU.
- **MiniLM's last transformer layer** (vader-valence words, cached hidden states
  and masks of random training words): ``packed`` is what ``top(1)`` runs (the
  linear maps on real tokens only); ``padded`` runs the library's layer on the
  batch padded to its longest word.

Each pair is timed alternately; each time is the median of ``--repeats`` steps
after warm-up, in CPU time of this process (``OMP_NUM_THREADS=1`` recommended).
Prints a Markdown table.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/finetune_step.py [--repeats 20] [--batch 64 256]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from nona.backbones import extract_activations, get_backbone
from nona.heads import NONA, DenseHead, Projector
from nona.softstep import SoftStep


def make_step(top: torch.nn.Module, features: Callable, inputs, head: str, batch: int) -> Callable[[], None]:
    """A closure running one training step of ``features(inputs)`` + projector + head on fixed random labels."""
    torch.manual_seed(0)
    projector = Projector(top.out_dim, 25)
    softstep = SoftStep(fn="s2", params="pointwise", dim=25)
    model_head = DenseHead(25) if head == "dense" else NONA("l2", softstep=softstep)
    optimiser = torch.optim.Adam(
        [
            {"params": list(top.parameters()), "lr": 1e-4},
            {"params": [*projector.parameters(), *model_head.parameters()], "lr": 1e-3},
        ],
        fused=True,  # as nona.train builds it
    )
    labels = torch.rand(batch)

    def step() -> None:
        optimiser.zero_grad()
        z = projector(features(inputs))
        prediction = model_head(z) if head == "dense" else model_head(z, z, labels, exclude_self=True)
        torch.nn.functional.mse_loss(prediction, labels).backward()
        optimiser.step()

    return step


def efficientnet_layouts(batch: int) -> tuple[torch.nn.Module, dict[str, Callable], torch.Tensor]:
    """EfficientNet-Lite0's top and its two layouts, on random maps."""
    top = get_backbone("efficientnet_lite0", image_size=64).top(1).train()

    def form(rows: bool) -> Callable:
        def forward(h: torch.Tensor) -> torch.Tensor:
            top.rows = rows
            return top(h)

        return forward

    return top, {"channels-last": form(False), "pixel rows": form(True)}, torch.randn(batch, 192, 2, 2)


def minilm_layouts(batch: int, words: list[str]) -> tuple[torch.nn.Module, dict[str, Callable], dict]:
    """MiniLM's top and its two forms, on the cached hidden states of ``batch`` random words."""
    text = get_backbone("minilm")
    picked = [words[i] for i in np.random.default_rng(0).choice(len(words), batch, replace=False)]
    with torch.no_grad():
        cached = extract_activations(text, picked, 1, batch_size=batch, progress=False)
    top = text.top(1).train()

    def run(packed: bool) -> Callable:
        def forward(batch_inputs: dict) -> torch.Tensor:
            top.packed = packed
            return top(batch_inputs)

        return forward

    return top, {"padded": run(False), "packed": run(True)}, cached


def time_pair(top, layouts: dict[str, Callable], inputs, head: str, batch: int, repeats: int) -> list[float]:
    """Median CPU milliseconds per step of each layout, timed alternately."""
    steps = {name: make_step(top, features, inputs, head, batch) for name, features in layouts.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(3):
        for step in steps.values():
            step()
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.process_time()
            step()
            times[name].append(time.process_time() - start)
    return [1e3 * statistics.median(times[name]) for name in steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    from nona.data import load_dataset

    words = [str(w) for w in load_dataset("vader-valence").inputs]
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} thread(s), CPU time per step, median of {args.repeats}")
    print("\n| top | head | b | before (ms) | now (ms) | speed-up |\n| --- | --- | ---: | ---: | ---: | ---: |")
    runs = [("dense", args.batch[0]), *[("nona", b) for b in args.batch[1:]]]
    for label, make in (
        ("EfficientNet-Lite0 last stage: channels-last → pixel rows", efficientnet_layouts),
        ("MiniLM last layer: padded → packed", lambda b: minilm_layouts(b, words)),
    ):
        for head, batch in runs:
            top, layouts, inputs = make(batch)
            before, now = time_pair(top, layouts, inputs, head, batch, args.repeats)
            print(f"| {label} | {head} | {batch} | {before:.1f} | {now:.1f} | {before / now:.2f}x |")


if __name__ == "__main__":
    main()
