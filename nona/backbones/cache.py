"""Batched feature extraction and an on-disk cache of frozen-backbone features under build/cache/."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nona.io.atomic import atomic_path, write_json
from nona.backbones.base import Backbone
from nona.data import Dataset, get_manifest, load_dataset
from nona.io.paths import BUILD_DIR

# Bump when the cache layout or the extraction procedure changes: old entries are then ignored.
CACHE_VERSION = 1


def extract_features(
    backbone: Backbone,
    inputs: Any,
    sample_rate: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    desc: str | None = None,
) -> np.ndarray:
    """Frozen features (n, out_dim) float32 of ``inputs``, computed in batches in eval mode without gradients."""
    n = len(inputs)
    out = np.empty((n, backbone.out_dim), dtype=np.float32)
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            starts = range(0, n, batch_size)
            for start in tqdm(starts, desc=desc or f"{backbone.name} features", unit="batch", disable=not progress):
                chunk = inputs[start : start + batch_size]
                out[start : start + len(chunk)] = backbone.embed(backbone.transform(chunk, sample_rate=sample_rate)).float().cpu().numpy()
    finally:
        backbone.train(was_training)
    return out


def default_options(dataset: str, backbone: str) -> dict[str, Any]:
    """The backbone options a dataset's manifest gives for ``backbone`` (quick profile first, then paper profile)."""
    try:
        fe = get_manifest(dataset)["feature_extractor"]
    except ValueError:
        return {}
    if fe.get("quick_profile_backbone") == backbone:
        return dict(fe.get("quick_profile_options") or {})
    if fe.get("backbone") == backbone:
        return dict(fe.get("backbone_options") or {})
    return {}


def cache_key(dataset: Dataset, backbone: Backbone) -> dict[str, Any]:
    """Everything the cached features depend on: dataset content, backbone, its weights and its preprocessing."""
    return {
        "version": CACHE_VERSION,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "backbone": backbone.name,
        "weights_sha256": backbone.weights_hash(),
        "preprocessing": backbone.preprocessing,
    }


def cached_features(
    dataset: str | Dataset,
    backbone: str | Backbone,
    *,
    options: dict[str, Any] | None = None,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Features (n, D) float32 of a dataset under a frozen backbone, aligned with ``load_dataset(name).labels``.

    Read from ``build/cache/features/`` when a cached copy has the same key
    (dataset content, backbone, weights hash, preprocessing); computed, then
    written atomically, otherwise. ``options`` go to ``get_backbone``; by
    default they come from the dataset's manifest.
    """
    from nona.backbones import get_backbone

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if isinstance(backbone, str):
        backbone = get_backbone(backbone, **(default_options(ds.name, backbone) if options is None else options))
    elif options:
        raise ValueError("options apply only when the backbone is given by name")
    key = cache_key(ds, backbone)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir is not None else BUILD_DIR / "cache"
    path = folder / "features" / ds.name / f"{backbone.name}-{digest}.npy"
    if path.exists():
        features = np.load(path)
        if features.shape == (len(ds), backbone.out_dim):
            return features
    features = extract_features(backbone, ds.inputs, ds.sample_rate, batch_size, progress, desc=f"{ds.name} / {backbone.name}")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, features)
    ids_sha256 = hashlib.sha256("\0".join(ds.ids).encode()).hexdigest()
    write_json(path.with_suffix(".json"), {**key, "shape": list(features.shape), "ids_sha256": ids_sha256})
    return features
