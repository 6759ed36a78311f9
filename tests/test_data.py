"""Splits, label scaling, embedded datasets, synthetic generators and data-root errors."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch

from nona.data import Dataset, LabelScaler, data_root, get_manifest, load_dataset, make_splits, verify_files
from nona.data.splits import label_bins
from nona.data.synthetic import TARGETS, heart_rate_audio, make_surface, surface_grid, target_function
from nona.io.paths import REPO_ROOT

# ---------------------------------------------------------------- splits


def _check_partition(splits, n):
    parts = [splits.train, splits.val, splits.test]
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n, "every index exactly once"
    for p in parts:
        assert p.dtype == np.int64 and np.all(np.diff(p) > 0)


@pytest.mark.parametrize("n", [3, 7, 20, 100, 1000, 3594])
def test_splits_partition_with_paper_proportions(n):
    y = np.random.default_rng(1).normal(size=n)
    s = make_splits(y, seed=0)
    _check_partition(s, n)
    n_test = int(np.ceil(0.2 * n))
    assert len(s.test) == n_test
    assert len(s.val) == int(np.ceil(0.15 * (n - n_test)))


def test_splits_are_deterministic_and_depend_on_seed():
    y = np.random.default_rng(0).gamma(2.0, size=500)
    a, b, c = make_splits(y, seed=3), make_splits(y, seed=3), make_splits(y, seed=4)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert not np.array_equal(a.test, c.test)


def test_splits_are_stratified_on_label_bins():
    y = np.random.default_rng(0).exponential(size=2000)
    s = make_splits(y, seed=0)
    codes = label_bins(y, 10)
    expected = np.bincount(codes) / len(y)
    for part in (s.train, s.val, s.test):
        frac = np.bincount(codes[part], minlength=10) / len(part)
        assert np.abs(frac - expected).max() < 0.01


def test_splits_fall_back_when_bins_are_too_small():
    # Heavy ties (integer scores with a rare extreme) and tiny data must still split.
    y = np.array([0.0] * 40 + [1.0] * 30 + [2.0] * 2 + [30.0])
    _check_partition(make_splits(y, seed=1), len(y))
    _check_partition(make_splits(np.arange(5.0), seed=0), 5)
    _check_partition(make_splits(np.ones(50), seed=0), 50)


def test_splits_reject_nan_and_too_few_labels():
    with pytest.raises(ValueError, match="NaN"):
        make_splits(np.array([1.0, np.nan, 2.0, 3.0]))
    with pytest.raises(ValueError, match="at least 3"):
        make_splits(np.array([1.0, 2.0]))


# ---------------------------------------------------------------- label scaling


def test_label_scaler_maps_train_to_unit_interval_and_inverts_exactly():
    rng = np.random.default_rng(0)
    y = rng.normal(50, 20, size=300)
    s = make_splits(y)
    scaler = LabelScaler.fit(y[s.train])
    y01 = scaler.transform(y[s.train])
    assert y01.min() == 0.0 and y01.max() == 1.0
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(y)), y, rtol=1e-13, atol=1e-12)
    t = torch.tensor(y[:5])
    torch.testing.assert_close(scaler.inverse_transform(scaler.transform(t)), t)
    assert LabelScaler.from_dict(scaler.to_dict()) == scaler


def test_label_scaler_rejects_constant_and_nan_labels():
    with pytest.raises(ValueError, match="min-max scaling is undefined"):
        LabelScaler.fit(np.full(10, 3.0))
    with pytest.raises(ValueError, match="NaN"):
        LabelScaler.fit(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="zero labels"):
        LabelScaler.fit(np.array([]))


# ---------------------------------------------------------------- embedded datasets


def test_digits_rotation():
    ds = load_dataset("digits-rotation")
    assert isinstance(ds, Dataset) and ds.modality == "image"
    assert ds.inputs.shape == (3594, 32, 32) and ds.inputs.dtype == np.float32
    assert 0.0 <= ds.inputs.min() and ds.inputs.max() <= 1.0
    assert ds.labels.dtype == np.float64 and len(ds.ids) == 3594
    assert -45 <= ds.labels.min() < -40 and 40 < ds.labels.max() <= 45
    assert ds.ids[:2] == ["d0000-r0", "d0000-r1"]
    # Corners stay black after rotation, so they cannot leak the angle.
    assert ds.inputs[:, :3, :3].max() < 0.05
    again = load_dataset("digits-rotation")
    np.testing.assert_array_equal(again.labels, ds.labels)
    np.testing.assert_array_equal(again.inputs, ds.inputs)
    other = load_dataset("digits-rotation", seed=1)
    assert not np.array_equal(other.labels, ds.labels)


def test_digits_rotation_really_rotates():
    ds = load_dataset("digits-rotation", rotations=1)
    from scipy import ndimage

    # Rotating back by the label should recover the upright digit better than any other angle.
    img, angle = ds.inputs[7], ds.labels[7]
    upright = load_dataset("digits-rotation", rotations=1, max_angle=1e-9).inputs[7]
    errors = {
        a: np.abs(ndimage.rotate(img, -a, reshape=False, order=1) - upright).mean()
        for a in (angle, angle + 30, angle - 30)
    }
    assert min(errors, key=errors.get) == angle


def test_vader_valence():
    ds = load_dataset("vader-valence")
    assert ds.modality == "text" and len(ds) == 7520
    assert isinstance(ds.inputs, list) and all(isinstance(t, str) for t in ds.inputs)
    assert ds.labels.min() >= -4 and ds.labels.max() <= 4
    lookup = dict(zip(ds.inputs, ds.labels))
    assert lookup["abandon"] < 0 < lookup["adorable"]


def test_heart_rate_audio_is_seeded_and_labelled_by_its_rate():
    a, rates = heart_rate_audio(n_clips=6, seed=0)
    b, _ = heart_rate_audio(n_clips=3, seed=0)
    assert a.shape == (6, 16000) and a.dtype == np.float32
    np.testing.assert_array_equal(a[:3], b)
    np.testing.assert_allclose(np.sqrt((a.astype(np.float64) ** 2).mean(1)), 1.0, rtol=1e-5)
    # The beat period is visible in the envelope's autocorrelation.
    from scipy import signal

    for clip, bpm in zip(a, rates):
        env = signal.sosfiltfilt(signal.butter(2, 8 / 2000, output="sos"), np.abs(clip))
        env = env - env.mean()
        ac = signal.correlate(env, env, mode="full", method="fft")[len(env) - 1 :]
        lags = np.arange(len(ac)) / 4000
        window = (lags > 0.35) & (lags < 1.3)
        period = lags[window][np.argmax(ac[window])]
        assert 60 / period == pytest.approx(bpm, rel=0.12) or 60 / (period / 2) == pytest.approx(bpm, rel=0.12)


def test_heart_rate_audio_dataset():
    m = get_manifest("heart-rate-audio")
    ds = load_dataset("heart-rate-audio", n_clips=40)
    assert ds.sample_rate == 4000 and ds.inputs.shape == (40, 16000) and ds.meta["synthetic"]
    assert m["label"]["range"][0] <= ds.labels.min() and ds.labels.max() <= m["label"]["range"][1]


@pytest.mark.parametrize("target", TARGETS)
def test_make_surface_and_grid(target):
    x, y = make_surface(target, n=500, noise=0.0, seed=0)
    assert x.shape == (500, 2) and y.shape == (500,)
    assert np.abs(x).max() <= 1.0
    np.testing.assert_allclose(y, target_function(target, x))
    x2, y2 = make_surface(target, n=500, noise=0.1, seed=0)
    np.testing.assert_array_equal(x2, x)
    assert 0.05 < np.std(y2 - y) < 0.15
    xx, yy, zz = surface_grid(target, resolution=21)
    assert xx.shape == yy.shape == zz.shape == (21, 21)
    assert xx[0, 0] == -1 and xx[0, -1] == 1 and yy[-1, 0] == 1


def test_surface_targets_are_what_they_say():
    pts = np.array([[0.0, 0.0], [1.0, 1.0], [0.25, 0.25], [-0.5, 0.0]])
    np.testing.assert_allclose(target_function("linear", pts), [0, 1, 0.25, -0.25])
    np.testing.assert_allclose(target_function("radial", pts), [0, np.sqrt(2), np.sqrt(0.125), 0.5])
    np.testing.assert_allclose(target_function("checkerboard", pts), [0, 0, 1, 0], atol=1e-12)
    with pytest.raises(ValueError, match="choose one of"):
        target_function("wave", pts)


def test_synthetic_2d_dataset():
    ds = load_dataset("synthetic-2d", target="checkerboard", n=300, noise=0.05, seed=2)
    assert ds.modality == "synthetic" and ds.inputs.shape == (300, 2) and ds.meta["target"] == "checkerboard"
    x, y = make_surface("checkerboard", n=300, noise=0.05, seed=2)
    np.testing.assert_allclose(ds.labels, y)


# ---------------------------------------------------------------- data root and file checks


def test_data_root_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NONA_DATA", raising=False)
    assert data_root() == REPO_ROOT / "data"
    monkeypatch.setenv("NONA_DATA", str(tmp_path))
    assert data_root() == tmp_path


def test_missing_files_name_manifest_and_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("NONA_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("medsegbench-brifiseg")
    msg = str(info.value)
    assert "data_manifests/medsegbench-brifiseg.yaml" in msg
    assert str(tmp_path / "medsegbench-brifiseg" / "brifiseg_256.npz") in msg
    assert "zenodo.org/records/13358372" in msg and "NONA_DATA" in msg


def test_checksum_mismatch_names_file_expected_and_actual(tmp_path):
    manifest = copy.deepcopy(get_manifest("pitchfork"))
    path = tmp_path / "pitchfork" / "reviews.csv"
    path.parent.mkdir()
    path.write_text("review,score\ngood,8.0\n")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["files"][0]["sha256"] = actual
    assert verify_files(manifest, tmp_path) == [path]
    manifest["files"][0]["sha256"] = "0" * 64
    with pytest.raises(ValueError) as info:
        verify_files(manifest, tmp_path)
    assert str(path) in str(info.value) and "0" * 64 in str(info.value) and actual in str(info.value)
    manifest["files"][0]["sha256"] = None
    manifest["files"][0]["md5"] = "f" * 32
    with pytest.raises(ValueError, match="md5 mismatch"):
        verify_files(manifest, tmp_path)


def test_embedded_options_are_rejected_for_downloaded_datasets(monkeypatch, tmp_path):
    monkeypatch.setenv("NONA_DATA", str(tmp_path))
    (tmp_path / "pitchfork").mkdir()
    (tmp_path / "pitchfork" / "reviews.csv").write_text("review,score\ngood,8.0\n")
    with pytest.raises(ValueError, match="takes no options"):
        load_dataset("pitchfork", seed=3)


def test_dataset_subset_and_fingerprint():
    ds = load_dataset("synthetic-2d", n=50)
    sub = ds.subset([3, 1])
    assert sub.ids == [ds.ids[3], ds.ids[1]] and np.array_equal(sub.inputs, ds.inputs[[3, 1]])
    assert ds.fingerprint() == load_dataset("synthetic-2d", n=50).fingerprint()
    assert ds.fingerprint() != load_dataset("synthetic-2d", n=50, seed=1).fingerprint()
    with pytest.raises(ValueError, match="must match"):
        Dataset("x", "text", ["a"], np.array([1.0, 2.0]), ["a", "b"])
    with pytest.raises(ValueError, match="not unique"):
        Dataset("x", "text", ["a", "b"], np.array([1.0, 2.0]), ["a", "a"])
