"""Batched feature extraction and an on-disk cache of frozen-backbone features under build/cache/."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nona.backbones.base import Backbone
from nona.data import Dataset, get_manifest, load_dataset
from nona.io.atomic import atomic_path, write_json
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
                out[start : start + len(chunk)] = (
                    backbone.embed(backbone.transform(chunk, sample_rate=sample_rate)).float().cpu().numpy()
                )
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
    features = extract_features(
        backbone, ds.inputs, ds.sample_rate, batch_size, progress, desc=f"{ds.name} / {backbone.name}"
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, features)
    ids_sha256 = hashlib.sha256("\0".join(ds.ids).encode()).hexdigest()
    write_json(path.with_suffix(".json"), {**key, "shape": list(features.shape), "ids_sha256": ids_sha256})
    return features


def extract_activations(
    backbone: Backbone,
    inputs: Any,
    k: int,
    sample_rate: int | None = None,
    batch_size: int = 64,
    progress: bool = True,
    desc: str | None = None,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Activations entering the last ``k`` blocks of ``backbone`` for every input, in eval mode without gradients.

    A mapping of tensors (a transformer's hidden states and attention mask) is
    right-padded along dimension 1 to the longest batch, with zeros; the mask
    marks the padding, so the top computes the same features.
    """
    backbone.check_top(k)
    parts = []
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(
                range(0, len(inputs), batch_size),
                desc=desc or f"{backbone.name} activations",
                unit="batch",
                disable=not progress,
            ):
                chunk = inputs[start : start + batch_size]
                out = backbone.below(backbone.transform(chunk, sample_rate=sample_rate), k)
                parts.append({k_: v.cpu() for k_, v in out.items()} if isinstance(out, dict) else out.cpu())
    finally:
        backbone.train(was_training)
    if not parts:
        raise ValueError(f"{backbone.name}: no inputs to extract activations from")
    if not isinstance(parts[0], dict):
        return torch.cat(parts).contiguous()
    return {name: _cat_padded([p[name] for p in parts]) for name in parts[0]}


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    if tensors[0].dim() < 2:
        return torch.cat(tensors)
    length = max(t.shape[1] for t in tensors)
    padded = [torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, length - t.shape[1])) for t in tensors]
    return torch.cat(padded).contiguous()


def cached_activations(
    dataset: str | Dataset,
    backbone: str | Backbone,
    trainable_layers: int,
    *,
    options: dict[str, Any] | None = None,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Activations below the last ``trainable_layers`` blocks of a pretrained backbone, for every example of a dataset.

    What fine-tuning the top blocks needs as inputs: computed once, then read
    from ``build/cache/activations/``. Keyed like :func:`cached_features`
    (dataset content, backbone, weights hash, preprocessing) plus the number of
    top blocks; written atomically.
    """
    from nona.backbones import get_backbone

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if isinstance(backbone, str):
        backbone = get_backbone(backbone, **(default_options(ds.name, backbone) if options is None else options))
    elif options:
        raise ValueError("options apply only when the backbone is given by name")
    k = backbone.check_top(trainable_layers)
    key = {**cache_key(ds, backbone), "below_top_blocks": k}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    folder = Path(cache_dir) if cache_dir is not None else BUILD_DIR / "cache"
    path = folder / "activations" / ds.name / f"{backbone.name}-top{k}-{digest}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        first = next(iter(saved.values())) if isinstance(saved, dict) else saved
        if len(first) == len(ds):
            return saved
    activations = extract_activations(
        backbone, ds.inputs, k, ds.sample_rate, batch_size, progress, desc=f"{ds.name} / {backbone.name} below top {k}"
    )
    with atomic_path(path) as tmp:
        torch.save(activations, tmp)
    shapes = (
        {n: list(v.shape) for n, v in activations.items()} if isinstance(activations, dict) else list(activations.shape)
    )
    write_json(path.with_suffix(".json"), {**key, "shape": shapes})
    return activations
