"""The per-dataset experiment: records, resume, interruption, aggregation, and the smoke pipeline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import nona.pipeline.experiment as experiment
from nona.pipeline.experiment import train_dataset
from nona.pipeline.records import load_records, method_table, record_path, summary_table
from nona.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent
FAST = TrainConfig(max_epochs=2, patience=2, batch_size=64, device="cpu")


def test_records_resume_and_aggregate(tmp_path):
    logs = []
    table = method_table(
        train_dataset(
            "synthetic-2d", "smoke", [0, 1], ["dense", "nona"], FAST, tmp_path / "synthetic-2d", log=logs.append
        )
    )
    assert sorted(table.method.unique()) == [
        "Dense",
        "Dense + NNK",
        "Dense + k-NN",
        "Dense ⊕ k-NN",
        "NONA",
        "NONA + NNK",
        "NONA + k-NN",
    ]
    assert set(table[table.extension].method) == {"Dense + NNK", "NONA + NNK", "Dense ⊕ k-NN"}
    record = json.loads(record_path(tmp_path / "synthetic-2d", "nona", 1).read_text())
    assert record["split_sizes"] == {"train": 1360, "val": 240, "test": 400}
    assert record["config"]["softstep"] == "s2-pointwise" and record["config"]["seed"] == 1
    assert {"commit", "device", "started", "versions"} <= set(record["provenance"])
    assert 0 < record["test_mse"] < 1 and record["knn_params"]["n_neighbors"] in (3, 5, 7)
    assert record_path(tmp_path / "synthetic-2d", "nona", 1).with_suffix(".npz").exists()

    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "synthetic-2d").rglob("seed*.json")}
    logs.clear()
    again = method_table(
        train_dataset(
            "synthetic-2d", "smoke", [0, 1], ["dense", "nona"], FAST, tmp_path / "synthetic-2d", log=logs.append
        )
    )
    assert all("skipped" in line for line in logs) and len(logs) == 4
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "synthetic-2d").rglob("seed*.json")}
    assert again.equals(table)

    summary = summary_table(method_table(load_records(tmp_path)))
    assert set(summary.columns) == {"dataset", "method", "extension", "mean", "std", "n_seeds"}
    assert (summary.n_seeds == 2).all()


def test_head_configs_override_per_head_and_changed_settings_retrain(tmp_path):
    logs = []
    selected = {
        "nona": {"head": "nona", "similarity": "cos", "softstep": "none", "batch_size": 32, "embed_dim": 8},
        "dense": {"head": "dense", "batch_size": 128, "embed_dim": 4},
    }
    train_dataset(
        "synthetic-2d", "smoke", [0], ["dense", "nona"], FAST, tmp_path, log=logs.append, head_configs=selected
    )
    nona = json.loads(record_path(tmp_path, "nona", 0).read_text())["config"]
    dense = json.loads(record_path(tmp_path, "dense", 0).read_text())["config"]
    assert (nona["similarity"], nona["softstep"], nona["batch_size"], nona["embed_dim"]) == ("cos", "none", 32, 8)
    assert (dense["head"], dense["batch_size"], dense["embed_dim"]) == ("dense", 128, 4)

    logs.clear()
    train_dataset("synthetic-2d", "smoke", [0], ["dense", "nona"], FAST, tmp_path, log=logs.append)
    assert sum("other settings" in line for line in logs) == 2
    assert json.loads(record_path(tmp_path, "nona", 0).read_text())["config"]["embed_dim"] == FAST.embed_dim


def test_extension_runs_inherit_the_selected_sizes_and_are_marked(tmp_path):
    from nona.pipeline.experiment import arm_config

    selected = {
        "nona": {"head": "nona", "similarity": "cos", "softstep": "none", "batch_size": 32, "embed_dim": 8},
        "dense": {"head": "dense", "batch_size": 128, "embed_dim": 4},
    }
    nca = arm_config("nca", FAST, selected)
    assert (nca.head, nca.similarity, nca.softstep, nca.batch_size, nca.embed_dim) == (
        "nca",
        "rbf",
        "lu-pointwise",
        32,
        8,
    )
    weighted = arm_config("dense-knnw", FAST, selected)
    assert (weighted.head, weighted.loss_weights, weighted.batch_size, weighted.embed_dim) == ("dense", "knn", 128, 4)
    with pytest.raises(ValueError, match="unknown arm 'knn'"):
        arm_config("knn", FAST)

    table = method_table(
        train_dataset(
            "synthetic-2d",
            "smoke",
            [0],
            ["nca", "dknn", "dense-knnw"],
            FAST,
            tmp_path,
            log=lambda _: None,
            head_configs=selected,
        )
    )
    assert set(table.method) == {"NCA + SoftStep", "Diff. k-NN + SoftStep", "Dense, k-NN-weighted loss"}
    assert table.extension.all()
    record = json.loads(record_path(tmp_path, "dense-knnw", 0).read_text())
    assert record["config"]["loss_weights"] == "knn" and record["method"] == "Dense, k-NN-weighted loss"


def test_interrupted_run_leaves_no_partial_record(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "train_and_evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_dataset("synthetic-2d", "smoke", [0], ["nona"], FAST, tmp_path, log=lambda _: None)
    assert not list(tmp_path.rglob("*.json")) and not list(tmp_path.rglob("*.npz"))


def test_unknown_head_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown arm 'knn'; valid values are: dense, nona, nca, dknn, dense-knnw"):
        train_dataset("synthetic-2d", "smoke", [0], ["knn"], FAST, tmp_path)


def test_tabulating_without_records_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the fine-tuning step first"):
        method_table(load_records(tmp_path))
    with pytest.raises(FileNotFoundError, match="no run records for digits-rotation"):
        load_records(tmp_path, ["digits-rotation"])


@pytest.mark.slow
def test_smoke_profile_runs_every_notebook(smoke_pipeline_build):
    tmp_path = smoke_pipeline_build
    executed = sorted(p.name for p in (tmp_path / "executed").glob("*.ipynb"))
    assert "results.ipynb" in executed and "finetune-synthetic-2d.ipynb" in executed
    notebooks = {p.stem for p in (REPO / "notebooks").glob("*.md") if p.name != "README.md"} - {"finetune", "results"}
    assert notebooks <= {p[: -len(".ipynb")] for p in executed}


def dry_run(profile: str, *options: str) -> str:
    """What ``snakemake -n`` prints for a profile (it must succeed)."""
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--profile", f"profiles/{profile}", "--nolock", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_paper_profile_dry_run_lists_one_job_per_dataset_and_seed():
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in dry_run("paper", "--quiet", "rules").splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert (
        sum(n for rule, n in counts.items() if rule.startswith("finetune_runs_")) == 100
        and counts["finetune"] == 10
        and counts["results"] == 1
    )
    # The ablation on RSNA: one job per (stage, seed) for the four NONA stages, the projector extension
    # stage, the dense grid, its projector extension and the paper's choice, 3 seeds each; a selection
    # per stage (five NONA stages, the dense grid and its projector stage).
    stages = ["similarity", "softstep", "batch_size", "embed_dim", "projector", "dense_grid", "dense_projector"]
    assert [counts[f"ablation_{stage}"] for stage in [*stages, "paper_choice"]] == [3] * 8
    assert counts["ablation_select"] == 7 and "ablation_features" not in counts


def test_quick_profile_trains_each_fine_tuning_arm_in_a_job_of_its_own():
    printed = dry_run("quick", "--forceall", "-p").splitlines()
    commands = [line for line in printed if "nona.pipeline.experiment" in line]
    digits = [c for c in commands if "--dataset digits-rotation" in c]
    arms = sorted(c.split("--arms ")[1].split(" --")[0] for c in digits)
    # digits-rotation fine-tunes EfficientNet-Lite0's top: Dense and NONA alone, the rest together
    # with the frozen comparison; one job per seed each.
    assert arms == ["dense"] * 3 + ["nca dknn dense-knnw"] * 3 + ["nona"] * 3
    assert all(("--frozen-dir" in c) == ("nca" in c) for c in digits)
    # vader-valence fine-tunes MiniLM's last layer from the frozen runs (warm_start): Dense's and
    # NONA's jobs each train their own frozen run first, the extension arms' job trains none.
    vader = [c for c in commands if "--dataset vader-valence" in c]

    def arms_and_frozen(command):
        frozen = command.split("--frozen-arms ")[1].split(" ")[0] if "--frozen-arms" in command else ""
        return command.split("--arms ")[1].split(" --")[0], frozen

    layout = sorted(arms_and_frozen(c) for c in vader)
    assert layout == [("dense", "dense")] * 3 + [("nca dknn dense-knnw", "")] * 3 + [("nona", "nona")] * 3
    assert all('"warm_start": {"max_epochs": 15, "patience": 5}' in c for c in vader)
    # heart-rate-audio has no pretrained encoder: every arm of a seed in one job, no frozen comparison.
    audio = [c for c in commands if "--dataset heart-rate-audio" in c]
    assert len(audio) == 3
    assert all("--arms dense nona nca dknn dense-knnw " in c and "--frozen-dir" not in c for c in audio)
    assert not any("own_job_arms" in c for c in commands)


def test_relative_to_dense_gives_the_papers_median_reduction():
    from nona.paper.reference import paper_table1
    from nona.pipeline.records import relative_to_dense

    relative = relative_to_dense(paper_table1())
    assert list(relative.columns) == ["Dense", "Dense + k-NN", "NONA", "NONA + k-NN"]
    assert (relative["Dense"] == 1).all()
    # Table 1's caption: "The median MSE reduction from dense layer prediction to NONA is 32.2%."
    assert round(float(100 * (1 - relative["NONA"]).median()), 1) == 32.2


class _Top(torch.nn.Module):
    """Stands in for a backbone's trainable top on cached activations."""

    out_dim = 4

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, self.out_dim)

    def forward(self, x):
        return torch.tanh(self.linear(x))


