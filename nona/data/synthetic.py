"""Synthetic data: the paper's Figure 3 surfaces and an in-ear heartbeat audio generator.

Everything here is generated, not measured, and is labelled as such wherever it is used.
"""

from __future__ import annotations

import numpy as np

TARGETS = ("linear", "radial", "spiral", "checkerboard")


def target_function(target: str, points: np.ndarray) -> np.ndarray:
    """Noise-free value of a Figure 3 target at ``points`` (n, 2) in [-1, 1]^2."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {x.shape}")
    x1, x2 = x[:, 0], x[:, 1]
    r = np.hypot(x1, x2)
    if target == "linear":
        return (x1 + x2) / 2.0
    if target == "radial":
        return r
    if target == "spiral":
        # Level sets theta + 3 pi r = const are Archimedean spirals.
        return np.sin(np.arctan2(x2, x1) + 3.0 * np.pi * r)
    if target == "checkerboard":
        # A smooth checkerboard of 4 x 4 cells whose sign alternates.
        return np.sin(2.0 * np.pi * x1) * np.sin(2.0 * np.pi * x2)
    raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")


def make_surface(target: str, n: int = 2000, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform on [-1, 1]^2 and their ``target`` values plus N(0, noise^2) noise."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1.0, 1.0, size=(n, 2))
    values = target_function(target, points) + noise * rng.standard_normal(n)
    return points, values


def surface_grid(target: str, resolution: int = 101) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Meshgrid ``(xx, yy, zz)`` of the noise-free target on [-1, 1]^2, for drawing surfaces."""
    axis = np.linspace(-1.0, 1.0, resolution)
    xx, yy = np.meshgrid(axis, axis)
    zz = target_function(target, np.column_stack([xx.ravel(), yy.ravel()])).reshape(xx.shape)
    return xx, yy, zz


def _damped_sine(sample_rate: int, freq: float, decay: float, length: float = 0.25) -> np.ndarray:
    t = np.arange(int(length * sample_rate)) / sample_rate
    # A short raised onset avoids a click that would put energy at every frequency.
    onset = 1.0 - np.exp(-t / 0.004)
    return onset * np.exp(-t / decay) * np.sin(2.0 * np.pi * freq * t)


def heart_rate_audio(
    n_clips: int = 1200,
    duration: float = 4.0,
    sample_rate: int = 4000,
    bpm_range: tuple[float, float] = (50.0, 150.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic in-ear-like heartbeat clips (n_clips, duration * sample_rate) float32 and their heart rates (bpm)."""
    from scipy import signal  # imported on use: it takes ~0.7 s, and most users of nona.data never generate audio

    n = int(round(duration * sample_rate))
    nyquist = sample_rate / 2.0
    breath_sos = signal.butter(4, min(400.0, 0.9 * nyquist) / nyquist, output="sos")
    drift_sos = signal.butter(2, 3.0 / nyquist, output="sos")
    t = np.arange(n) / sample_rate
    clips = np.empty((n_clips, n), dtype=np.float32)
    rates = np.empty(n_clips, dtype=np.float64)
    for i in range(n_clips):
        # One stream per clip: clip i is the same whatever n_clips is.
        rng = np.random.default_rng([seed, i])
        bpm = rng.uniform(*bpm_range)
        interval = 60.0 / bpm
        n_beats = int(np.ceil(duration / interval)) + 2
        beats = rng.uniform(-interval, 0.0) + np.cumsum(interval * (1.0 + 0.03 * rng.standard_normal(n_beats)))
        s2_delay = 0.3 * np.sqrt(interval)
        s1 = _damped_sine(sample_rate, rng.uniform(30.0, 60.0), rng.uniform(0.025, 0.045))
        s2 = _damped_sine(sample_rate, rng.uniform(50.0, 90.0), rng.uniform(0.015, 0.030))
        heart = np.zeros(n)
        # Beats are sparse: adding each sound at its onset is cheaper than a convolution.
        for onsets, sound, level in ((beats, s1, 1.0), (beats + s2_delay, s2, 0.6)):
            idx = np.round(onsets * sample_rate).astype(np.int64)
            idx = idx[(idx >= 0) & (idx < n)]
            for start, gain in zip(idx, level * rng.uniform(0.7, 1.3, size=len(idx))):
                stop = min(n, start + len(sound))
                heart[start:stop] += gain * sound[: stop - start]
        breathing_envelope = 0.5 * (1.0 + np.sin(2.0 * np.pi * rng.uniform(0.15, 0.5) * t + rng.uniform(0, 2 * np.pi)))
        breathing = signal.sosfilt(breath_sos, rng.standard_normal(n)) * breathing_envelope
        drift = signal.sosfilt(drift_sos, rng.standard_normal(n))
        # Levels are relative to the heart sounds' RMS, so the beats stay audible in every clip.
        clip = (
            heart / heart.std()
            + rng.uniform(0.1, 0.5) * breathing / (breathing.std() + 1e-12)
            + rng.uniform(0.0, 0.3) * drift / (drift.std() + 1e-12)
            + rng.uniform(0.02, 0.2) * rng.standard_normal(n)
        )
        clips[i] = clip / np.sqrt(np.mean(clip**2))
        rates[i] = bpm
    return clips, rates
