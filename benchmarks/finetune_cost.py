"""What fine-tuning a backbone's top adds to one dataset: test MSE and training time, frozen vs fine-tuned.

Trains the paper's two heads (Dense and NONA, with the configuration the
profile's ablation selected) on ``--dataset`` for ``--seeds``, once with the
backbone frozen and once with its last ``--trainable-layers`` blocks
fine-tuned, with the profile's other fine-tuning settings for that dataset
(epochs, patience, backbone learning rate; its overrides applied), one thread
each, as a pipeline job would. Prints the
test MSE of the four regressors (mean ± std over the seeds) and the training
seconds, so that what a setting costs the build can be weighed against what
it changes. The quick profile's schedule for vader-valence (MiniLM's last layer)
was chosen with it.

``--schedules`` picks how the fine-tuned runs start. ``scratch`` is the
paper's: the pretrained backbone with a new projector and head, for the
profile's epochs. ``warm`` is linear probing then fine-tuning (LP-FT): the
projector and head of the same seed's frozen run (which keeps them), the
top's output standardised as the frozen features were, then at most
``--warm-epochs`` epochs with patience ``--warm-patience``: the pipeline's
``warm_start`` setting, which the quick profile uses for vader-valence.

Records go to ``--out`` (``<out>/fine-tuned``, ``<out>/frozen`` and
``<out>/warm-started``, the pipeline's layout) and are written atomically; a
run whose record exists with the same settings is not trained again, so an
interrupted benchmark resumes. Needs the ablation's selection (``make book`` first).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/finetune_cost.py [--dataset vader-valence] [--seeds 0 1 2]
[--schedules scratch warm] [--warm-epochs 15] [--warm-patience 5]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nona.io.paths import BUILD_DIR
from nona.paper.tables import mean_std
from nona.pipeline.config import load_profile, training_settings
from nona.pipeline.experiment import (
    FROZEN_COMPARISON_ARMS,
    base_config,
    frozen_vs_finetuned,
    selected_head_configs,
    train_dataset,
)
from nona.pipeline.records import record_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="vader-valence")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trainable-layers", default="1", help="blocks to fine-tune: a count or 'all'")
    parser.add_argument("--out", type=Path, default=None, help="default: build/benchmarks/finetune-cost")
    parser.add_argument("--schedules", nargs="+", default=["scratch"], choices=["scratch", "warm"])
    parser.add_argument("--warm-epochs", type=int, default=15, help="most epochs of a warm-started run")
    parser.add_argument("--warm-patience", type=int, default=5, help="patience of a warm-started run")
    args = parser.parse_args()
    settings = load_profile(args.profile)
    layers = args.trainable_layers if args.trainable_layers == "all" else int(args.trainable_layers)
    finetune = training_settings(settings, args.dataset)
    base = base_config({**finetune, "trainable_layers": layers, "trainable_arms": list(FROZEN_COMPARISON_ARMS)})
    selection = BUILD_DIR / "ablation" / args.profile / settings["ablation"]["dataset"] / "selected.json"
    out = args.out or BUILD_DIR / "benchmarks" / "finetune-cost"
    tuned_dir, frozen_dir, warm_dir = out / "fine-tuned", out / "frozen", out / "warm-started"
    head_configs = selected_head_configs(selection)
    scratch = "scratch" in args.schedules
    # The frozen runs, and with the scratch schedule the fine-tuned runs too, as the pipeline trains them.
    train_dataset(
        args.dataset,
        args.profile,
        args.seeds,
        list(FROZEN_COMPARISON_ARMS) if scratch else [],
        base,
        tuned_dir / args.dataset,
        head_configs=head_configs,
        frozen_dir=frozen_dir / args.dataset,
        trainable_arms=list(FROZEN_COMPARISON_ARMS),
    )
    if "warm" in args.schedules:
        train_dataset(
            args.dataset,
            args.profile,
            args.seeds,
            list(FROZEN_COMPARISON_ARMS),
            base,
            warm_dir / args.dataset,
            head_configs=head_configs,
            frozen_dir=frozen_dir / args.dataset,
            trainable_arms=list(FROZEN_COMPARISON_ARMS),
            warm_start={"max_epochs": args.warm_epochs, "patience": args.warm_patience},
        )
    labels = {"fine-tuned": tuned_dir} if scratch else {}
    labels.update({"warm-started": warm_dir} if "warm" in args.schedules else {})
    first, *others = labels
    scores, _ = frozen_vs_finetuned(labels[first], frozen_dir, [args.dataset], more={k: labels[k] for k in others})
    scores["backbone"] = scores["backbone"].replace({"fine-tuned": first})
    print(
        f"\n{args.dataset}, profile {args.profile}, seeds {args.seeds}, trainable_layers={layers}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
        + (
            f"; warm-started: at most {args.warm_epochs} epochs, patience {args.warm_patience}"
            if "warm" in labels
            else ""
        )
    )
    print("\nTest MSE x10^3, mean ± std over the seeds; change against frozen\n")
    wide = scores.pivot_table(index="method", columns="backbone", values=["mean", "std"], sort=False)
    print("| regressor | frozen | " + " | ".join(f"{k} | change" for k in labels) + " |")
    print("| --- | ---: |" + " ---: | ---: |" * len(labels))
    for method in wide.index:
        cells = [mean_std(wide["mean", "frozen"][method], wide["std", "frozen"][method])]
        for k in labels:
            change = wide[("mean", k)][method] / wide[("mean", "frozen")][method] - 1
            cells += [mean_std(wide["mean", k][method], wide["std", k][method]), f"{change:+.0%}"]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print("\nTraining time (fit: training steps and each epoch's validation), seconds per run\n")
    print(
        "| head | frozen | "
        + " | ".join(labels)
        + " | ms per step, frozen | "
        + " | ".join(f"ms per step, {k}" for k in labels)
        + " |"
    )
    print("| --- | ---: |" + " ---: |" * (2 * len(labels) + 1))
    added = dict.fromkeys(labels, 0.0)
    for arm in FROZEN_COMPARISON_ARMS:
        runs = {
            label: [json.loads(record_path(folder / args.dataset, arm, s).read_text()) for s in args.seeds]
            for label, folder in (("frozen", frozen_dir), *labels.items())
        }
        seconds = {label: sum(r["train_seconds"] for r in rs) / len(rs) for label, rs in runs.items()}
        per_step = {label: 1e3 * sum(r["seconds_per_step"] for r in rs) / len(rs) for label, rs in runs.items()}
        for k in labels:
            added[k] += len(args.seeds) * (seconds[k] - seconds["frozen"])
        print(
            f"| {runs['frozen'][0]['method']} | "
            + " | ".join(f"{seconds[k]:.0f}" for k in seconds)
            + " | "
            + " | ".join(f"{per_step[k]:.1f}" for k in per_step)
            + " |"
        )
    for k, seconds_added in added.items():
        print(
            f"\n{k}: adds {seconds_added:.0f} training seconds over {len(args.seeds)} seeds (job-seconds of a build)."
        )


if __name__ == "__main__":
    main()
