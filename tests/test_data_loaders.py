"""Each paper dataset's loader reads its documented on-disk layout (tiny fixtures written here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.io import wavfile

from nona.data import get_manifest, load_dataset
from nona.data.paper import load_medsegbench_brifiseg


@pytest.fixture
def root(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("NONA_DATA", str(tmp_path))
    return tmp_path


def _png(path: Path, value: int, size=(20, 16), mode="L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1] + ((3,) if mode == "RGB" else ()), value, dtype=np.uint8), mode).save(path)


def _csv(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def _wav(path: Path, audio: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, (np.clip(audio, -1, 1) * 32767).astype(np.int16))


# ---------------------------------------------------------------- images


def _rsna(root: Path, rows=((1377, 180.0, True), (1378, 12.0, False), (1379, 94.5, True))) -> None:
    base = root / "rsna-bone-age"
    _csv(base / "boneage-training-dataset.csv", pd.DataFrame(rows, columns=["id", "boneage", "male"]))
    for i, _, _ in rows:
        _png(base / "boneage-training-dataset" / f"{i}.png", 100)


def test_rsna_bone_age(root):
    _rsna(root)
    ds = load_dataset("rsna-bone-age")
    assert ds.modality == "image" and ds.ids == ["1377", "1378", "1379"]
    np.testing.assert_array_equal(ds.labels, [180.0, 12.0, 94.5])
    assert ds.inputs[0] == str(root / "rsna-bone-age" / "boneage-training-dataset" / "1377.png")
    # The optional validation set is pooled in, with distinct ids.
    base = root / "rsna-bone-age"
    _csv(base / "boneage-validation-dataset.csv", pd.DataFrame([(1377, 60, False)], columns=["id", "boneage", "male"]))
    _png(base / "boneage-validation-dataset" / "1377.png", 50)
    ds = load_dataset("rsna-bone-age")
    assert ds.ids[-1] == "val-1377" and ds.labels[-1] == 60.0


def test_rsna_errors_name_rows_columns_and_files(root):
    _rsna(root, rows=((1, 10.0, True), (2, float("nan"), False), (3, 20.0, True)))
    with pytest.raises(ValueError, match=r"'boneage'.*id\(s\) 2\b"):
        load_dataset("rsna-bone-age")
    _rsna(root, rows=((1, 10.0, True), (2, 300.0, False)))
    with pytest.raises(ValueError, match=r"outside the manifest's range \[0, 240\].*id\(s\) 2\b"):
        load_dataset("rsna-bone-age")
    _csv(root / "rsna-bone-age" / "boneage-training-dataset.csv", pd.DataFrame({"id": [1], "age": [10]}))
    with pytest.raises(ValueError, match="column 'boneage' not found"):
        load_dataset("rsna-bone-age")
    _rsna(root, rows=((1, 10.0, True), (99, 20.0, True)))
    (root / "rsna-bone-age" / "boneage-training-dataset" / "99.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"99\.png") as info:
        load_dataset("rsna-bone-age")
    assert "rsna-bone-age.yaml" in str(info.value) and "kaggle" in str(info.value)


def test_medsegbench_brifiseg(root):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_label"] = np.zeros((n, 8, 8), dtype=np.uint8)
    arrays["train_label"][0, :4] = 1  # half the image
    arrays["test_label"][1, 0, 0] = 255  # one pixel, stored as 255
    path = root / "medsegbench-brifiseg" / "brifiseg_256.npz"
    path.parent.mkdir()
    np.savez(path, **arrays)
    # The real file's MD5 is pinned in the manifest, so a fixture is refused by load_dataset...
    with pytest.raises(ValueError, match="md5 mismatch.*expected be00218d75aaa50624c63077e9efc843"):
        load_dataset("medsegbench-brifiseg")
    # ...and the loader itself reads it.
    ds = load_medsegbench_brifiseg(get_manifest("medsegbench-brifiseg"), root)
    assert ds.inputs.shape == (6, 8, 8) and ds.inputs.dtype == np.uint8
    assert ds.ids[0] == "train-0000" and ds.ids[-1] == "test-0001"
    np.testing.assert_allclose(ds.labels, [50, 0, 0, 0, 0, 100 / 64])
    del arrays["val_label"]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="'val_label' not found"):
        load_medsegbench_brifiseg(get_manifest("medsegbench-brifiseg"), root)


def test_udacity_keeps_centre_camera_at_four_frames_per_second(root):
    base = root / "udacity"
    rows = []
    for k in range(20):  # 20 fps for one second, three cameras
        ts = 1_479_424_215_000_000_000 + k * 50_000_000
        for cam in ("left_camera", "center_camera", "right_camera"):
            rows.append(
                {"timestamp": ts, "frame_id": cam, "filename": f"{cam.split('_')[0]}/{ts}.jpg", "angle": 0.01 * k}
            )
    _csv(base / "interpolated.csv", pd.DataFrame(rows))
    for r in rows:
        if r["frame_id"] == "center_camera":
            _png(base / r["filename"], 30, mode="RGB")
    ds = load_dataset("udacity")
    assert len(ds) == 4
    np.testing.assert_allclose(ds.labels, [0.0, 0.05, 0.10, 0.15])
    assert all(p.startswith(str(base / "center")) for p in ds.inputs)


def test_udacity_minimal_csv(root):
    base = root / "udacity"
    _csv(base / "interpolated.csv", pd.DataFrame({"filename": ["center/a.jpg", "center/b.jpg"], "angle": [-0.2, 0.3]}))
    _png(base / "center" / "a.jpg", 1, mode="RGB")
    _png(base / "center" / "b.jpg", 2, mode="RGB")
    ds = load_dataset("udacity")
    assert ds.ids == ["a", "b"] and list(ds.labels) == [-0.2, 0.3]


def test_houses(root):
    base = root / "houses"
    base.mkdir()
    (base / "HousesInfo.txt").write_text("4 4 4053 85255 869500\n3 2 1372 96019  178000\n2 2 1056 96019 22000\n")
    for i in (1, 2, 3):
        _png(base / f"{i}_frontal.jpg", 10 * i, mode="RGB")
        _png(base / f"{i}_kitchen.jpg", 0, mode="RGB")
    ds = load_dataset("houses")
    assert ds.ids == ["1", "2", "3"]
    np.testing.assert_allclose(ds.labels, np.log([869500, 178000, 22000]))
    assert ds.inputs[1].endswith("2_frontal.jpg")
    (base / "HousesInfo.txt").write_text("4 4 4053 85255 869500\n3 2 1372 96019\n")
    with pytest.raises(ValueError, match="column 'price'.*line 2"):
        load_dataset("houses")
    (base / "HousesInfo.txt").write_text("4 4 4053 85255 0\n")
    with pytest.raises(ValueError, match=r"positive.*id\(s\) 1"):
        load_dataset("houses")


# ---------------------------------------------------------------- text


def test_adresso(root):
    _csv(
        root / "adresso" / "adresso.csv",
        pd.DataFrame(
            {
                "id": ["adrso024", "adrso025"],
                "text": ["the boy is on the stool", "mother washes dishes"],
                "mmse": [29, 17],
            }
        ),
    )
    ds = load_dataset("adresso")
    assert ds.modality == "text" and ds.ids == ["adrso024", "adrso025"]
    assert ds.inputs[1] == "mother washes dishes" and list(ds.labels) == [29.0, 17.0]
    _csv(root / "adresso" / "adresso.csv", pd.DataFrame({"id": ["a", "b"], "text": ["x", "y"], "mmse": [29, 31]}))
    with pytest.raises(ValueError, match=r"range \[0, 30\].*id\(s\) b"):
        load_dataset("adresso")
    _csv(root / "adresso" / "adresso.csv", pd.DataFrame({"id": ["a"], "transcript": ["x"], "mmse": [20]}))
    with pytest.raises(ValueError, match="column 'text' not found"):
        load_dataset("adresso")


def test_pitchfork_draws_1500_reviews_reproducibly(root):
    n = 1600
    frame = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "review": [f"review {i}" for i in range(n)],
            "score": np.round(np.linspace(0, 10, n), 1),
        }
    )
    _csv(root / "pitchfork" / "reviews.csv", frame)
    a, b = load_dataset("pitchfork"), load_dataset("pitchfork")
    assert len(a) == 1500 and a.ids == b.ids and len(set(a.ids)) == 1500
    _csv(root / "pitchfork" / "reviews.csv", pd.DataFrame({"review": ["great", "meh"], "score": [9.1, "n/a"]}))
    with pytest.raises(ValueError, match=r"'score'.*id\(s\) pitchfork-00001"):
        load_dataset("pitchfork")


def test_books_log_price(root):
    _csv(
        root / "books" / "Data_Train.csv",
        pd.DataFrame({"Title": ["A", "B"], "Synopsis": ["a story", "another story"], "Price": [220.0, 1200.5]}),
    )
    ds = load_dataset("books")
    np.testing.assert_allclose(ds.labels, np.log([220.0, 1200.5]))
    assert ds.inputs == ["a story", "another story"]


def test_austin_drops_empty_descriptions(root):
    frame = pd.DataFrame(
        {"zpid": [11, 12, 13], "description": ["Lovely home", "", "Big yard"], "latestPrice": [305000, 10, 525000]}
    )
    _csv(root / "austin" / "austinHousingData.csv", frame)
    ds = load_dataset("austin")
    assert ds.ids == ["11", "13"]
    np.testing.assert_allclose(ds.labels, np.log([305000, 525000]))


# ---------------------------------------------------------------- audio


def test_coughvid_keeps_aged_recordings_and_their_loudest_second(root):
    base = root / "coughvid"
    meta = pd.DataFrame({"uuid": ["u1", "u2", "u3"], "age": [34, None, 71], "cough_detected": [0.9, 0.8, 0.99]})
    _csv(base / "metadata_compiled.csv", meta)
    rate = 48000
    for uid, at in (("u1", 0.5), ("u3", 1.2)):
        t = np.arange(int(2.5 * rate)) / rate
        audio = 0.01 * np.sin(2 * np.pi * 200 * t)
        burst = (t >= at) & (t < at + 0.3)
        audio[burst] = 0.8 * np.sin(2 * np.pi * 700 * t[burst])
        _wav(base / "wav" / f"{uid}.wav", audio, rate)
    ds = load_dataset("coughvid")
    assert ds.ids == ["u1", "u3"] and list(ds.labels) == [34.0, 71.0]
    assert ds.sample_rate == 16000 and ds.inputs.shape == (2, 16000) and ds.inputs.dtype == np.float32
    # The loud burst (0.3 s) lies inside the kept second.
    assert (np.abs(ds.inputs) > 0.5).sum(axis=1).min() > 0.25 * 16000 * 0.5
    (base / "wav" / "u3.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"u3\.wav"):
        load_dataset("coughvid")


def test_nosemic_resamples_and_pads_to_30_seconds(root):
    base = root / "nosemic"
    _csv(base / "labels.csv", pd.DataFrame({"id": ["s01_walk_003", "s02_rest_001"], "heart_rate": [96.0, 61.5]}))
    rng = np.random.default_rng(0)
    _wav(base / "audio" / "s01_walk_003.wav", 0.1 * rng.standard_normal(8000 * 3), 8000)
    _wav(base / "audio" / "s02_rest_001.wav", 0.1 * rng.standard_normal(8000 * 31), 8000)
    ds = load_dataset("nosemic")
    assert ds.inputs.shape == (2, 16000 * 30) and ds.sample_rate == 16000
    assert np.abs(ds.inputs[0, 16000 * 3 + 100 :]).max() == 0.0
    assert np.abs(ds.inputs[1, -1000:]).max() > 0
    _csv(base / "labels.csv", pd.DataFrame({"id": ["s01_walk_003"], "hr": [96.0]}))
    with pytest.raises(ValueError, match="column 'heart_rate' not found"):
        load_dataset("nosemic")
