"""One fine-tuning step of EfficientNet-Lite0's last stage on cached activations, NCHW against channels-last.

What the quick profile's digits-rotation runs repeat: the last stage, the 1x1
head convolution and pooling (``EfficientNetLite0.top(1)``), the authors'
projector and a head, on the cached activations that enter the last stage
(64 x 64 images: ``(b, 192, 2, 2)`` maps), forward + backward + Adam update.
``channels-last`` is what ``top(1)`` runs (its input is converted to NHWC);
``NCHW`` calls the same modules on the maps as they are cached. Both are timed
alternately; each time is the median of ``--repeats`` steps after warm-up, in
CPU time of this process (``OMP_NUM_THREADS=1`` recommended). Prints a
Markdown table.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/finetune_step.py [--repeats 20] [--batch 64 256]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nona.backbones import get_backbone
from nona.heads import NONA, DenseHead, Projector
from nona.softstep import SoftStep


def make_step(top: torch.nn.Module, nchw: bool, head: str, batch: int):
    """A closure running one training step of top + projector + head on fixed random maps."""
    torch.manual_seed(0)
    projector = Projector(top.out_dim, 25)
    softstep = SoftStep(fn="s2", params="pointwise", dim=25)
    model_head = DenseHead(25) if head == "dense" else NONA("l2", softstep=softstep)
    optimiser = torch.optim.Adam(
        [
            {"params": list(top.parameters()), "lr": 1e-4},
            {"params": [*projector.parameters(), *model_head.parameters()], "lr": 1e-3},
        ]
    )
    maps, labels = torch.randn(batch, 192, 2, 2), torch.rand(batch)

    def features(h: torch.Tensor) -> torch.Tensor:
        if nchw:  # the same modules as top.forward, without its conversion to channels-last
            return top.global_pool(top.bn2(top.conv_head(top.stages(h))))
        return top(h)

    def step() -> None:
        optimiser.zero_grad()
        z = projector(features(maps))
        prediction = model_head(z) if head == "dense" else model_head(z, z, labels, exclude_self=True)
        torch.nn.functional.mse_loss(prediction, labels).backward()
        optimiser.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    top = get_backbone("efficientnet_lite0", image_size=64).top(1).train()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} thread(s), CPU time per step, median of {args.repeats}")
    print("\n| head | b | NCHW (ms) | channels-last (ms) | speed-up |\n| --- | ---: | ---: | ---: | ---: |")
    for head, batch in [("dense", args.batch[0]), *[("nona", b) for b in args.batch[1:]]]:
        steps = {layout: make_step(top, layout == "NCHW", head, batch) for layout in ("NCHW", "channels-last")}
        times: dict[str, list[float]] = {layout: [] for layout in steps}
        for _ in range(3):
            for step in steps.values():
                step()
        for _ in range(args.repeats):
            for layout, step in steps.items():
                start = time.process_time()
                step()
                times[layout].append(time.process_time() - start)
        nchw, last = (1e3 * statistics.median(times[k]) for k in ("NCHW", "channels-last"))
        print(f"| {head} | {batch} | {nchw:.1f} | {last:.1f} | {nchw / last:.2f}x |")


if __name__ == "__main__":
    main()
