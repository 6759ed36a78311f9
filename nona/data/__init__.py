"""Datasets of the companion: manifests, loaders, the paper's splits and label scaling.

>>> from nona.data import load_dataset, make_splits, LabelScaler
>>> ds = load_dataset("digits-rotation")
>>> splits = make_splits(ds.labels, seed=0)
>>> scaler = LabelScaler.fit(ds.labels[splits.train])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nona.data.dataset import Dataset
from nona.data.embedded import load_digits_rotation, load_heart_rate_audio, load_synthetic_2d, load_vader_valence
from nona.data.manifests import MANIFEST_DIR, data_root, get_manifest, list_datasets, validate_manifest, verify_files
from nona.data.paper import PAPER_LOADERS
from nona.data.splits import LabelScaler, Splits, make_splits

EMBEDDED_LOADERS = {
    "digits-rotation": load_digits_rotation,
    "vader-valence": load_vader_valence,
    "heart-rate-audio": load_heart_rate_audio,
    "synthetic-2d": load_synthetic_2d,
}


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> Dataset:
    """Load dataset ``name`` after checking its files.

    ``options`` go to embedded generators (e.g. ``seed``, ``target``).

    Raises FileNotFoundError (with the manifest's instructions) when files are
    missing and ValueError on a checksum mismatch or an invalid label.
    """
    manifest = get_manifest(name)
    root = Path(root) if root is not None else data_root()
    verify_files(manifest, root)
    if manifest["embedded"]:
        return EMBEDDED_LOADERS[name](manifest, **options)
    if options:
        raise ValueError(f"dataset {name!r} takes no options; got {', '.join(options)}")
    return PAPER_LOADERS[name](manifest, root)


__all__ = [
    "Dataset",
    "LabelScaler",
    "MANIFEST_DIR",
    "Splits",
    "data_root",
    "get_manifest",
    "list_datasets",
    "load_dataset",
    "make_splits",
    "validate_manifest",
    "verify_files",
]
