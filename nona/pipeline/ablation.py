"""The paper's serialized NONA ablation and the dense-head grid (Section 6.1, Appendix B).

The NONA ablation runs four stages in order; each stage varies one setting
and fixes every earlier stage's winner (until a setting is ablated, SoftStep
is off, the batch size is 128 and the embedding dimension 50):

1. similarity: -L2, -L1, cos, dot (plus ``rbf`` of the follow-up paper, an
   extension that is run and shown but never selected);
2. SoftStep: none, S1/S2 with global or pointwise parameters;
3. batch size: 32, 64, 128, 256;
4. embedding dimension: 25, 50, 100.

The dense head gets the full grid embedding dimension x batch size (B.2).
Every (stage, candidate, seed) is one run with its own record
``<root>/<stage>/<candidate>/seed<k>.json``; a stage's winner is the candidate
with the lowest mean *validation* MSE over the seeds and is written to
``<root>/<stage>/winner.json``. Test MSE is recorded for the tables but never
read by the selection. The Snakefile makes each run a job, so a stage's jobs
start only once the previous stage's winner file exists.

Command line (what the pipeline's jobs call)::

    python -m nona.pipeline.ablation features --dataset digits-rotation --out F.pt
    python -m nona.pipeline.ablation run --root R --stage softstep --seed 0 ...   # every candidate
    python -m nona.pipeline.ablation select --root R --stage softstep --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nona.io.atomic import atomic_path, write_json
from nona.paper.reference import PAPER_NONA_CHOICE
from nona.selection import SELECTION_RTOL, select_best

# Settings of the NONA runs before any stage has chosen (Appendix B.1).
NONA_START = {"head": "nona", "similarity": "l2", "softstep": "none", "batch_size": 128, "embed_dim": 50}
# Relative tolerance under which two mean validation MSEs count as tied: the
# companion's one tie rule (nona.selection, 1e-6; ties go to the declared order).
TIE_RTOL = SELECTION_RTOL
# What a winner's margin over the runner-up is compared with (see noise_check).
SPREAD_RULE = "standard error of the difference of the two mean validation MSEs over the seeds, sqrt(s1^2/n + s2^2/n)"


@dataclass(frozen=True)
class Stage:
    """One step of the ablation: candidates (label -> config overrides) and which of them are extensions."""

    name: str
    title: str
    candidates: dict[str, dict[str, Any]]
    extensions: tuple[str, ...] = ()
    # Whether the candidates build on the previous NONA stage's winner.
    serial: bool = True
    # A stage outside the NONA series whose candidates start from another stage's winner.
    builds_on: str | None = None

    def labels(self) -> list[str]:
        """Candidate labels in the stage's declared order (the order that breaks ties)."""
        return list(self.candidates)

    def eligible(self) -> list[str]:
        """Labels the winner may be chosen from: the paper's candidates, not the extensions."""
        return [label for label in self.candidates if label not in self.extensions]


def _single(field: str, values: list) -> dict[str, dict[str, Any]]:
    return {str(value): {field: value} for value in values}


def dense_label(embed_dim: int, batch_size: int) -> str:
    """The label of one cell of the dense grid, e.g. ``d25-b32``."""
    return f"d{embed_dim}-b{batch_size}"


# The paper's candidates, in the paper's order; a profile may run a subset.
PAPER_VALUES: dict[str, list] = {
    "similarity": ["l2", "l1", "cos", "dot", "rbf"],
    "softstep": ["none", "s1-global", "s1-pointwise", "s2-global", "s2-pointwise"],
    "batch_size": [32, 64, 128, 256],
    "embed_dim": [25, 50, 100],
    "dense_embed_dim": [25, 50, 100],
    "dense_batch_size": [32, 64, 128, 256],
    # Not in the paper: the authors' projector (tanh, BatchNorm) against a Linear-ReLU-Linear one.
    "projector": ["tanh", "relu"],
}
# Candidates that are run and shown but never selected.
EXTENSIONS = {"similarity": ("rbf",), "projector": ("relu",)}
NONA_STAGE_TITLES = {
    "similarity": "Stage 1: similarity measure",
    "softstep": "Stage 2: SoftStep",
    "batch_size": "Stage 3: batch size",
    "embed_dim": "Stage 4: embedding dimension",
    "projector": "Extension stage: projector (the authors' tanh MLP; ReLU shown, not eligible)",
}
DENSE_PROJECTOR_TITLE = "Extension stage: the dense head's projector (its grid winner; ReLU shown, not eligible)"


