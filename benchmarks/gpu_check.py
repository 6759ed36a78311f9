"""`make gpu-check`: the smoke pipeline, then end-to-end fine-tuning on CUDA, with throughput and memory.

1. Runs the smoke profile's pipeline (every notebook, tiny settings) into
   ``build/gpu-check/smoke`` (``NONA_BUILD``), so a GPU machine is checked
   with the same code as the CPU build.
2. Fine-tunes EfficientNet-Lite0 end to end (``trainable_layers="all"``) with
   the paper's two heads on digits-rotation (seed 0) on ``cuda``, writing run
   records under ``build/gpu-check/runs``; then times training steps and
   inference of MiniLM end to end on vader-valence.
3. Prints one Markdown table: training and inference throughput (images/s,
   words/s), peak GPU memory, and a rough estimate of the paper profile's
   GPU-hours (how it is estimated is printed with it).

Without CUDA it stops at once with exit status 1 and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Steps timed per throughput figure after warm-up steps, and epochs assumed per run for the estimate.
TIMED_STEPS = 20
WARMUP_STEPS = 3


def require_cuda() -> None:
    """Exit with a clear message unless a CUDA GPU is usable."""
    import torch

    if not torch.cuda.is_available():
        sys.exit(
            "gpu-check needs a CUDA GPU, and torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Run it on a GPU machine; "
            "the CPU build is `make book`."
        )


def smoke_pipeline(build: Path) -> float:
    """Run the smoke profile's pipeline into ``build``; returns its wall seconds."""
    started = time.perf_counter()
    env = {**os.environ, "NONA_BUILD": str(build)}
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        "profiles/smoke",
        "--cores",
        "all",
        "--nolock",
        "--quiet",
        "rules",
    ]
    done = subprocess.run(command, cwd=REPO, env=env)
    if done.returncode != 0:
        sys.exit(f"the smoke pipeline failed (exit {done.returncode}); see the logs under {build}/logs")
    return time.perf_counter() - started


def _timed_steps(model, batches, config) -> float:
    """Seconds per optimiser step (forward, backward, update) over TIMED_STEPS steps, after warm-up."""
    import torch

    from nona.train import _optimizer

    optimizer = _optimizer(model, config)
    model.train()
    times = []
    for i, (x, y) in enumerate(batches):
        torch.cuda.synchronize()
        started = time.perf_counter()
        loss = torch.mean((model.train_step_prediction(x, y) - y) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.cuda.synchronize()
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - started)
    return sum(times) / len(times)