def test_fine_tuned_and_frozen_runs_record_their_trainable_layers(tmp_path, monkeypatch):
    from nona.data import load_dataset

    ds = load_dataset("synthetic-2d")
    features = torch.as_tensor(np.asarray(ds.inputs, dtype=np.float32))
    loads = []

    def fake_load(dataset, trainable_layers=0, device="cpu"):
        loads.append(trainable_layers)
        return (features, ds.labels, None) if trainable_layers == 0 else (features, ds.labels, _Top())

    monkeypatch.setattr(experiment, "load_features", fake_load)
    monkeypatch.setattr(experiment, "effective_trainable_layers", lambda dataset, k: k)
    config = TrainConfig(max_epochs=2, patience=2, batch_size=64, device="cpu", trainable_layers=1)
    records = train_dataset(
        "synthetic-2d",
        "smoke",
        [0],
        ["dense", "nona", "nca"],
        config,
        tmp_path / "ft",
        frozen_dir=tmp_path / "frozen",
        trainable_arms=["dense", "nona"],
        log=lambda line: None,
    )
    assert sorted(loads) == [0, 1]  # inputs loaded once per trainable_layers
    layers = {r.arm: (r.config["trainable_layers"], r.data["trainable_layers"]) for r in records}
    assert layers == {"dense": (1, 1), "nona": (1, 1), "nca": (0, 0)}
    assert all(r.data["backbone_trainable_parameters"] == 12 for r in records if r.arm != "nca")
    assert all(r.data["seconds_per_step"] > 0 and r.data["steps"] > 0 for r in records)
    frozen = [json.loads(record_path(tmp_path / "frozen", arm, 0).read_text()) for arm in ("dense", "nona")]
    assert [r["config"]["trainable_layers"] for r in frozen] == [0, 0]
    assert all(r["backbone_trainable_parameters"] == 0 for r in frozen)