def ablation_plan(values: dict[str, list] | None = None) -> list[Stage]:
    """The four NONA stages and the dense grid, restricted to ``values`` (stage -> candidates) where given."""
    chosen = {**PAPER_VALUES, **(values or {})}
    for key, subset in chosen.items():
        if key not in PAPER_VALUES:
            raise ValueError(f"unknown ablation setting {key!r}; valid settings are: {', '.join(PAPER_VALUES)}")
        unknown = [v for v in subset if v not in PAPER_VALUES[key]]
        if unknown or not subset:
            raise ValueError(
                f"ablation values {subset!r} for {key!r} must be a non-empty subset of {PAPER_VALUES[key]!r}"
            )
    stages = []
    for name, title in NONA_STAGE_TITLES.items():
        ordered = [v for v in PAPER_VALUES[name] if v in chosen[name]]
        extensions = tuple(str(v) for v in EXTENSIONS.get(name, ()) if v in ordered)
        if len(extensions) == len(ordered):
            raise ValueError(
                f"stage {name!r} needs at least one of the paper's candidates besides the extensions {extensions}"
            )
        stages.append(Stage(name, title, _single(name, ordered), extensions))
    grid = {
        dense_label(e, b): {"head": "dense", "embed_dim": e, "batch_size": b}
        for e in PAPER_VALUES["dense_embed_dim"]
        if e in chosen["dense_embed_dim"]
        for b in PAPER_VALUES["dense_batch_size"]
        if b in chosen["dense_batch_size"]
    }
    stages.append(Stage("dense-grid", "Dense head: embedding dimension x batch size", grid, serial=False))
    if "relu" in chosen["projector"]:
        # The dense grid's winner with the ReLU projector: whether the projector changes NONA vs Dense.
        # "tanh" adds nothing to the winner's configuration, so its runs are the grid's own (reused).
        stages.append(
            Stage(
                "dense-projector",
                DENSE_PROJECTOR_TITLE,
                {"tanh": {}, "relu": {"projector": "relu"}},
                extensions=("relu",),
                serial=False,
                builds_on="dense-grid",
            )
        )
    return stages


def paper_choice_stage() -> Stage:
    """The paper's chosen NONA configuration, run on the same seeds for the comparison (not a selection stage)."""
    return Stage("paper-choice", "The paper's choice", {"paper": {"head": "nona", **PAPER_NONA_CHOICE}}, serial=False)


def get_stage(plan: list[Stage], name: str) -> Stage:
    """The stage called ``name`` (``paper-choice`` included)."""
    for stage in [*plan, paper_choice_stage()]:
        if stage.name == name:
            return stage
    raise ValueError(
        f"unknown ablation stage {name!r}; valid stages are: {', '.join(s.name for s in plan)}, paper-choice"
    )


def previous_stage(plan: list[Stage], name: str) -> Stage | None:
    """The stage whose winner ``name`` builds on: the previous NONA stage, or a stage's ``builds_on``.

    None for the first NONA stage and for the independent ones.
    """
    stage = next((s for s in plan if s.name == name), None)
    if stage is not None and stage.builds_on is not None:
        return get_stage(plan, stage.builds_on)
    serial = [s for s in plan if s.serial]
    names = [s.name for s in serial]
    if name not in names or names.index(name) == 0:
        return None
    return serial[names.index(name) - 1]


def candidate_record_path(root: str | Path, stage: str, label: str, seed: int) -> Path:
    """Where the record of one (stage, candidate, seed) run lives."""
    return Path(root) / stage / label / f"seed{seed}.json"


def winner_path(root: str | Path, stage: str) -> Path:
    """Where a stage's selection is written."""
    return Path(root) / stage / "winner.json"


def selected_path(root: str | Path) -> Path:
    """Where the configuration chosen for the main comparison (both heads) is written."""
    return Path(root) / "selected.json"


def candidate_config(plan: list[Stage], stage_name: str, label: str, root: str | Path) -> dict[str, Any]:
    """The full head configuration of one candidate: start settings, earlier winners, then the candidate's overrides."""
    stage = get_stage(plan, stage_name)
    if label not in stage.candidates:
        raise ValueError(
            f"{label!r} is not a candidate of stage {stage_name!r}; candidates are: {', '.join(stage.labels())}"
        )
    base: dict[str, Any] = dict(NONA_START) if stage.serial else {}
    before = previous_stage(plan, stage_name)
    if before is not None:
        path = winner_path(root, before.name)
        if not path.exists():
            raise FileNotFoundError(
                f"stage {stage_name!r} builds on the winner of {before.name!r}, but {path} does not exist; "
                f"run and select stage {before.name!r} first"
            )
        base.update(json.loads(path.read_text())["config"])
    return {**base, **stage.candidates[label]}


