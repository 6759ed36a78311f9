"""The serialized ablation: the plan, candidate configurations, winner selection, reuse.

Winners are chosen on validation only, with deterministic ties.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from nona.io.atomic import write_json
from nona.pipeline.ablation import (
    NONA_START,
    TIE_RTOL,
    ablation_plan,
    candidate_config,
    candidate_record_path,
    collect_ablation,
    difference_spread,
    get_stage,
    main,
    previous_stage,
    select_winner,
    train_candidate,
    winner_path,
    write_selected,
    write_selection,
)

PLAN = ablation_plan()


def record(label: str, seed: int, val: float, test: float, config: dict | None = None) -> dict:
    return {
        "label": label,
        "seed": seed,
        "val_mse": val,
        "test_mse": test,
        "epochs": 5,
        "train_seconds": 0.1,
        "head_config": config or {},
    }


def test_plan_follows_appendix_b():
    names = [s.name for s in PLAN]
    assert names == ["similarity", "softstep", "batch_size", "embed_dim", "projector", "dense-grid", "dense-projector"]
    # The ReLU projector is measured as an extension: shown, never selected.
    assert get_stage(PLAN, "projector").labels() == ["tanh", "relu"] and get_stage(PLAN, "projector").eligible() == [
        "tanh"
    ]
    assert get_stage(PLAN, "similarity").labels() == ["l2", "l1", "cos", "dot", "rbf"]
    assert get_stage(PLAN, "similarity").eligible() == ["l2", "l1", "cos", "dot"]
    assert get_stage(PLAN, "softstep").labels() == ["none", "s1-global", "s1-pointwise", "s2-global", "s2-pointwise"]
    assert len(get_stage(PLAN, "dense-grid").labels()) == 12
    assert previous_stage(PLAN, "similarity") is None and previous_stage(PLAN, "dense-grid") is None
    assert previous_stage(PLAN, "embed_dim").name == "batch_size"
    # The dense head's projector extension starts from the grid's winner.
    assert previous_stage(PLAN, "dense-projector").name == "dense-grid"
    assert get_stage(PLAN, "dense-projector").eligible() == ["tanh"]
    assert "dense-projector" not in [s.name for s in ablation_plan({"projector": ["tanh"]})]
    assert NONA_START == {"head": "nona", "similarity": "l2", "softstep": "none", "batch_size": 128, "embed_dim": 50}


def test_plan_rejects_unknown_settings_and_values():
    with pytest.raises(ValueError, match="unknown ablation setting 'lr'"):
        ablation_plan({"lr": [0.1]})
    with pytest.raises(ValueError, match="non-empty subset"):
        ablation_plan({"batch_size": [48]})
    with pytest.raises(ValueError, match="at least one of the paper's candidates"):
        ablation_plan({"similarity": ["rbf"]})


def test_winner_is_chosen_by_validation_never_test():
    stage = get_stage(PLAN, "batch_size")
    # 64 is best on validation, 256 is best on test by far.
    means = {"32": (5.0, 5.0), "64": (4.0, 6.0), "128": (6.0, 4.5), "256": (7.0, 1.0)}
    records = [
        record(label, seed, val + 0.1 * seed, test) for label, (val, test) in means.items() for seed in (0, 1, 2)
    ]
    selection = select_winner(records, stage, [0, 1, 2])
    assert selection["winner"] == "64" and selection["selected_by"] == "mean validation MSE"
    # Changing every test MSE changes nothing.
    shuffled_tests = [{**r, "test_mse": random.Random(i).uniform(0, 100)} for i, r in enumerate(records)]
    assert select_winner(shuffled_tests, stage, [0, 1, 2])["winner"] == "64"
    table = {row["label"]: row for row in selection["table"]}
    assert table["64"]["val_mean"] == pytest.approx(4.1) and table["256"]["test_mean"] == pytest.approx(1.0)


def test_ties_go_to_the_first_declared_candidate_whatever_the_record_order():
    stage = get_stage(PLAN, "softstep")
    vals = {"none": 3.0, "s1-global": 2.0, "s1-pointwise": 2.5, "s2-global": 2.0, "s2-pointwise": 2.0 * (1 + 1e-12)}
    records = [record(label, seed, val, 1.0) for label, val in vals.items() for seed in (0, 1)]
    for order in range(5):
        random.Random(order).shuffle(records)
        selection = select_winner(records, stage, [0, 1])
        assert selection["winner"] == "s1-global"
        assert selection["tied"] == ["s1-global", "s2-global", "s2-pointwise"]


def test_ties_within_the_tolerance_and_just_outside_it():
    stage = get_stage(ablation_plan({"embed_dim": [25, 50, 100]}), "embed_dim")
    for scale in (1.0, 1e-3):
        for gap, winner in ((0.0, "25"), (1e-12, "25"), (0.9 * TIE_RTOL, "25"), (1.1 * TIE_RTOL, "50")):
            # 25 (declared first) has the higher mean by a relative `gap`.
            vals = {"25": 4.0 * scale * (1 + gap), "50": 4.0 * scale, "100": 5.0 * scale}
            selection = select_winner(
                [record(label, s, v, 1.0) for label, v in vals.items() for s in (0, 1)], stage, [0, 1]
            )
            assert selection["winner"] == winner, (scale, gap)
            assert selection["tied"] == (["25", "50"] if winner == "25" else ["50"])
            # Every seed gives the same value here (spread 0): only a tie is within noise.
            assert selection["within_noise"] is (winner == "25")
    assert TIE_RTOL == 1e-6


def test_the_winners_margin_and_the_seed_spread_are_recorded():
    stage = get_stage(ablation_plan({"embed_dim": [25, 50, 100]}), "embed_dim")
    per_seed = {"25": [4.0, 5.0, 6.0], "50": [4.5, 4.6, 4.7], "100": [9.0, 9.5, 10.0]}
    records = [record(label, s, v, 1.0) for label, vals in per_seed.items() for s, v in enumerate(vals)]
    selection = select_winner(records, stage, [0, 1, 2])
    # 50 wins (mean 4.6 < 5.0); the runner-up is 25, 0.4 behind; the standard error of the difference of the
    # two means is sqrt(0.1^2 / 3 + 1^2 / 3) = 0.580..., so the winner is within noise.
    assert selection["winner"] == "50" and selection["runner_up"] == "25"
    assert selection["margin"] == pytest.approx(0.4)
    assert selection["spread"] == pytest.approx(((0.1**2 + 1.0**2) / 3) ** 0.5)
    assert selection["within_noise"] is True and "standard error" in selection["spread_rule"]
    # Spread the winner from the others: outside the noise.
    records = [
        record(label, s, v - 3.0 * (label == "50"), 1.0) for label, vals in per_seed.items() for s, v in enumerate(vals)
    ]
    selection = select_winner(records, stage, [0, 1, 2])
    assert (
        selection["winner"] == "50" and selection["margin"] == pytest.approx(3.4) and selection["within_noise"] is False
    )
    # One eligible candidate: no runner-up; one seed: no spread.
    single = get_stage(ablation_plan({"embed_dim": [25]}), "embed_dim")
    alone = select_winner([record("25", 0, 1.0, 1.0)], single, [0])
    assert alone["runner_up"] is None and alone["margin"] is None and alone["within_noise"] is False
    one_seed = select_winner(
        [record(label, 0, v, 1.0) for label, v in (("25", 1.0), ("50", 2.0), ("100", 3.0))], stage, [0]
    )
    assert one_seed["margin"] == pytest.approx(1.0) and one_seed["spread"] is None and one_seed["within_noise"] is False
    # The spread is the standard error of the difference, also used for the extensions' notes.
    a, b = {"val_std": 0.3, "n_seeds": 3}, {"val_std": 0.4, "n_seeds": 3}
    assert difference_spread(a, b) == pytest.approx(math.sqrt((0.09 + 0.16) / 3))
    assert difference_spread(a, {"val_std": 0.4, "n_seeds": 1}) is None


def test_an_extension_is_shown_but_never_selected():
    stage = get_stage(PLAN, "similarity")
    vals = {"l2": 3.0, "l1": 4.0, "cos": 5.0, "dot": 6.0, "rbf": 1.0}
    selection = select_winner([record(label, s, v, v) for label, v in vals.items() for s in (0, 1)], stage, [0, 1])
    assert selection["winner"] == "l2"
    assert next(row for row in selection["table"] if row["label"] == "rbf")["extension"] is True


def test_selection_refuses_incomplete_or_diverged_stages():
    stage = get_stage(ablation_plan({"embed_dim": [25, 50]}), "embed_dim")
    complete = [record(label, s, 1.0, 1.0) for label in ("25", "50") for s in (0, 1)]
    with pytest.raises(ValueError, match="candidate '50' has no record for seed"):
        select_winner(complete[:-1], stage, [0, 1])
    with pytest.raises(ValueError, match="non-finite validation MSE"):
        select_winner(complete[:-1] + [record("50", 1, float("nan"), 1.0)], stage, [0, 1])
    with pytest.raises(ValueError, match="two records"):
        select_winner(complete + complete[:1], stage, [0, 1])


def test_candidates_build_on_the_previous_winner(tmp_path):
    assert candidate_config(PLAN, "similarity", "cos", tmp_path) == {**NONA_START, "similarity": "cos"}
    assert candidate_config(PLAN, "dense-grid", "d50-b64", tmp_path) == {
        "head": "dense",
        "embed_dim": 50,
        "batch_size": 64,
    }
    with pytest.raises(FileNotFoundError, match="winner of 'similarity'.*run and select stage 'similarity' first"):
        candidate_config(PLAN, "softstep", "s2-global", tmp_path)
    write_json(winner_path(tmp_path, "similarity"), {"config": {**NONA_START, "similarity": "l1"}})
    assert candidate_config(PLAN, "softstep", "s2-global", tmp_path) == {
        **NONA_START,
        "similarity": "l1",
        "softstep": "s2-global",
    }
    with pytest.raises(ValueError, match="'s3' is not a candidate of stage 'softstep'"):
        candidate_config(PLAN, "softstep", "s3", tmp_path)
    with pytest.raises(ValueError, match="unknown ablation stage 'optimizer'"):
        candidate_config(PLAN, "optimizer", "adam", tmp_path)


def test_write_selection_and_selected_from_records(tmp_path):
    plan = ablation_plan(
        {
            "similarity": ["l2", "cos"],
            "softstep": ["none"],
            "batch_size": [32],
            "embed_dim": [25],
            "dense_embed_dim": [25],
            "dense_batch_size": [32, 64],
        }
    )
    for label, val in (("l2", 2.0), ("cos", 1.0)):
        for seed in (0, 1):
            write_json(
                candidate_record_path(tmp_path, "similarity", label, seed),
                record(label, seed, val, 9.0, {**NONA_START, "similarity": label}),
            )
    with pytest.raises(FileNotFoundError, match="missing ablation run"):
        write_selection(tmp_path, plan, "softstep", [0, 1])
    assert write_selection(tmp_path, plan, "similarity", [0, 1])["winner"] == "cos"
    assert json.loads(winner_path(tmp_path, "similarity").read_text())["config"]["similarity"] == "cos"
    for stage, labels in (
        ("softstep", ["none"]),
        ("batch_size", ["32"]),
        ("embed_dim", ["25"]),
        ("projector", ["tanh", "relu"]),
    ):
        for label in labels:
            for seed in (0, 1):
                # The ReLU extension does better here, and still is not selected.
                write_json(
                    candidate_record_path(tmp_path, stage, label, seed),
                    record(
                        label,
                        seed,
                        0.5 if label == "relu" else 1.0,
                        1.0,
                        candidate_config(plan, stage, label, tmp_path),
                    ),
                )
        write_selection(tmp_path, plan, stage, [0, 1])
    for label, val in (("d25-b32", 3.0), ("d25-b64", 2.0)):
        for seed in (0, 1):
            write_json(
                candidate_record_path(tmp_path, "dense-grid", label, seed),
                record(label, seed, val, 1.0, candidate_config(plan, "dense-grid", label, tmp_path)),
            )
    write_selection(tmp_path, plan, "dense-grid", [0, 1])
    selected = write_selected(tmp_path, plan, "synthetic-2d", "smoke")
    assert selected["heads"]["nona"] == {
        "head": "nona",
        "similarity": "cos",
        "softstep": "none",
        "batch_size": 32,
        "embed_dim": 25,
        "projector": "tanh",
    }
    assert selected["heads"]["dense"] == {"head": "dense", "embed_dim": 25, "batch_size": 64}
    # The dense projector extension: the grid's winner as it is (so its runs are reused), and with ReLU.
    assert candidate_config(PLAN, "dense-projector", "tanh", tmp_path) == selected["heads"]["dense"]
    assert candidate_config(PLAN, "dense-projector", "relu", tmp_path) == {
        **selected["heads"]["dense"],
        "projector": "relu",
    }


@pytest.mark.slow
def test_runs_train_write_records_and_reuse_an_identical_run(tmp_path):
    plan = ablation_plan({"similarity": ["l2", "cos"], "softstep": ["none", "s2-global"]})
    features = tmp_path / "features.pt"
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(300, 2, generator=generator)
    torch.save({"inputs": x, "labels": (x[:, 0] * 3 + torch.sin(6 * x[:, 1])).numpy()}, features)
    train = {"max_epochs": 2, "patience": 2, "device": "cpu", "hidden": 8}
    for label in ("l2", "cos"):
        train_candidate(tmp_path, plan, "similarity", label, 0, "synthetic-2d", "smoke", train, features)
    first = json.loads(candidate_record_path(tmp_path, "similarity", "cos", 0).read_text())
    assert first["head_config"] == {**NONA_START, "similarity": "cos"} and first["config"]["hidden"] == 8
    assert 0 < first["val_mse"] and "reused_from" not in first
    write_selection(tmp_path, plan, "similarity", [0])
    winner = json.loads(winner_path(tmp_path, "similarity").read_text())["winner"]
    reused = train_candidate(tmp_path, plan, "softstep", "none", 0, "synthetic-2d", "smoke", train, features)
    assert reused["reused_from"] == f"similarity/{winner}/seed0.json"
    assert (
        reused["val_mse"] == json.loads(candidate_record_path(tmp_path, "similarity", winner, 0).read_text())["val_mse"]
    )
    # Other training settings are another experiment: nothing is reused.
    retrained = train_candidate(
        tmp_path, plan, "softstep", "none", 0, "synthetic-2d", "smoke", {**train, "max_epochs": 3}, features
    )
    assert "reused_from" not in retrained and retrained["train"]["max_epochs"] == 3
    assert (
        main(
            [
                "run",
                "--root",
                str(tmp_path),
                "--values-json",
                json.dumps({"similarity": ["l2", "cos"], "softstep": ["none", "s2-global"]}),
                "--stage",
                "softstep",
                "--candidate",
                "s2-global",
                "--seed",
                "0",
                "--dataset",
                "synthetic-2d",
                "--profile",
                "smoke",
                "--train-json",
                json.dumps(train),
                "--features",
                str(features),
            ]
        )
        == 0
    )
    rows = collect_ablation(tmp_path, [get_stage(plan, "softstep")], [0], with_paper_choice=False)
    assert rows.label.tolist() == ["none", "s2-global"] and rows.reused.tolist() == [False, False]