def test_frozen_vs_finetuned_tabulates_both_folders(tmp_path):
    train_dataset(
        "synthetic-2d",
        "smoke",
        [0, 1],
        ["dense", "nona"],
        FAST,
        tmp_path / "ft" / "synthetic-2d",
        frozen_dir=tmp_path / "frozen" / "synthetic-2d",
        log=lambda line: None,
    )
    scores, per_step = experiment.frozen_vs_finetuned(tmp_path / "ft", tmp_path / "frozen", ["synthetic-2d"])
    assert set(scores.method) == {"Dense", "Dense + k-NN", "NONA", "NONA + k-NN"}
    assert set(scores.backbone) == {"fine-tuned", "frozen"} and (scores.n_seeds == 2).all()
    assert set(per_step.backbone) == {"fine-tuned", "frozen"} and (per_step.ms_per_step > 0).all()


def test_old_backbone_trainable_setting_is_refused_with_its_new_name():
    with pytest.raises(ValueError, match="trainable_layers"):
        experiment.base_config({"backbone_trainable": True})


def _top_and_features(seed: int = 0):
    """A small top, its inputs and its outputs (the frozen features), with labels that depend on them."""
    torch.manual_seed(seed)
    top = _Top()
    activations = torch.randn(300, 2)
    with torch.no_grad():
        features = top(activations)
    labels = (features[:, 0] - 2 * features[:, 1] ** 2).numpy() + 0.01 * np.random.default_rng(seed).normal(size=300)
    return top, activations, features, labels