def difference_spread(a: dict, b: dict) -> float | None:
    """Standard error of the difference of two candidates' mean validation MSEs (SPREAD_RULE).

    ``a`` and ``b`` are stage rows (``val_std``, ``n_seeds``); None when either has one seed.
    """
    if min(a["n_seeds"], b["n_seeds"]) < 2:
        return None
    return math.sqrt(a["val_std"] ** 2 / a["n_seeds"] + b["val_std"] ** 2 / b["n_seeds"])


def noise_check(table: list[dict], winner: str, tied: list[str] | None = None) -> dict[str, Any]:
    """The winner's margin over the runner-up and whether it lies within the seed noise.

    ``table`` holds a stage's rows (``label``, ``extension``, ``val_mean``,
    ``val_std``, ``n_seeds``). The runner-up is the eligible candidate (not an
    extension) of lowest mean validation MSE other than the winner;
    ``margin = runner-up's mean - winner's mean``. The spread is the standard
    error of that difference over the seeds, ``sqrt(s_w^2 / n + s_r^2 / n)``
    with each candidate's sample standard deviation (ddof 1) over its n seeds.
    The winner is *within noise* when it is tied or its margin is smaller than
    the spread. With one eligible candidate there is no runner-up (all None,
    not within noise); with one seed the spread is unknown (None).
    """
    rows = {row["label"]: row for row in table}
    eligible = [row for row in table if not row["extension"]]
    others = [row for row in eligible if row["label"] != winner]
    if not others:
        return {"runner_up": None, "margin": None, "spread": None, "spread_rule": SPREAD_RULE, "within_noise": False}
    # The runner-up by the same tie rule as the winner (first declared among tied means).
    runner_label = select_best(
        [row["label"] for row in others], [row["val_mean"] for row in others], rtol=TIE_RTOL
    ).chosen
    runner = rows[runner_label]
    margin = runner["val_mean"] - rows[winner]["val_mean"]
    spread = difference_spread(rows[winner], runner)
    within = len(tied or [winner]) > 1 or (spread is not None and margin < spread)
    return {
        "runner_up": runner["label"],
        "margin": margin,
        "spread": spread,
        "spread_rule": SPREAD_RULE,
        "within_noise": within,
    }


def select_winner(records: list[dict], stage: Stage, seeds: list[int]) -> dict[str, Any]:
    """The stage's winner by mean validation MSE over ``seeds``, by the rule of :mod:`nona.selection`.

    Means within a relative ``TIE_RTOL`` (1e-6) of the lowest are tied, and a
    tie goes to the earliest candidate in the stage's declared order (the
    paper's order; extensions are never eligible). Every candidate must have a
    record for every seed, so the means compare the same splits. Test MSE is
    tabulated but never used to choose. The result also records the winner's
    margin over the runner-up and the seed spread it is compared with
    (:func:`noise_check`), so a winner inside the noise can be flagged.
    """
    by_key = {}
    for record in records:
        key = (record["label"], record["seed"])
        if key in by_key:
            raise ValueError(f"two records for candidate {key[0]!r}, seed {key[1]} of stage {stage.name!r}")
        by_key[key] = record
    rows = []
    for label in stage.labels():
        missing = [s for s in seeds if (label, s) not in by_key]
        if missing:
            raise ValueError(
                f"stage {stage.name!r}: candidate {label!r} has no record for seed(s) {missing}; "
                "every candidate needs every seed before a winner can be chosen"
            )
        val = [float(by_key[(label, s)]["val_mse"]) for s in seeds]
        test = [float(by_key[(label, s)]["test_mse"]) for s in seeds]
        if not all(math.isfinite(v) for v in val):
            raise ValueError(
                f"stage {stage.name!r}: candidate {label!r} has a non-finite validation MSE {val}; "
                "the run diverged, fix it before selecting"
            )
        rows.append(
            {
                "label": label,
                "extension": label in stage.extensions,
                "val_mean": float(pd.Series(val).mean()),
                "val_std": float(pd.Series(val).std()),
                "test_mean": float(pd.Series(test).mean()),
                "test_std": float(pd.Series(test).std()),
                "n_seeds": len(seeds),
            }
        )
    eligible = [row for row in rows if not row["extension"]]
    choice = select_best(
        [row["label"] for row in eligible], [row["val_mean"] for row in eligible], rtol=TIE_RTOL, prefer="first"
    )
    tied = list(choice.tied)
    return {
        "stage": stage.name,
        "winner": choice.chosen,
        "tied": tied,
        "selected_by": "mean validation MSE",
        "tie_rule": f"means within a relative {TIE_RTOL:g} of the lowest are tied; "
        "a tie goes to the first in declared order",
        "seeds": list(seeds),
        "table": rows,
        **noise_check(rows, choice.chosen, tied),
    }


