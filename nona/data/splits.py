"""The paper's evaluation protocol: stratified, seeded 80/20 then 85/15 splits, and min-max label scaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from sklearn.model_selection import train_test_split

T = TypeVar("T")


@dataclass(frozen=True)
class Splits:
    """Index arrays of the train, validation and test parts (disjoint, sorted, together all samples)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def as_dict(self) -> dict[str, list[int]]:
        """The three parts as plain lists, for JSON."""
        return {"train": self.train.tolist(), "val": self.val.tolist(), "test": self.test.tolist()}


def label_bins(labels: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile-bin codes 0..k-1 of ``labels`` (k <= n_bins; ties can merge bins)."""
    labels = np.asarray(labels, dtype=np.float64)
    edges = np.unique(np.quantile(labels, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
    codes = np.searchsorted(edges, labels, side="right")
    # Renumber so that codes are consecutive even when a bin is empty.
    return np.unique(codes, return_inverse=True)[1]


def _strata(labels: np.ndarray, n_bins: int, test_size: int) -> np.ndarray | None:
    """Bin codes usable by a stratified split into ``test_size`` and the rest; None when none are."""
    n = len(labels)
    # Fewer bins each time: a bin needs two members, and each side needs a sample of every bin.
    for k in range(n_bins, 1, -1):
        codes = label_bins(labels, k)
        counts = np.bincount(codes)
        n_classes = len(counts)
        if n_classes >= 2 and counts.min() >= 2 and n_classes <= min(test_size, n - test_size):
            return codes
    return None


def _split(
    indices: np.ndarray, labels: np.ndarray, fraction: float, n_bins: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    n = len(indices)
    test_size = int(np.ceil(fraction * n))
    if test_size < 1 or test_size >= n:
        raise ValueError(f"cannot split {n} samples with fraction {fraction}: each part needs at least one sample")
    strata = _strata(labels, n_bins, test_size)
    keep, held = train_test_split(indices, test_size=test_size, random_state=seed, shuffle=True, stratify=strata)
    return np.sort(keep), np.sort(held)


def make_splits(
    labels: np.ndarray,
    seed: int = 0,
    test_fraction: float = 0.2,
    val_fraction: float = 0.15,
    n_bins: int = 10,
) -> Splits:
    """Seeded train/val/test indices: 80/20 development/test, then development 85/15 train/validation.

    Both splits are stratified on quantile bins of the labels; when a bin is
    too small for that, fewer bins are used, and with very few samples the
    split is not stratified.
    """
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if labels.size < 3:
        raise ValueError(f"need at least 3 labels to make train/val/test splits, got {labels.size}")
    if np.isnan(labels).any():
        raise ValueError(f"labels contain NaN at positions {np.flatnonzero(np.isnan(labels))[:10].tolist()}")
    everything = np.arange(labels.size)
    dev, test = _split(everything, labels, test_fraction, n_bins, seed)
    # A different stream for the second split, so it is not a function of the first one's draw.
    train, val = _split(dev, labels[dev], val_fraction, n_bins, seed + 7919)
    return Splits(train=train.astype(np.int64), val=val.astype(np.int64), test=test.astype(np.int64))


@dataclass(frozen=True)
class LabelScaler:
    """Min-max scaling of labels to [0, 1], fitted on the training split (the paper reports MSE on that scale)."""

    lo: float
    hi: float

    @classmethod
    def fit(cls, labels: Any) -> LabelScaler:
        """Fit on training labels; ValueError when they are empty, contain NaN/inf or are constant."""
        y = np.asarray(labels, dtype=np.float64).ravel()
        if y.size == 0:
            raise ValueError("cannot fit a LabelScaler on zero labels")
        if not np.isfinite(y).all():
            raise ValueError(f"labels contain NaN or inf at positions {np.flatnonzero(~np.isfinite(y))[:10].tolist()}")
        lo, hi = float(y.min()), float(y.max())
        if lo == hi:
            raise ValueError(f"all {y.size} training labels equal {lo}: min-max scaling is undefined")
        return cls(lo=lo, hi=hi)

    def transform(self, y: T) -> T:
        """Labels to the scaled space (training labels land in [0, 1]); works on numpy arrays and tensors."""
        return (y - self.lo) / (self.hi - self.lo)

    def inverse_transform(self, y01: T) -> T:
        """Scaled values back to label units."""
        return y01 * (self.hi - self.lo) + self.lo

    def to_dict(self) -> dict[str, float]:
        """The two parameters, for JSON."""
        return {"lo": self.lo, "hi": self.hi}

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> LabelScaler:
        """Rebuild from ``to_dict`` output."""
        return cls(lo=float(d["lo"]), hi=float(d["hi"]))
