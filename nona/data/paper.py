"""Loaders of the paper's ten datasets, each reading the on-disk layout its manifest documents."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from nona.data.audio import fit_length, loudest_window, read_wav, resample
from nona.data.dataset import Dataset, check_labels, log_labels, numeric_column, require_columns
from nona.data.manifests import missing_message

Loader = Callable[[dict, Path], Dataset]

# Sample rates the paper's audio encoders expect (HuBERT and Whisper both take 16 kHz).
COUGHVID_RATE = 16000
NOSEMIC_RATE = 16000
NOSEMIC_SECONDS = 30
# Pitchfork: the paper used 1,500 reviews drawn at random.
PITCHFORK_SAMPLE = 1500
PITCHFORK_SEED = 0


def _require(manifest: dict, root: Path, paths: list[Path]) -> None:
    missing = [p for p in paths if not p.exists()]
    if missing:
        shown = missing[:10]
        if len(missing) > 10:
            shown.append(Path(f"... and {len(missing) - 10} more"))
        raise FileNotFoundError(missing_message(manifest, shown, root))


def _read_csv(manifest: dict, root: Path, path: Path) -> pd.DataFrame:
    _require(manifest, root, [path])
    return pd.read_csv(path)


def _ids(frame: pd.DataFrame, column: str | None, prefix: str) -> list[str]:
    if column is not None and column in frame.columns:
        return frame[column].astype(str).tolist()
    return [f"{prefix}{i:05d}" for i in range(len(frame))]


def _labels(manifest: dict, frame: pd.DataFrame, column: str, ids: list[str], source: Path) -> np.ndarray:
    """A numeric label column, checked against the manifest's range."""
    values = numeric_column(manifest["name"], frame, column, ids, str(source))
    return check_labels(manifest["name"], values, ids, manifest["label"]["range"], str(source))


def _image_dataset(manifest: dict, paths: list[Path], labels: np.ndarray, ids: list[str]) -> Dataset:
    return Dataset(manifest["name"], "image", [str(p) for p in paths], labels, ids, meta={"inputs_are_paths": True})


def load_rsna_bone_age(manifest: dict, root: Path) -> Dataset:
    """RSNA bone age: image paths and bone age (months), training plus the optional validation set."""
    base = root / "rsna-bone-age"
    parts = [("boneage-training-dataset", "")]
    if (base / "boneage-validation-dataset.csv").exists():
        parts.append(("boneage-validation-dataset", "val-"))
    paths, labels, ids = [], [], []
    for stem, prefix in parts:
        source = base / f"{stem}.csv"
        frame = _read_csv(manifest, root, source)
        require_columns(manifest["name"], frame, ["id", "boneage"], str(source))
        part_ids = frame["id"].astype(str).tolist()
        labels.append(numeric_column(manifest["name"], frame, "boneage", part_ids, str(source)))
        paths += [base / stem / f"{i}.png" for i in part_ids]
        ids += [prefix + i for i in part_ids]
    y = check_labels(manifest["name"], np.concatenate(labels), ids, manifest["label"]["range"], str(base))
    _require(manifest, root, paths)
    return _image_dataset(manifest, paths, y, ids)


def load_medsegbench_brifiseg(manifest: dict, root: Path) -> Dataset:
    """MedSegBench BriFiSeg: gray images (n, H, W) uint8 and mask area in percent, all splits pooled."""
    path = root / "medsegbench-brifiseg" / "brifiseg_256.npz"
    _require(manifest, root, [path])
    images, areas, ids = [], [], []
    with np.load(path) as npz:
        for split in ("train", "val", "test"):
            for key in (f"{split}_images", f"{split}_label"):
                if key not in npz.files:
                    raise ValueError(
                        f"dataset {manifest['name']!r}: array {key!r} not found in {path}; found {', '.join(npz.files)}"
                    )
            image, mask = npz[f"{split}_images"], npz[f"{split}_label"]
            if image.ndim == 4 and image.shape[-1] == 1:
                image = image[..., 0]
            mask = mask.reshape(len(mask), -1)
            images.append(image)
            areas.append(100.0 * (mask > 0).mean(axis=1))
            ids += [f"{split}-{i:04d}" for i in range(len(image))]
    y = check_labels(manifest["name"], np.concatenate(areas), ids, manifest["label"]["range"], str(path))
    return Dataset(manifest["name"], "image", np.concatenate(images), y, ids)


def _text_dataset(
    manifest: dict,
    root: Path,
    relpath: str,
    text: str,
    label: str,
    id_column: str | None,
    log: bool = False,
    drop_empty_text: bool = False,
) -> Dataset:
    source = root / relpath
    frame = _read_csv(manifest, root, source)
    require_columns(manifest["name"], frame, [text, label], str(source))
    if drop_empty_text:
        frame = frame[frame[text].fillna("").astype(str).str.strip() != ""].reset_index(drop=True)
    ids = _ids(frame, id_column, f"{manifest['name']}-")
    values = numeric_column(manifest["name"], frame, label, ids, str(source))
    if log:
        values = log_labels(manifest["name"], values, ids, label, str(source))
    y = check_labels(manifest["name"], values, ids, manifest["label"]["range"], str(source))
    texts = frame[text].fillna("").astype(str).tolist()
    return Dataset(manifest["name"], "text", texts, y, ids)


def load_adresso(manifest: dict, root: Path) -> Dataset:
    """ADReSSo: transcripts and MMSE scores."""
    return _text_dataset(manifest, root, "adresso/adresso.csv", "text", "mmse", "id")


