"""Reading WAV files, resampling, and fixing clip lengths (numpy/scipy only; torchaudio is not a dependency)."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
from scipy.io import wavfile


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A WAV file as mono float32 in [-1, 1] and its sample rate."""
    sample_rate, data = wavfile.read(path)
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        # Unsigned 8-bit WAV is centred on 128.
        offset = (info.max + 1) / 2 if info.min == 0 else 0.0
        data = (data.astype(np.float64) - offset) / (info.max + 1 - offset)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data.astype(np.float32), int(sample_rate)


def resample(audio: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Polyphase resampling along the last axis (identity when the rates agree)."""
    if orig_rate == new_rate:
        return np.asarray(audio, dtype=np.float32)
    from scipy import signal  # imported on use: it takes ~1 s, and only resampling needs it

    g = gcd(int(orig_rate), int(new_rate))
    out = signal.resample_poly(np.asarray(audio, dtype=np.float64), new_rate // g, orig_rate // g, axis=-1)
    return out.astype(np.float32)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """Crop to the first ``length`` samples or zero-pad at the end."""
    if audio.shape[-1] >= length:
        return audio[..., :length]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])]
    return np.pad(audio, pad)


def loudest_window(audio: np.ndarray, length: int, hop: int) -> np.ndarray:
    """The ``length``-sample window of highest energy (start on a ``hop`` grid); zero-padded if the clip is short."""
    if audio.shape[-1] <= length:
        return fit_length(audio, length)
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.arange(0, audio.shape[-1] - length + 1, hop)
    best = starts[np.argmax(energy[starts + length] - energy[starts])]
    return audio[best : best + length]