@pytest.mark.parametrize("head", ["dense", "nona"])
def test_warm_start_begins_where_the_frozen_run_ended(head):
    # Learning rates too small to move a float32 weight, and a projector without BatchNorm (whose
    # running statistics a training epoch updates): the warm-started model is then the frozen one,
    # now reading the top's output, so its test error is the frozen run's.
    top, activations, features, labels = _top_and_features()
    config = TrainConfig(head=head, projector="relu", max_epochs=3, patience=3, batch_size=64, device="cpu")
    kept = {}
    frozen, _ = experiment.train_and_evaluate(features, labels, config, two_stage=False, kept=kept)
    still = TrainConfig(**{**config.to_dict(), "lr": 1e-30, "backbone_lr": 1e-30, "max_epochs": 1})
    warm, _ = experiment.train_and_evaluate(
        activations, labels, still, top, two_stage=False, warm_start=kept["warm_start"]
    )
    cold, _ = experiment.train_and_evaluate(activations, labels, still, top, two_stage=False)
    assert warm["test_mse"] == pytest.approx(frozen["test_mse"], rel=1e-5)
    assert cold["test_mse"] != pytest.approx(frozen["test_mse"], rel=1e-2)  # a new projector and head start elsewhere
    assert "warm_start" in warm and "warm_start" not in cold and "warm_start" not in frozen


def test_warm_start_is_refused_where_it_does_not_apply():
    top, activations, features, labels = _top_and_features()
    config = TrainConfig(head="dense", max_epochs=1, patience=1, batch_size=64, device="cpu")
    kept = {}
    experiment.train_and_evaluate(features, labels, config, two_stage=False, kept=kept)
    with pytest.raises(ValueError, match="pass the backbone"):
        experiment.train_and_evaluate(features, labels, config, warm_start=kept["warm_start"])
    with pytest.raises(ValueError, match="only a frozen-backbone run"):
        experiment.train_and_evaluate(activations, labels, config, top, kept={})
    with pytest.raises(ValueError, match="does not fit this model"):
        other = TrainConfig(**{**config.to_dict(), "embed_dim": 7})
        experiment.train_and_evaluate(activations, labels, other, top, warm_start=kept["warm_start"])