def load_pitchfork(manifest: dict, root: Path) -> Dataset:
    """Pitchfork: review texts and scores; a seeded draw of 1,500 reviews when there are more."""
    ds = _text_dataset(manifest, root, "pitchfork/reviews.csv", "review", "score", "id")
    if len(ds) > PITCHFORK_SAMPLE:
        pick = np.sort(np.random.default_rng(PITCHFORK_SEED).choice(len(ds), PITCHFORK_SAMPLE, replace=False))
        ds = ds.subset(pick)
    return ds


def load_books(manifest: dict, root: Path) -> Dataset:
    """MachineHack books: synopses and log price."""
    return _text_dataset(manifest, root, "books/Data_Train.csv", "Synopsis", "Price", None, log=True)


def load_austin(manifest: dict, root: Path) -> Dataset:
    """Austin housing: listing descriptions and log price (listings without a description are dropped)."""
    return _text_dataset(
        manifest,
        root,
        "austin/austinHousingData.csv",
        "description",
        "latestPrice",
        "zpid",
        log=True,
        drop_empty_text=True,
    )


def _read_clips(manifest: dict, paths: list[Path], rate: int, shape: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    clips = []
    for path in tqdm(paths, desc=f"reading {manifest['name']} audio", unit="file", leave=False):
        audio, sr = read_wav(path)
        clips.append(shape(resample(audio, sr, rate)))
    return np.stack(clips).astype(np.float32)


def load_coughvid(manifest: dict, root: Path) -> Dataset:
    """COUGHVID: the loudest second of each recording with a reported age (16 kHz) and the age."""
    source = root / "coughvid" / "metadata_compiled.csv"
    frame = _read_csv(manifest, root, source)
    require_columns(manifest["name"], frame, ["uuid", "age"], str(source))
    # Only some participants reported an age: those recordings make up this task.
    frame = frame[pd.to_numeric(frame["age"], errors="coerce").notna()].reset_index(drop=True)
    ids = frame["uuid"].astype(str).tolist()
    y = _labels(manifest, frame, "age", ids, source)
    paths = [root / "coughvid" / "wav" / f"{i}.wav" for i in ids]
    _require(manifest, root, paths)
    clips = _read_clips(
        manifest, paths, COUGHVID_RATE, lambda a: loudest_window(a, COUGHVID_RATE, COUGHVID_RATE // 100)
    )
    return Dataset(manifest["name"], "audio", clips, y, ids, sample_rate=COUGHVID_RATE)


def load_nosemic(manifest: dict, root: Path) -> Dataset:
    """NoseMic: 30 s in-ear clips at 16 kHz and the reference heart rate (bpm)."""
    source = root / "nosemic" / "labels.csv"
    frame = _read_csv(manifest, root, source)
    require_columns(manifest["name"], frame, ["id", "heart_rate"], str(source))
    ids = frame["id"].astype(str).tolist()
    y = _labels(manifest, frame, "heart_rate", ids, source)
    paths = [root / "nosemic" / "audio" / f"{i}.wav" for i in ids]
    _require(manifest, root, paths)
    clips = _read_clips(manifest, paths, NOSEMIC_RATE, lambda a: fit_length(a, NOSEMIC_RATE * NOSEMIC_SECONDS))
    return Dataset(manifest["name"], "audio", clips, y, ids, sample_rate=NOSEMIC_RATE)


def load_udacity(manifest: dict, root: Path) -> Dataset:
    """Udacity: centre-camera frame paths at 4 frames per second and the steering angle (radians)."""
    source = root / "udacity" / "interpolated.csv"
    frame = _read_csv(manifest, root, source)
    require_columns(manifest["name"], frame, ["filename", "angle"], str(source))
    if "frame_id" in frame.columns:
        frame = frame[frame["frame_id"].astype(str) == "center_camera"]
    if "timestamp" in frame.columns:
        # 4 frames per second: the first frame of every 250 ms window.
        frame = frame.sort_values("timestamp", kind="stable")
        frame = frame[~(frame["timestamp"].astype(np.int64) // 250_000_000).duplicated()]
    frame = frame.reset_index(drop=True)
    ids = [Path(f).stem for f in frame["filename"].astype(str)]
    y = _labels(manifest, frame, "angle", ids, source)
    paths = [root / "udacity" / f for f in frame["filename"].astype(str)]
    _require(manifest, root, paths)
    return _image_dataset(manifest, paths, y, ids)


def load_houses(manifest: dict, root: Path) -> Dataset:
    """Houses: frontal image paths and log listing price; row i of HousesInfo.txt is house i (1-based)."""
    source = root / "houses" / "HousesInfo.txt"
    _require(manifest, root, [source])
    ids, prices = [], []
    for line_no, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 5:
            raise ValueError(
                f"dataset {manifest['name']!r}: column 'price' (5th field) not found "
                f"on line {line_no} of {source}: {line!r}"
            )
        ids.append(str(line_no))
        try:
            prices.append(float(fields[4]))
        except ValueError:
            prices.append(np.nan)
    values = np.asarray(prices)
    # NaN first (unparsable price), then the log of positive prices, then the range.
    y = check_labels(manifest["name"], values, ids, (-np.inf, np.inf), str(source))
    y = log_labels(manifest["name"], y, ids, "price", str(source))
    y = check_labels(manifest["name"], y, ids, manifest["label"]["range"], str(source))
    paths = [root / "houses" / f"{i}_frontal.jpg" for i in ids]
    _require(manifest, root, paths)
    return _image_dataset(manifest, paths, y, ids)


PAPER_LOADERS: dict[str, Loader] = {
    "rsna-bone-age": load_rsna_bone_age,
    "medsegbench-brifiseg": load_medsegbench_brifiseg,
    "adresso": load_adresso,
    "coughvid": load_coughvid,
    "nosemic": load_nosemic,
    "udacity": load_udacity,
    "pitchfork": load_pitchfork,
    "houses": load_houses,
    "books": load_books,
    "austin": load_austin,
}