def read_stage_records(root: str | Path, stage: Stage, seeds: list[int]) -> list[dict]:
    """The run records of every candidate and seed of ``stage`` (a missing one is a clear error)."""
    records = []
    for label in stage.labels():
        for seed in seeds:
            path = candidate_record_path(root, stage.name, label, seed)
            if not path.exists():
                raise FileNotFoundError(
                    f"missing ablation run {path}; run the ablation jobs of stage {stage.name!r} first"
                )
            records.append(json.loads(path.read_text()))
    return records


def write_selection(root: str | Path, plan: list[Stage], stage_name: str, seeds: list[int]) -> dict[str, Any]:
    """Select the winner of ``stage_name`` from its records and write ``winner.json`` (atomically)."""
    stage = get_stage(plan, stage_name)
    records = read_stage_records(root, stage, seeds)
    selection = select_winner(records, stage, seeds)
    winner_record = next(r for r in records if r["label"] == selection["winner"])
    selection["config"] = winner_record["head_config"]
    write_json(winner_path(root, stage_name), selection)
    return selection


def write_selected(root: str | Path, plan: list[Stage], dataset: str, profile: str) -> dict[str, Any]:
    """Combine the last NONA stage's and the dense grid's winners into ``selected.json`` for the main comparison."""
    last = [s for s in plan if s.serial][-1]
    nona = json.loads(winner_path(root, last.name).read_text())["config"]
    dense = json.loads(winner_path(root, "dense-grid").read_text())["config"]
    selected = {
        "dataset": dataset,
        "profile": profile,
        "heads": {"nona": nona, "dense": dense},
        "selected_by": "mean validation MSE (serialized NONA ablation; full dense grid)",
    }
    write_json(selected_path(root), selected)
    return selected


def _reusable(root: Path, plan: list[Stage], config: dict, train: dict, seed: int, stage_name: str) -> Path | None:
    # A candidate that repeats an earlier stage's winner (e.g. SoftStep "none"
    # after the similarity stage) has already been trained on this seed with
    # the same settings: its record is copied instead of training again.
    for stage in plan:
        if stage.name == stage_name:
            continue
        for label in stage.labels():
            path = candidate_record_path(root, stage.name, label, seed)
            if not path.exists():
                continue
            record = json.loads(path.read_text())
            if record.get("head_config") == config and record.get("train") == train and "reused_from" not in record:
                return path
    return None


def train_candidate(
    root: str | Path,
    plan: list[Stage],
    stage_name: str,
    label: str,
    seed: int,
    dataset: str,
    profile: str,
    train: dict[str, Any],
    features: str | Path | None = None,
) -> dict[str, Any]:
    """Train one candidate on one seed and write its record; reuses an identical earlier run when there is one."""
    import torch

    from nona.io.provenance import now, run_provenance
    from nona.pipeline.experiment import load_features, train_and_evaluate
    from nona.train import TrainConfig, resolve_device

    root = Path(root)
    config = candidate_config(plan, stage_name, label, root)
    out = candidate_record_path(root, stage_name, label, seed)
    same = _reusable(root, plan, config, train, seed, stage_name)
    if same is not None:
        record = {
            **json.loads(same.read_text()),
            "stage": stage_name,
            "label": label,
            "reused_from": str(same.relative_to(root)),
        }
        write_json(out, record)
        return record
    train_settings, train = train, dict(train)
    backbone_trainable = bool(train.pop("backbone_trainable", False))
    train_config = TrainConfig(**{**train, **config, "seed": seed})
    backbone = None
    if features is not None:
        saved = torch.load(features, weights_only=False)
        inputs, labels = saved["inputs"], saved["labels"]
    else:
        inputs, labels, backbone = load_features(dataset, True if backbone_trainable else train_config.trainable_layers)
    started = now()
    record, _ = train_and_evaluate(inputs, labels, train_config, backbone, two_stage=False)
    record.update(
        {
            "dataset": dataset,
            "profile": profile,
            "stage": stage_name,
            "label": label,
            "seed": seed,
            "head_config": config,
            "train": train_settings,
            "config": {**train_config.to_dict(), "backbone_trainable": backbone_trainable},
            "provenance": run_provenance(str(resolve_device(train_config.device)), started),
        }
    )
    write_json(out, record)
    return record


