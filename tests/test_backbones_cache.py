"""The frozen-feature cache: keyed by dataset, backbone, weights and preprocessing; atomic; invalidated on change."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nona.backbones.cache as cache_module
from nona.backbones import cached_features, extract_features, get_backbone
from nona.data import Dataset, load_dataset


@pytest.fixture
def clips() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(
        "heart-rate-audio",
        "audio",
        rng.standard_normal((10, 4000)).astype(np.float32),
        rng.uniform(50, 150, 10),
        [f"c{i}" for i in range(10)],
        sample_rate=4000,
    )


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """Counts the extractions that actually run."""
    seen: list[int] = []
    real = cache_module.extract_features

    def counting(backbone, inputs, *args, **kwargs):
        seen.append(len(inputs))
        return real(backbone, inputs, *args, **kwargs)

    monkeypatch.setattr(cache_module, "extract_features", counting)
    return seen


def _entries(folder):
    return sorted(p.name for p in (folder / "features" / "heart-rate-audio").glob("*.npy"))


def test_cache_hit_returns_the_stored_features(tmp_path, clips, calls):
    net = get_backbone("audio_cnn", channels=16)
    first = cached_features(clips, net, cache_dir=tmp_path, progress=False)
    assert first.shape == (10, 32) and first.dtype == np.float32
    second = cached_features(clips, net, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first, second)
    assert calls == [10], "the second call must read the cache"
    entry = _entries(tmp_path)
    assert len(entry) == 1 and entry[0].startswith("audio_cnn-")
    sidecar = json.loads((tmp_path / "features" / "heart-rate-audio" / entry[0]).with_suffix(".json").read_text())
    assert sidecar["backbone"] == "audio_cnn" and sidecar["shape"] == [10, 32]
    assert {"dataset_fingerprint", "weights_sha256", "preprocessing"} <= set(sidecar)
    assert not list(tmp_path.rglob("*.part")), "no temporary files are left behind"


def test_cache_is_invalidated_when_any_key_part_changes(tmp_path, clips, calls):
    base = cached_features(clips, get_backbone("audio_cnn", channels=16), cache_dir=tmp_path, progress=False)
    # Other weights.
    cached_features(clips, get_backbone("audio_cnn", channels=16, seed=1), cache_dir=tmp_path, progress=False)
    # Same weights, other preprocessing.
    cached_features(clips, get_backbone("audio_cnn", channels=16, hop_ms=32.0), cache_dir=tmp_path, progress=False)
    # Other data: one label changed, then one input changed.
    relabelled = Dataset(clips.name, clips.modality, clips.inputs, clips.labels + np.eye(10)[0], clips.ids, 4000)
    cached_features(relabelled, get_backbone("audio_cnn", channels=16), cache_dir=tmp_path, progress=False)
    inputs = clips.inputs.copy()
    inputs[3, 7] += 1.0
    changed = cached_features(
        Dataset(clips.name, clips.modality, inputs, clips.labels, clips.ids, 4000),
        get_backbone("audio_cnn", channels=16),
        cache_dir=tmp_path,
        progress=False,
    )
    assert calls == [10] * 5
    assert len(_entries(tmp_path)) == 5
    assert not np.array_equal(changed[3], base[3]) and np.array_equal(changed[4], base[4])
    # Weights changed in place (e.g. after fine-tuning) are a different key too.
    net = get_backbone("audio_cnn", channels=16)
    next(net.parameters()).data.add_(0.01)
    cached_features(clips, net, cache_dir=tmp_path, progress=False)
    assert len(calls) == 6


def test_corrupt_cache_entry_is_recomputed(tmp_path, clips, calls):
    net = get_backbone("audio_cnn", channels=16)
    good = cached_features(clips, net, cache_dir=tmp_path, progress=False)
    path = tmp_path / "features" / "heart-rate-audio" / _entries(tmp_path)[0]
    np.save(path, np.zeros((3, 32), dtype=np.float32))
    np.testing.assert_array_equal(cached_features(clips, net, cache_dir=tmp_path, progress=False), good)
    assert len(calls) == 2


def test_extraction_is_batch_independent(clips):
    net = get_backbone("audio_cnn", channels=16)
    a = extract_features(net, clips.inputs, 4000, batch_size=3, progress=False)
    b = extract_features(net, clips.inputs, 4000, batch_size=10, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert net.training, "extraction restores the caller's train/eval mode"


def test_named_dataset_and_backbone_use_the_manifest_options(tmp_path):
    features = cached_features("heart-rate-audio", "audio_cnn", cache_dir=tmp_path, progress=False)
    ds = load_dataset("heart-rate-audio")
    assert features.shape == (len(ds.labels), 128)
    direct = extract_features(
        get_backbone("audio_cnn", sample_rate=4000), ds.inputs[:5], ds.sample_rate, progress=False
    )
    np.testing.assert_allclose(features[:5], direct, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="options apply only"):
        cached_features(ds, get_backbone("audio_cnn"), options={"channels": 8}, cache_dir=tmp_path)


def test_image_and_text_subsets_through_the_cache(tmp_path):
    digits = load_dataset("digits-rotation").subset(range(24))
    X = cached_features(
        digits, get_backbone("efficientnet_lite0", image_size=64), cache_dir=tmp_path, batch_size=12, progress=False
    )
    assert X.shape == (24, 1280) and np.isfinite(X).all()
    words = load_dataset("vader-valence").subset(range(0, 7520, 500))
    T = cached_features(words, get_backbone("minilm"), cache_dir=tmp_path, progress=False)
    assert T.shape == (len(words), 384)
