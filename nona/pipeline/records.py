"""Run records: the one reader of the files the experiment writes.

A *run* is one trained arm of the experiment on one seeded split. Its record
``<runs_dir>/<dataset>/<arm>/seed<k>.json`` holds metrics, configuration,
timings and provenance; ``seed<k>.npz`` beside it holds the final embeddings.
Everything that tabulates runs (the fine-tuning and Results pages, the
reproduction report) goes through :class:`RunRecord`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Arms of the experiment that train one of the paper's two heads; each of their
# records holds two of the paper's regressors (the head, and k-NN on its embeddings).
PAPER_ARMS = ("dense", "nona")
PAPER_METHODS = ("Dense", "Dense + k-NN", "NONA", "NONA + k-NN")
EXTENSION_METHODS = (
    "NCA + SoftStep",
    "Diff. k-NN + SoftStep",
    "Dense, k-NN-weighted loss",
    "Dense + NNK",
    "NONA + NNK",
    "Dense ⊕ k-NN",
)


def record_path(runs_dir: str | Path, arm: str, seed: int) -> Path:
    """Where the record of one (arm, seed) run of one dataset lives (``runs_dir`` is the dataset's folder)."""
    return Path(runs_dir) / arm / f"seed{seed}.json"


@dataclass(frozen=True)
class RunRecord:
    """One run's record, read from its JSON file."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        """Read the record at ``path``; a missing or unreadable file is an error that names it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"run record {path} does not exist; run the fine-tuning step first (make book)")
        try:
            return cls(path, json.loads(path.read_text()))
        except json.JSONDecodeError as error:
            raise ValueError(f"run record {path} is not valid JSON ({error}); delete it and re-run the step") from error

    @property
    def dataset(self) -> str:
        return self.data["dataset"]

    @property
    def arm(self) -> str:
        """The experiment arm (``dense``, ``nona``, ``nca``, ``dknn``, ``dense-knnw``)."""
        return self.data["head"]

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    @property
    def config(self) -> dict[str, Any]:
        return self.data["config"]

    @property
    def is_paper_arm(self) -> bool:
        return self.arm in PAPER_ARMS

    def method_rows(self) -> list[dict[str, Any]]:
        """One row per regressor this run scored: its head, and for a paper arm k-NN and the two-stage extensions."""
        d = self.data
        rows = [(d["method"], d["test_mse"], not self.is_paper_arm)]
        if self.is_paper_arm:
            rows.append((d["knn_method"], d["knn_test_mse"], False))
            rows += [(name, value["test_mse"], True) for name, value in d.get("extensions", {}).items()]
        return [
            {"dataset": self.dataset, "method": name, "seed": self.seed, "test_mse": value, "extension": extension}
            for name, value, extension in rows
        ]

    def timings(self) -> list[dict[str, Any]]:
        """Seconds spent per regressor: training the head, tuning the regressors fitted on its embeddings."""
        d = self.data
        rows = [{"method": d["method"], "seconds": d["train_seconds"], "kind": "training"}]
        if self.is_paper_arm:
            rows.append({"method": d["knn_method"], "seconds": d["knn_seconds"], "kind": "tuning on embeddings"})
            rows += [
                {"method": name, "seconds": value["seconds"], "kind": "tuning on embeddings"}
                for name, value in d.get("extensions", {}).items()
            ]
        return rows

    def head_settings(self) -> tuple[tuple[str, Any], ...]:
        """The settings that define the head (the similarity and SoftStep only where the head uses them)."""
        c = self.config
        keys = (
            ("batch_size", "embed_dim")
            if c["head"] == "dense"
            else ("similarity", "softstep", "batch_size", "embed_dim")
        )
        return tuple((k, c[k]) for k in keys)

    def embeddings(self) -> dict[str, np.ndarray]:
        """The final embeddings, predictions and labels saved beside the record."""
        with np.load(self.path.with_suffix(".npz")) as arrays:
            return dict(arrays)


def load_records(runs_dir: str | Path, datasets: list[str] | None = None) -> list[RunRecord]:
    """Every record under ``runs_dir`` (``<runs_dir>/<dataset>/<arm>/seed<k>.json``).

    Only those of ``datasets`` when it is given.
    """
    paths = sorted(Path(runs_dir).glob("*/*/seed*.json"))
    records = [RunRecord.load(path) for path in paths]
    if datasets is not None:
        missing = sorted(set(datasets) - {r.dataset for r in records})
        if missing:
            raise FileNotFoundError(
                f"no run records for {', '.join(missing)} under {runs_dir}; run the fine-tuning step first"
            )
        records = [r for r in records if r.dataset in datasets]
    return records


def method_table(records: list[RunRecord]) -> pd.DataFrame:
    """One row per (dataset, method, seed) with its test MSE, epochs and training seconds."""
    rows = [
        {**row, "epochs": r.data["epochs"], "seconds": r.data["train_seconds"]}
        for r in records
        for row in r.method_rows()
    ]
    if not rows:
        raise FileNotFoundError("no run records to tabulate; run the fine-tuning step first (make book)")
    return pd.DataFrame(rows)


def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of test MSE per dataset and method (tidy: dataset, method, mean, std, n_seeds)."""
    keys = ["dataset", "method", "extension"] if "extension" in runs else ["dataset", "method"]
    return runs.groupby(keys)["test_mse"].agg(mean="mean", std="std", n_seeds="count").reset_index()


def relative_to_dense(table: pd.DataFrame) -> pd.DataFrame:
    """Each method's mean test MSE divided by the dense head's, per dataset (columns in the paper's order)."""
    wide = table.pivot(index="dataset", columns="method", values="mean")
    return wide[[m for m in PAPER_METHODS if m in wide.columns]].div(wide["Dense"], axis=0)