def save_features(dataset: str, out: str | Path) -> Path:
    """Extract (or read from the cache) the frozen features of ``dataset`` once for all of the ablation's runs."""
    import torch

    from nona.pipeline.experiment import load_features

    inputs, labels, _ = load_features(dataset, backbone_trainable=False)
    with atomic_path(out) as tmp:
        torch.save({"inputs": inputs, "labels": labels}, tmp)
    return Path(out)


def collect_ablation(
    root: str | Path, plan: list[Stage], seeds: list[int], with_paper_choice: bool = True
) -> pd.DataFrame:
    """Every run of the ablation as one row per (stage, candidate, seed): validation and test MSE, epochs, seconds."""
    stages = [*plan, paper_choice_stage()] if with_paper_choice else plan
    rows = []
    for stage in stages:
        for record in read_stage_records(root, stage, seeds):
            rows.append(
                {
                    "stage": stage.name,
                    "label": record["label"],
                    "seed": record["seed"],
                    "extension": record["label"] in stage.extensions,
                    "val_mse": record["val_mse"],
                    "test_mse": record["test_mse"],
                    "epochs": record["epochs"],
                    "seconds": record["train_seconds"],
                    "reused": "reused_from" in record,
                    **{
                        k: record["head_config"].get(k)
                        for k in ("head", "similarity", "softstep", "batch_size", "embed_dim", "projector")
                    },
                }
            )
    return pd.DataFrame(rows)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nona.pipeline.ablation", description="Jobs of the serialized NONA ablation."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    features = sub.add_parser("features", help="save the frozen features of a dataset for the ablation's runs")
    features.add_argument("--dataset", required=True)
    features.add_argument("--out", required=True)
    for name in ("run", "select", "selected"):
        command = sub.add_parser(name)
        command.add_argument(
            "--root", required=True, help="the ablation's folder, e.g. build/ablation/quick/digits-rotation"
        )
        command.add_argument(
            "--values-json", default="{}", help="candidate values per setting, restricting the paper's"
        )
        if name == "run":
            command.add_argument("--stage", required=True)
            command.add_argument(
                "--candidate",
                nargs="*",
                default=None,
                help="candidates to train (default: every candidate of the stage, in declared order)",
            )
            command.add_argument("--seed", type=int, required=True)
            command.add_argument("--dataset", required=True)
            command.add_argument("--profile", required=True)
            command.add_argument(
                "--train-json", default="{}", help="TrainConfig settings shared by every run (epochs, device, ...)"
            )
            command.add_argument(
                "--features", default=None, help="features saved by the 'features' command (frozen backbone)"
            )
        if name == "select":
            command.add_argument("--stage", required=True)
            command.add_argument("--seeds", type=int, nargs="+", required=True)
        if name == "selected":
            command.add_argument("--dataset", required=True)
            command.add_argument("--profile", required=True)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point of the ablation's jobs."""
    args = _parse(argv)
    if args.command == "features":
        save_features(args.dataset, args.out)
        return 0
    plan = ablation_plan(json.loads(args.values_json))
    if args.command == "run":
        # One process trains every candidate of a stage on one seed: a process per
        # candidate spent more time importing torch than training (quick profile).
        for label in args.candidate or get_stage(plan, args.stage).labels():
            record = train_candidate(
                args.root,
                plan,
                args.stage,
                label,
                args.seed,
                args.dataset,
                args.profile,
                json.loads(args.train_json),
                args.features,
            )
            print(
                f"{args.stage}/{label} seed {args.seed}: validation MSE {record['val_mse']:.6f}"
                + (f" (reused {record['reused_from']})" if "reused_from" in record else "")
            )
    elif args.command == "select":
        selection = write_selection(args.root, plan, args.stage, args.seeds)
        print(f"{args.stage}: winner {selection['winner']} by {selection['selected_by']}")
    else:
        write_selected(args.root, plan, args.dataset, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
