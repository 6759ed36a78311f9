"""The in-memory dataset every loader returns, and the label checks they share."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """A regression dataset: inputs, float64 labels and string ids, aligned by position.

    ``inputs`` is an array of images (n, H, W[, C]) or of audio (n, T) (then
    ``sample_rate`` is set), a list of texts, a list of image file paths, or an
    (n, d) array of features.
    """

    name: str
    modality: str
    inputs: Any
    labels: np.ndarray
    ids: list[str]
    sample_rate: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.float64).ravel()
        self.ids = [str(i) for i in self.ids]
        n = len(self.labels)
        if len(self.inputs) != n or len(self.ids) != n:
            raise ValueError(f"{self.name}: {len(self.inputs)} inputs, {n} labels and {len(self.ids)} ids must match")
        if len(set(self.ids)) != n:
            raise ValueError(f"{self.name}: sample ids are not unique")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: Any) -> Dataset:
        """The samples at ``index`` (integer positions) as a new Dataset."""
        index = np.asarray(index, dtype=np.int64)
        inputs = self.inputs[index] if isinstance(self.inputs, np.ndarray) else [self.inputs[i] for i in index]
        return Dataset(
            self.name,
            self.modality,
            inputs,
            self.labels[index],
            [self.ids[i] for i in index],
            self.sample_rate,
            dict(self.meta),
        )

    def fingerprint(self) -> str:
        """SHA-256 of ids, labels and inputs (file paths count by path, size and mtime), for cache keys."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(str(self.sample_rate).encode())
        h.update("\0".join(self.ids).encode())
        h.update(self.labels.tobytes())
        if isinstance(self.inputs, np.ndarray):
            h.update(str((self.inputs.dtype.str, self.inputs.shape)).encode())
            h.update(np.ascontiguousarray(self.inputs).tobytes())
        else:
            for item in self.inputs:
                h.update(str(item).encode())
                h.update(b"\0")
                if self.meta.get("inputs_are_paths"):
                    st = os.stat(item)
                    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()


def _show(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" ... ({len(ids)} in all)" if len(ids) > limit else "")


def check_labels(name: str, labels: Any, ids: list[str], label_range: tuple[float, float], source: str) -> np.ndarray:
    """Labels as float64; ValueError naming the rows whose label is NaN or outside ``label_range``."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    ids = [str(i) for i in ids]
    bad = [ids[i] for i in np.flatnonzero(~np.isfinite(y))]
    if bad:
        raise ValueError(f"dataset {name!r}: missing or non-finite label in {source} for id(s) {_show(bad)}")
    lo, hi = label_range
    out = [ids[i] for i in np.flatnonzero((y < lo) | (y > hi))]
    if out:
        raise ValueError(
            f"dataset {name!r}: label outside the manifest's range [{lo}, {hi}] in {source} for id(s) {_show(out)}"
        )
    return y


def require_columns(name: str, frame: Any, columns: list[str], source: str) -> None:
    """ValueError naming the first column of ``columns`` that the table lacks."""
    for column in columns:
        if column not in frame.columns:
            raise ValueError(
                f"dataset {name!r}: column {column!r} not found in {source}; "
                f"found columns: {', '.join(map(str, frame.columns))}"
            )


def numeric_column(name: str, frame: Any, column: str, ids: list[str], source: str) -> np.ndarray:
    """A column as float64 (unparsable cells become NaN); ValueError naming rows that are not numbers."""
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = [ids[i] for i in np.flatnonzero(np.isnan(values))]
    if bad:
        raise ValueError(f"dataset {name!r}: missing or non-numeric {column!r} in {source} for id(s) {_show(bad)}")
    return values


def log_labels(name: str, values: np.ndarray, ids: list[str], column: str, source: str) -> np.ndarray:
    """Natural log of positive values; ValueError naming rows that are zero or negative."""
    bad = [ids[i] for i in np.flatnonzero(~(values > 0))]
    if bad:
        raise ValueError(
            f"dataset {name!r}: {column!r} must be positive to take its log in {source}; id(s) {_show(bad)}"
        )
    return np.log(values)
