"""Appendix D: the M-neighbour quadratic program, its printed closed form, and independent numeric optima."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy import optimize


def appendix_d_lambda() -> dict[str, sp.Expr]:
    """λ of Appendix D, corrected and as printed, and the residual ``Δ·p / R`` each leaves at the bracketing pair."""
    d_m, d_m1, d_typo = sp.symbols(r"\Delta_{ij_m} \Delta_{ij_{m+1}} \Delta_{ij_m+1}", real=True)
    corrected = d_m1 / (d_m1 - d_m)
    printed = d_m1 / (d_typo - d_m)
    return {
        "corrected": corrected,
        "printed": printed,
        "residual corrected": sp.simplify(corrected * d_m + (1 - corrected) * d_m1),
        "residual swapped": sp.simplify((1 - corrected) * d_m + corrected * d_m1),
        "residual printed": sp.simplify(printed * d_m + (1 - printed) * d_m1),
        "symbols": (d_m, d_m1, d_typo),
    }


def appendix_d_lambda_range() -> sp.Expr:
    """λ with bracketing labels ``y_{j_m} = y_i - u``, ``y_{j_{m+1}} = y_i + v`` (``u, v > 0``): ``v / (u + v)``."""
    u, v = sp.symbols("u v", positive=True)
    lam = appendix_d_lambda()
    d_m, d_m1, _ = lam["symbols"]
    return sp.simplify(lam["corrected"].subs({d_m: u, d_m1: -v}))


def _check_labels(y_i: float, y_n: np.ndarray) -> np.ndarray:
    y_n = np.asarray(y_n, dtype=float)
    if y_n.ndim != 1 or len(y_n) < 2:
        raise ValueError(f"need a 1-D array of at least 2 neighbour labels, got shape {y_n.shape}")
    if len(np.unique(y_n)) != len(y_n) or np.any(y_n == y_i):
        raise ValueError("Appendix D assumes distinct neighbour labels, all different from the anchor's label")
    return y_n


def qp_optimum(delta: np.ndarray, R: float = 1.0) -> float:
    """Exact minimum of ``(Δ·p)^2`` over ``{p >= 0, sum p = R}``.

    ``Δ·p`` is linear, so over the scaled simplex it takes exactly the values
    between ``R min Δ`` and ``R max Δ``; the square is 0 if that interval holds 0.
    """
    delta = np.asarray(delta, dtype=float)
    lo, hi = R * delta.min(), R * delta.max()
    if lo <= 0.0 <= hi:
        return 0.0
    return float(min(abs(lo), abs(hi)) ** 2)


def appendix_d_allocation(y_i: float, y_n: np.ndarray, R: float = 1.0) -> np.ndarray:
    """Appendix D's solution (index typo and case range corrected), in the order of ``y_n``."""
    y_n = _check_labels(y_i, y_n)
    order = np.argsort(y_n)
    ys = y_n[order]
    p_sorted = np.zeros(len(ys))
    if y_i < ys[0]:
        p_sorted[0] = R
    elif y_i > ys[-1]:
        p_sorted[-1] = R
    else:
        m = int(np.searchsorted(ys, y_i)) - 1  # ys[m] < y_i < ys[m + 1], 0-based
        d_m, d_m1 = y_i - ys[m], y_i - ys[m + 1]
        lam = d_m1 / (d_m1 - d_m)
        p_sorted[m], p_sorted[m + 1] = lam * R, (1 - lam) * R
    p = np.empty_like(p_sorted)
    p[order] = p_sorted
    return p


def printed_case(y_i: float, y_n: np.ndarray) -> str | None:
    """Which case of the printed Appendix D solution applies (``None``: no printed case covers the instance)."""
    ys = np.sort(_check_labels(y_i, y_n))
    if y_i < ys[0]:
        return "y_i < y_j1"
    if y_i > ys[-1]:
        return "y_i > y_jM"
    m = int(np.searchsorted(ys, y_i))  # 1-based index of the label just below y_i
    return f"bracket m={m}" if 1 < m < len(ys) else None


def solve_qp_slsqp(delta: np.ndarray, R: float = 1.0, starts: int = 5, seed: int = 0) -> np.ndarray:
    """A minimiser of ``(Δ·p)^2`` on the scaled simplex by SLSQP from random starts (no closed form used)."""
    delta = np.asarray(delta, dtype=float)
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(starts):
        x0 = rng.dirichlet(np.ones(len(delta))) * R
        result = optimize.minimize(
            lambda p: float(delta @ p) ** 2,
            x0,
            jac=lambda p: 2.0 * float(delta @ p) * delta,
            method="SLSQP",
            bounds=[(0.0, R)] * len(delta),
            constraints=[{"type": "eq", "fun": lambda p: p.sum() - R, "jac": lambda p: np.ones_like(p)}],
            options={"ftol": 1e-15, "maxiter": 500},
        )
        if best is None or result.fun < best.fun:
            best = result
    return np.clip(best.x, 0.0, R)


def optimal_vertices(y_i: float, y_n: np.ndarray, R: float = 1.0) -> list[np.ndarray]:
    """Vertices of the optimal set: one per (below, above) label pair, or the nearest label alone if none brackets."""
    y_n = _check_labels(y_i, y_n)
    below, above = np.flatnonzero(y_n < y_i), np.flatnonzero(y_n > y_i)
    if len(below) == 0 or len(above) == 0:
        return [appendix_d_allocation(y_i, y_n, R)]
    vertices = []
    for a, b in itertools.product(below, above):
        p = np.zeros(len(y_n))
        d_a, d_b = y_i - y_n[a], y_i - y_n[b]
        p[a], p[b] = d_b / (d_b - d_a) * R, d_a / (d_a - d_b) * R
        vertices.append(p)
    return vertices


@dataclass(frozen=True)
class QPStudy:
    """Per-instance results of the Appendix D check on random instances."""

    n_neighbours: np.ndarray
    bracketed: np.ndarray
    exact: np.ndarray
    closed_form: np.ndarray
    slsqp: np.ndarray
    distance: np.ndarray
    printed_covered: np.ndarray
    n_vertices: np.ndarray


def appendix_d_study(n: int, max_neighbours: int = 8, seed: int = 0) -> QPStudy:
    """Random instances of the M-neighbour problem.

    For each: the exact optimum, the closed form's value, SLSQP's value and solution.
    """
    if n < 1 or max_neighbours < 2:
        raise ValueError(f"need n >= 1 instances and max_neighbours >= 2, got n={n}, max_neighbours={max_neighbours}")
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(n):
        m = int(rng.integers(2, max_neighbours + 1))
        y_n = rng.uniform(0.0, 1.0, size=m)
        # Anchors a little outside the labels' range too, so both extreme cases occur.
        y_i = float(rng.uniform(-0.15, 1.15))
        R = float(rng.uniform(0.1, 1.0))
        delta = y_i - y_n
        closed = appendix_d_allocation(y_i, y_n, R)
        numeric = solve_qp_slsqp(delta, R, starts=3, seed=seed + index)
        rows.append(
            (
                m,
                bool(y_n.min() < y_i < y_n.max()),
                qp_optimum(delta, R),
                float(delta @ closed) ** 2,
                float(delta @ numeric) ** 2,
                float(np.abs(closed - numeric).sum()),
                printed_case(y_i, y_n) is not None,
                len(optimal_vertices(y_i, y_n, R)),
            )
        )
    columns = list(zip(*rows))
    return QPStudy(*(np.asarray(c) for c in columns))
