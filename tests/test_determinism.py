"""Two runs of the same pipeline piece on the same machine give bit-identical results.

A piece of the smoke profile (the dense and NONA arms of synthetic-2d on one
seed, with their two-stage baselines, and one ablation stage with its
selection) runs twice into two folders; every metric of the records (all but
the provenance and the timings) and every saved array must be equal bit for
bit. What varies *across* machines (CPU kernels, thread counts) is measured
and written up in the Reproduce page's "What varies across machines".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TRAIN = {"max_epochs": 3, "patience": 2, "batch_size": 64, "device": "cpu"}


def without_timings(value: Any) -> Any:
    """A record without what legitimately changes between runs: provenance (commit, time) and seconds."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k != "provenance" and "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def assert_records_identical(a: Path, b: Path) -> None:
    first, second = without_timings(json.loads(a.read_text())), without_timings(json.loads(b.read_text()))
    # JSON floats round-trip exactly (shortest repr), so equality of the parsed records is bit equality.
    assert first == second, f"{a} and {b} differ"


def assert_arrays_identical(a: Path, b: Path) -> None:
    with np.load(a) as first, np.load(b) as second:
        assert sorted(first.files) == sorted(second.files)
        for name in first.files:
            x, y = first[name], second[name]
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (
                f"{a}: array {name} differs"
            )


@pytest.mark.slow
def test_experiment_runs_are_bit_identical(tmp_path):
    from nona.pipeline.experiment import train_dataset
    from nona.train import TrainConfig

    config = TrainConfig(**TRAIN)
    for run in ("a", "b"):
        train_dataset("synthetic-2d", "smoke", [0], ["dense", "nona"], config, tmp_path / run, log=lambda *_: None)
    records = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.json"))
    arrays = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.npz"))
    assert len(records) == 2 and len(arrays) == 2
    assert records == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.json"))
    for relative in records:
        assert_records_identical(tmp_path / "a" / relative, tmp_path / "b" / relative)
    for relative in arrays:
        assert_arrays_identical(tmp_path / "a" / relative, tmp_path / "b" / relative)
    # The comparison is not vacuous: the records hold the metrics and the tuned baselines.
    record = json.loads((tmp_path / "a" / records[0]).read_text())
    assert {"test_mse", "val_mse", "history", "knn_test_mse", "knn_params", "extensions"} <= set(record)


@pytest.mark.slow
def test_an_ablation_stage_is_bit_identical(tmp_path):
    from nona.pipeline.ablation import (
        ablation_plan,
        candidate_record_path,
        train_candidate,
        winner_path,
        write_selection,
    )

    plan = ablation_plan({"similarity": ["l2", "cos"]})
    for run in ("a", "b"):
        for label in ("l2", "cos"):
            train_candidate(tmp_path / run, plan, "similarity", label, 0, "synthetic-2d", "smoke", dict(TRAIN))
        write_selection(tmp_path / run, plan, "similarity", [0])
    for label in ("l2", "cos"):
        assert_records_identical(*(candidate_record_path(tmp_path / run, "similarity", label, 0) for run in ("a", "b")))
    assert_records_identical(winner_path(tmp_path / "a", "similarity"), winner_path(tmp_path / "b", "similarity"))