def throughput(dataset: str, batch_size: int) -> dict:
    """Training and inference throughput of end-to-end fine-tuning on ``dataset`` (examples/s and words/s for text)."""
    import numpy as np
    import torch

    from nona.devices import move_to
    from nona.pipeline.experiment import load_features
    from nona.train import RegressionModel, TrainConfig, embed_all, take_rows

    inputs, labels, backbone = load_features(dataset, "all")
    config = TrainConfig(head="nona", batch_size=batch_size, device="cuda", trainable_layers="all", backbone_lr=1e-5)
    model = RegressionModel(backbone.out_dim, config, backbone=backbone).to("cuda")
    y = torch.as_tensor((labels - labels.min()) / (labels.max() - labels.min()), dtype=torch.float32)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(WARMUP_STEPS + TIMED_STEPS):
        idx = rng.choice(len(labels), batch_size, replace=False)
        batches.append((move_to(take_rows(inputs, idx), "cuda"), y[idx].to("cuda")))
    torch.cuda.reset_peak_memory_stats()
    step = _timed_steps(model, batches, config)
    n = min(len(labels), 4096)
    subset = inputs.subset(np.arange(n))
    embed_all(model, inputs.subset(np.arange(min(n, 256))), batch_size=256)  # warm-up
    torch.cuda.synchronize()
    started = time.perf_counter()
    embed_all(model, subset, batch_size=256)
    torch.cuda.synchronize()
    inference = n / (time.perf_counter() - started)
    out = {
        "dataset": dataset,
        "train_per_s": batch_size / step,
        "infer_per_s": inference,
        "ms_per_step": 1e3 * step,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    if backbone.modality == "text":
        words = np.mean([len(str(t).split()) for t in inputs.inputs])
        out.update(train_words_per_s=out["train_per_s"] * words, infer_words_per_s=inference * words)
    return out


def fine_tune_digits(out: Path) -> dict:
    """The paper's two heads with EfficientNet-Lite0 fine-tuned end to end on digits-rotation, seed 0, on cuda."""
    import torch

    from nona.pipeline.experiment import train_dataset
    from nona.train import TrainConfig

    torch.cuda.reset_peak_memory_stats()
    config = TrainConfig(device="cuda", trainable_layers="all", backbone_lr=1e-5, max_epochs=60, patience=10)
    records = train_dataset("digits-rotation", "gpu-check", [0], ["dense", "nona"], config, out / "digits-rotation")
    return {
        "records": {
            r.arm: {k: r.data[k] for k in ("test_mse", "knn_test_mse", "epochs", "train_seconds", "seconds_per_step")}
            for r in records
        },
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }


def paper_gpu_hours(image_per_s: float, text_per_s: float, epochs: int = 50, seeds: int = 10, arms: int = 5) -> float:
    """Rough GPU-hours of the paper profile: every training example of every dataset, ``epochs`` x ``seeds`` x ``arms``.

    Images and audio at the image rate, texts at the text rate measured here
    (the paper's backbones are larger than EfficientNet-Lite0 and MiniLM, so
    this is a lower bound of the order of magnitude); validation adds about a
    quarter (the training set is embedded once per epoch).
    """
    from nona.data import get_manifest
    from nona.pipeline.config import load_profile

    seconds = 0.0
    for dataset in load_profile("paper")["datasets"]:
        manifest = get_manifest(dataset)
        n_train = 0.8 * 0.85 * manifest["n_samples"]
        rate = text_per_s if manifest["modality"] == "text" else image_per_s
        seconds += 1.25 * n_train * epochs * seeds * arms / rate
    return seconds / 3600


def main(argv: list[str] | None = None) -> int:
    """Run the checks and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", default=str(REPO / "build" / "gpu-check"))
    parser.add_argument("--skip-smoke", action="store_true", help="skip the smoke pipeline")
    args = parser.parse_args(argv)
    require_cuda()
    import torch

    build = Path(args.build)
    smoke_seconds = None if args.skip_smoke else smoke_pipeline(build / "smoke")
    digits = fine_tune_digits(build / "runs")
    image = throughput("digits-rotation", batch_size=128)
    text = throughput("vader-valence", batch_size=128)
    hours = paper_gpu_hours(image["train_per_s"], text["train_per_s"])
    date = time.strftime("%Y-%m-%d", time.gmtime())
    print(f"\n### GPU check, {date}: {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
    print("| measure | value |\n|---|---|")
    if smoke_seconds is not None:
        print(f"| smoke pipeline (wall) | {smoke_seconds:.0f} s |")
    for arm, r in digits["records"].items():
        print(
            f"| digits-rotation, {arm}, end to end: test MSE ×10³ (k-NN) | "
            f"{1e3 * r['test_mse']:.2f} ({1e3 * r['knn_test_mse']:.2f}), "
            f"{r['epochs']} epochs, {r['train_seconds']:.0f} s, {1e3 * r['seconds_per_step']:.1f} ms/step |"
        )
    print(f"| EfficientNet-Lite0 (64 px) + NONA, training, batch 128 | {image['train_per_s']:.0f} images/s |")
    print(f"| EfficientNet-Lite0 (64 px), inference | {image['infer_per_s']:.0f} images/s |")
    print(
        f"| MiniLM + NONA, training, batch 128 | {text['train_per_s']:.0f} texts/s, "
        f"{text['train_words_per_s']:.0f} words/s |"
    )
    print(f"| MiniLM, inference | {text['infer_per_s']:.0f} texts/s, {text['infer_words_per_s']:.0f} words/s |")
    print(
        f"| peak GPU memory (digits fine-tuning; throughput runs) | {digits['peak_gib']:.2f} GiB; "
        f"{max(image['peak_gib'], text['peak_gib']):.2f} GiB |"
    )
    print(f"| paper profile, rough estimate | {hours:.1f} GPU-hours |")
    print(
        "\nEstimate: every training example of the paper's ten datasets x 50 epochs x 10 seeds x 5 arms, "
        "plus a quarter for validation, at the rates above (images and audio at the image rate); "
        "the paper's backbones are larger, so read "
        "it as an order of magnitude."
    )
    (build / "gpu-check.json").write_text(
        json.dumps(
            {
                "date": date,
                "device": torch.cuda.get_device_name(0),
                "smoke_seconds": smoke_seconds,
                "digits": digits,
                "image": image,
                "text": text,
                "paper_gpu_hours": hours,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