def test_train_dataset_warm_starts_fine_tuned_runs_from_their_frozen_runs(tmp_path, monkeypatch):
    top, activations, features, labels = _top_and_features()

    def fake_load(dataset, trainable_layers=0, device="cpu"):
        return (features, labels, None) if trainable_layers == 0 else (activations, labels, top)

    monkeypatch.setattr(experiment, "load_features", fake_load)
    monkeypatch.setattr(experiment, "effective_trainable_layers", lambda dataset, k: k)
    config = TrainConfig(max_epochs=3, patience=3, batch_size=64, device="cpu", trainable_layers=1)
    lines = []
    run = dict(frozen_dir=tmp_path / "frozen", log=lines.append, warm_start={"max_epochs": 2, "patience": 1})
    records = train_dataset("synthetic-2d", "smoke", [0], ["dense", "nona", "nca"], config, tmp_path / "ft", **run)
    warm = {r.arm: r for r in records}
    # Each fine-tuned head starts from its frozen run's kept projector and head, for the warm start's epochs.
    for arm in ("dense", "nona"):
        kept = record_path(tmp_path / "frozen", arm, 0).with_suffix(".pt")
        assert warm[arm].data["warm_start"]["frozen_state_sha256"] == hashlib.sha256(kept.read_bytes()).hexdigest()
        assert warm[arm].config["max_epochs"] == 2 and warm[arm].data["epochs"] <= 2
    assert "warm_start" not in warm["nca"].data and warm["nca"].config["max_epochs"] == 3  # trains on frozen features
    # The frozen runs trained first.
    trained = [line.split("training ")[1] for line in lines if ": training " in line]
    assert [t.split(" seed")[0] for t in trained] == ["dense", "nona", "dense", "nona", "nca"]
    # Complete: nothing trains again.
    lines.clear()
    train_dataset("synthetic-2d", "smoke", [0], ["dense", "nona", "nca"], config, tmp_path / "ft", **run)
    assert not any(": training " in line for line in lines)
    # Another kept projector and head (a frozen run trained again) makes its fine-tuned run train again.
    kept = record_path(tmp_path / "frozen", "nona", 0).with_suffix(".pt")
    state = torch.load(kept, weights_only=True)
    state["scale"] = state["scale"] * 2
    torch.save(state, kept)
    lines.clear()
    train_dataset("synthetic-2d", "smoke", [0], ["dense", "nona", "nca"], config, tmp_path / "ft", **run)
    trained = [line.split("training ")[1].split(" seed")[0] for line in lines if ": training " in line]
    assert trained == ["nona"]
    # A record whose warm start is written in another form (an earlier version) is trained again, not misread.
    path = record_path(tmp_path / "ft", "dense", 0)
    path.write_text(json.dumps({**json.loads(path.read_text()), "warm_start": "from a frozen run"}))
    lines.clear()
    train_dataset("synthetic-2d", "smoke", [0], ["dense", "nona", "nca"], config, tmp_path / "ft", **run)
    assert [line.split("training ")[1].split(" seed")[0] for line in lines if ": training " in line] == ["dense"]
    monkeypatch.setattr(experiment, "_backbone_name", lambda dataset, k: "minilm")
    statement = experiment.finetuning_statement(records)
    assert "starting from the frozen runs' projector and head for at most 2 epochs" in statement
    assert (
        ": the last block of MiniLM (pretrained) trains with the projector and head, on activations cached below it,"
        in statement
    )
    cold = train_dataset("synthetic-2d", "smoke", [0], ["dense"], config, tmp_path / "cold", log=lines.append)
    assert "starting from" not in experiment.finetuning_statement(cold)


def test_warm_start_settings_are_checked(tmp_path):
    assert experiment.check_warm_start(None) is None
    assert experiment.check_warm_start({"max_epochs": 15, "patience": 5}) == {"max_epochs": 15, "patience": 5}
    for bad in ({"max_epochs": 15}, {"max_epochs": 0, "patience": 5}, {"max_epochs": 15, "patience": True}, 15):
        with pytest.raises(ValueError, match="warm_start must be"):
            experiment.check_warm_start(bad)
    assert experiment.base_config({"warm_start": {"max_epochs": 3, "patience": 1}}) == TrainConfig()
    with pytest.raises(FileNotFoundError, match="needs its frozen run"):
        experiment._frozen_state(tmp_path, "dense", 0, "synthetic-2d")
