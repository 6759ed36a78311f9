"""Loaders of the embedded datasets: installed with pip or generated, so the quick profile runs on a laptop."""

from __future__ import annotations

import numpy as np

from nona.data.dataset import Dataset, check_labels
from nona.data.manifests import file_path
from nona.data.synthetic import heart_rate_audio, make_surface


def load_digits_rotation(
    manifest: dict, seed: int = 0, rotations: int = 2, size: int = 32, max_angle: float = 45.0
) -> Dataset:
    """sklearn's 1,797 handwritten digits, each rotated ``rotations`` times by a uniform angle.

    The label is the angle (degrees).
    """
    from scipy import ndimage  # imported on use: it is slow to import and only this generator needs it
    from sklearn.datasets import load_digits

    # A 2-pixel zero border puts every stroke inside the inscribed circle, so rotated
    # corners stay black and their edges cannot give the angle away.
    digits = np.pad(load_digits().images / 16.0, ((0, 0), (2, 2), (2, 2)))
    # Rotating 12x12 pixels would destroy the strokes; upsample first, then rotate.
    big = np.clip(np.stack([ndimage.zoom(d, size / 12, order=3) for d in digits]), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-max_angle, max_angle, size=(len(big), rotations))
    images = np.empty((len(big) * rotations, size, size), dtype=np.float32)
    ids = []
    for i, image in enumerate(big):
        for k in range(rotations):
            images[i * rotations + k] = ndimage.rotate(
                image, angles[i, k], reshape=False, order=1, mode="constant", cval=0.0
            )
            ids.append(f"d{i:04d}-r{k}")
    labels = check_labels(manifest["name"], angles.ravel(), ids, manifest["label"]["range"], "the generated angles")
    return Dataset(
        manifest["name"], "image", np.clip(images, 0.0, 1.0), labels, ids, meta={"seed": seed, "rotations": rotations}
    )


def load_vader_valence(manifest: dict) -> Dataset:
    """The VADER lexicon's tokens and their mean human valence rating in [-4, 4]."""
    path = file_path(manifest["files"][0])
    texts, ratings = [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2:
            raise ValueError(f"{path}:{line_no}: expected tab-separated token and mean rating, got {line!r}")
        texts.append(parts[0])
        ratings.append(float(parts[1]))
    ids = [f"vader-{i:04d}" for i in range(len(texts))]
    labels = check_labels(manifest["name"], ratings, ids, manifest["label"]["range"], str(path))
    return Dataset(manifest["name"], "text", texts, labels, ids)


def load_heart_rate_audio(manifest: dict, seed: int = 0, n_clips: int | None = None) -> Dataset:
    """SYNTHETIC in-ear heartbeat clips (4 s at 4 kHz) labelled with their heart rate in bpm."""
    n_clips = n_clips or manifest["n_samples"]
    clips, rates = heart_rate_audio(n_clips=n_clips, seed=seed)
    ids = [f"hr-{i:04d}" for i in range(n_clips)]
    labels = check_labels(manifest["name"], rates, ids, manifest["label"]["range"], "the generator")
    return Dataset(
        manifest["name"], "audio", clips, labels, ids, sample_rate=4000, meta={"synthetic": True, "seed": seed}
    )


def load_synthetic_2d(
    manifest: dict, target: str = "spiral", n: int | None = None, noise: float = 0.05, seed: int = 0
) -> Dataset:
    """SYNTHETIC Figure 3 points on [-1, 1]^2 (float32 (n, 2)) and noisy ``target`` values."""
    n = n or manifest["n_samples"]
    points, values = make_surface(target, n=n, noise=noise, seed=seed)
    ids = [f"{target}-{i:05d}" for i in range(n)]
    labels = check_labels(manifest["name"], values, ids, manifest["label"]["range"], f"target {target}")
    meta = {"synthetic": True, "target": target, "noise": noise, "seed": seed}
    return Dataset(manifest["name"], "synthetic", points.astype(np.float32), labels, ids, meta=meta)
