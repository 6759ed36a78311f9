"""What fine-tuning a backbone's top adds to one dataset: test MSE and training time, frozen vs fine-tuned.

Trains the paper's two heads (Dense and NONA, with the configuration the
profile's ablation selected) on ``--dataset`` for ``--seeds``, once with the
backbone frozen and once with its last ``--trainable-layers`` blocks
fine-tuned, with the profile's other fine-tuning settings for that dataset
(epochs, patience, backbone learning rate; its overrides applied), one thread
each, as a pipeline job would. Prints the
test MSE of the four regressors (mean ± std over the seeds) and the training
seconds, so that what a setting costs the build can be weighed against what
it changes. The quick profile uses it for the datasets it does not fine-tune
(vader-valence: MiniLM's last layer).

Records go to ``--out`` (``<out>/fine-tuned`` and ``<out>/frozen``, the
pipeline's layout) and are written atomically; a run whose record exists with
the same settings is not trained again, so an interrupted benchmark resumes.
Needs the ablation's selection (``make book`` first).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/finetune_cost.py [--dataset vader-valence] [--seeds 0 1 2]``
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
    args = parser.parse_args()
    settings = load_profile(args.profile)
    layers = args.trainable_layers if args.trainable_layers == "all" else int(args.trainable_layers)
    finetune = training_settings(settings, args.dataset)
    base = base_config({**finetune, "trainable_layers": layers, "trainable_arms": list(FROZEN_COMPARISON_ARMS)})
    selection = BUILD_DIR / "ablation" / args.profile / settings["ablation"]["dataset"] / "selected.json"
    out = args.out or BUILD_DIR / "benchmarks" / "finetune-cost"
    tuned_dir, frozen_dir = out / "fine-tuned", out / "frozen"
    train_dataset(
        args.dataset,
        args.profile,
        args.seeds,
        list(FROZEN_COMPARISON_ARMS),
        base,
        tuned_dir / args.dataset,
        head_configs=selected_head_configs(selection),
        frozen_dir=frozen_dir / args.dataset,
        trainable_arms=list(FROZEN_COMPARISON_ARMS),
    )
    scores, _ = frozen_vs_finetuned(tuned_dir, frozen_dir, [args.dataset])
    print(
        f"\n{args.dataset}, profile {args.profile}, seeds {args.seeds}, trainable_layers={layers}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    )
    print("\nTest MSE x10^3, mean ± std over the seeds\n")
    wide = scores.pivot_table(index="method", columns="backbone", values=["mean", "std"], sort=False)
    print("| regressor | frozen | fine-tuned | change |\n| --- | ---: | ---: | ---: |")
    for method in wide.index:
        frozen, tuned = (mean_std(wide["mean", k][method], wide["std", k][method]) for k in ("frozen", "fine-tuned"))
        change = wide[("mean", "fine-tuned")][method] / wide[("mean", "frozen")][method] - 1
        print(f"| {method} | {frozen} | {tuned} | {change:+.0%} |")
    print("\nTraining time (fit: training steps and each epoch's validation), seconds per run\n")
    print("| head | frozen | fine-tuned | ms per step, frozen | ms per step, fine-tuned |")
    print("| --- | ---: | ---: | ---: | ---: |")
    added = 0.0
    for arm in FROZEN_COMPARISON_ARMS:
        runs = {
            label: [json.loads(record_path(folder / args.dataset, arm, s).read_text()) for s in args.seeds]
            for label, folder in (("frozen", frozen_dir), ("fine-tuned", tuned_dir))
        }
        seconds = {label: sum(r["train_seconds"] for r in rs) / len(rs) for label, rs in runs.items()}
        per_step = {label: 1e3 * sum(r["seconds_per_step"] for r in rs) / len(rs) for label, rs in runs.items()}
        added += len(args.seeds) * (seconds["fine-tuned"] - seconds["frozen"])
        print(
            f"| {runs['fine-tuned'][0]['method']} "
            f"| {seconds['frozen']:.0f} | {seconds['fine-tuned']:.0f} "
            f"| {per_step['frozen']:.1f} | {per_step['fine-tuned']:.1f} |"
        )
    print(f"\nFine-tuning adds {added:.0f} training seconds over {len(args.seeds)} seeds (job-seconds of a build).")


if __name__ == "__main__":
    main()
