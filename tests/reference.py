"""An independent float64 reference of NONA and SoftStep, written from the paper's formulas.

It loops and uses numpy only, so it shares no code with the package.
"""

from __future__ import annotations

import numpy as np


def sim_ref(z: np.ndarray, zn: np.ndarray, kind: str, gamma: float = 1.0) -> np.ndarray:
    b, n = len(z), len(zn)
    out = np.empty((b, n))
    for i in range(b):
        for j in range(n):
            diff = z[i] - zn[j]
            if kind == "l2":
                out[i, j] = -np.sqrt(np.sum(diff**2))
            elif kind == "l1":
                out[i, j] = -np.sum(np.abs(diff))
            elif kind == "dot":
                out[i, j] = np.dot(z[i], zn[j]) / z.shape[1]
            elif kind == "cos":
                out[i, j] = np.dot(z[i], zn[j]) / (np.linalg.norm(z[i]) * np.linalg.norm(zn[j]))
            elif kind == "rbf":
                out[i, j] = -gamma * np.sum(diff**2)
    return out


def s1_ref(x: float, a: float, b: float, t: float) -> float:
    if x <= a:
        return 0.0
    if x >= b:
        return 1.0
    up, down = (x - a) ** (1 / t), (b - x) ** (1 / t)
    return up / (up + down)


# The package floors x at sqrt(float64 tiny) inside S2 (documented on the Method page);
# the reference applies the same floor so that S2(0) is compared like for like.
S2_FLOOR = np.finfo(np.float64).tiny ** 0.5


def s2_ref(x: float, b: float, t: float) -> float:
    if x >= b:
        return 1.0
    x = max(x, S2_FLOOR)
    return (x / b) ** ((b - x) * t / (1 - t))


def nona_ref(z, zn, yn, kind, fn=None, params=None, exclude_self=False, eps=1e-6, gamma=1.0):
    """Prediction per Algorithm 1; ``params[i]`` holds (a0, b0, t) or (b0, t) for row i (already in (0, 1))."""
    sim = sim_ref(z, zn, kind, gamma)
    b, n = sim.shape
    logits = sim.copy()
    if fn is not None:
        for i in range(b):
            row = sim[i]
            lo, hi = row.min(), row.max()
            x = (row - lo) / (hi - lo) if hi > lo else np.ones_like(row)
            if fn == "s1":
                a0, b0, t = params[i]
                others = [x[j] for j in range(n) if not (exclude_self and j == i)]
                a = min(a0, max(others)) - eps
                bb = a + b0 * (1 - a)
                mask = np.array([s1_ref(v, a, bb, t) for v in x])
            else:
                b0, t = params[i]
                mask = np.array([s2_ref(v, b0, t) for v in x])
            with np.errstate(divide="ignore"):
                logits[i] = row + np.log(mask)
    if exclude_self:
        np.fill_diagonal(logits, -np.inf)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return w @ yn
