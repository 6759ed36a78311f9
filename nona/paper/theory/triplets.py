"""The triplet subproblem ``T_ijk`` of Section 4.1.

Symbols, the printed formulas, its minimiser and the ordering cases.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy import optimize


@dataclass(frozen=True)
class TripletSymbols:
    """Symbols of the triplet subproblem.

    Labels, differences ``Δ_ij, Δ_ik``, the weight ``p_ij`` and the budget ``R``.
    """

    y_i: sp.Symbol
    y_j: sp.Symbol
    y_k: sp.Symbol
    d_ij: sp.Symbol
    d_ik: sp.Symbol
    p_ij: sp.Symbol
    p_ik: sp.Symbol
    R: sp.Symbol

    def delta_values(self) -> dict[sp.Symbol, sp.Expr]:
        """The substitution ``Δ_ij -> y_i - y_j``, ``Δ_ik -> y_i - y_k``."""
        return {self.d_ij: self.y_i - self.y_j, self.d_ik: self.y_i - self.y_k}


def triplet_symbols() -> TripletSymbols:
    """Real symbols of the triplet subproblem (``R`` positive)."""
    y_i, y_j, y_k = sp.symbols("y_i y_j y_k", real=True)
    d_ij, d_ik = sp.symbols(r"\Delta_{ij} \Delta_{ik}", real=True)
    p_ij, p_ik = sp.symbols("p_{ij} p_{ik}", real=True)
    return TripletSymbols(y_i, y_j, y_k, d_ij, d_ik, p_ij, p_ik, sp.Symbol("R", positive=True))


def triplet_objective(t: TripletSymbols) -> sp.Expr:
    """``T_ijk`` with the constraint substituted: ``(Δ_ij p_ij + Δ_ik (R - p_ij))^2``."""
    return (t.d_ij * t.p_ij + t.d_ik * (t.R - t.p_ij)) ** 2


def printed_triplet_formulas(t: TripletSymbols) -> dict[str, sp.Expr]:
    """The triplet formulas as printed in Section 4.1."""
    return {
        "T": (t.d_ij * t.p_ij + t.d_ik * t.p_ik) ** 2,
        "T(p_ij)": ((t.d_ij - t.d_ik) * t.p_ij + t.d_ik * t.R) ** 2,
        "p_ij*": t.d_ik / (t.d_ik - t.d_ij) * t.R,
        "p_ik*": t.d_ij / (t.d_ij - t.d_ik) * t.R,
        "ratio": (t.y_k - t.y_i) / (t.y_i - t.y_j),
    }


def triplet_minimiser(t: TripletSymbols) -> sp.Expr:
    """The unconstrained minimiser of ``T_ijk(p_ij)``, solved by sympy from the stationarity condition."""
    solutions = sp.solve(sp.diff(triplet_objective(t), t.p_ij), t.p_ij)
    if len(solutions) != 1:
        raise ValueError(f"expected one stationary point of T_ijk, sympy found {solutions}")
    return solutions[0]


def conditional_triplet_minimiser(t: TripletSymbols, rest: sp.Symbol) -> sp.Expr:
    """Minimiser of the anchor's loss ``(Δ_ij p_ij + Δ_ik (R - p_ij) + c)^2``.

    The rest ``c = sum_l Δ_il p_il`` is held fixed.
    """
    objective = (t.d_ij * t.p_ij + t.d_ik * (t.R - t.p_ij) + rest) ** 2
    (solution,) = sp.solve(sp.diff(objective, t.p_ij), t.p_ij)
    return solution


@dataclass(frozen=True)
class OrderingCase:
    """One ordering of ``y_i, y_j, y_k`` and what the triplet minimiser does there."""

    order: str
    kind: str
    q: sp.Expr
    region: str
    allocation: str
    nearer: str
    matches_paper: bool


def _decide(expr: sp.Expr) -> bool | None:
    return sp.factor(sp.simplify(expr)).is_positive


def ordering_cases() -> list[OrderingCase]:
    """The 6 label orderings, each with ``q = p_ij*/R`` for labels ``a < a+u < a+u+v`` (``u, v > 0``).

    The cases are decided by sympy.
    """
    t = triplet_symbols()
    a = sp.Symbol("a", real=True)
    u, v = sp.symbols("u v", positive=True)
    q_general = (triplet_minimiser(t) / t.R).subs(t.delta_values())
    cases = []
    for order in itertools.permutations(("i", "j", "k")):
        value = dict(zip(order, (a, a + u, a + u + v)))
        sub = {t.y_i: value["i"], t.y_j: value["j"], t.y_k: value["k"]}
        q = sp.factor(sp.simplify(q_general.subs(sub)))
        kind = "intermediate" if order[1] == "i" else "extreme"
        dist_j, dist_k = sp.Abs(value["j"] - value["i"]), sp.Abs(value["k"] - value["i"])
        j_nearer = _decide(dist_k - dist_j)
        if j_nearer is None and kind == "extreme":
            raise ValueError(f"sympy could not decide which label is nearer for ordering {order}")
        # With the anchor in the middle either neighbour may be nearer (u vs v); the claim there is the ratio.
        nearer = "either" if j_nearer is None else ("j" if j_nearer else "k")
        if _decide(q - 1):
            region, allocation = "p* > R", "p_ij = R, p_ik = 0"
        elif _decide(-q):
            region, allocation = "p* < 0", "p_ij = 0, p_ik = R"
        elif _decide(q) and _decide(1 - q):
            region, allocation = "0 < p* < R", "interior: p_ij = p*, p_ik = R - p*"
        else:
            raise ValueError(f"sympy could not place p*/R = {q} for ordering {order}")
        if kind == "extreme":
            matches = allocation.startswith(f"p_ij = {'R' if nearer == 'j' else '0'}")
        else:
            ratio = printed_triplet_formulas(t)["ratio"].subs(sub)
            matches = region == "0 < p* < R" and sp.simplify(q / (1 - q) - ratio) == 0
        cases.append(OrderingCase(" < ".join(f"y_{s}" for s in order), kind, q, region, allocation, nearer, matches))
    return cases


def triplet_allocation(y_i: float, y_j: float, y_k: float, R: float = 1.0) -> tuple[float, float]:
    """The minimiser ``(p_ij, p_ik)`` of ``T_ijk`` on ``p_ij + p_ik = R``, ``p >= 0``.

    This is the paper's closed form, clipped.
    """
    if y_j == y_k:
        raise ValueError("y_j == y_k makes T_ijk constant in p_ij; the minimiser is not unique")
    d_ij, d_ik = y_i - y_j, y_i - y_k
    p_ij = float(np.clip(d_ik / (d_ik - d_ij) * R, 0.0, R))
    return p_ij, R - p_ij


def brute_force_triplet(y_i: float, y_j: float, y_k: float, R: float = 1.0) -> float:
    """``argmin_{p in [0, R]} T_ijk(p)`` by bounded scalar minimisation (no closed form used)."""
    d_ij, d_ik = y_i - y_j, y_i - y_k

    def objective(p: float) -> float:
        return (d_ij * p + d_ik * (R - p)) ** 2

    # The bounded method never evaluates exactly at the bounds; the endpoints are compared explicitly.
    result = optimize.minimize_scalar(objective, bounds=(0.0, R), method="bounded", options={"xatol": 1e-12})
    candidates = [0.0, R, float(result.x)]
    return min(candidates, key=objective)


def sample_orderings(n: int, seed: int = 0) -> dict[str, dict[str, int]]:
    """Counts per label ordering of ``n`` random triples.

    Counted are all triples, those where the paper's claim holds and those where brute force agrees.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, int]] = {}
    labels, budgets = rng.uniform(size=(n, 3)), rng.uniform(0.05, 1.0, size=n)
    for (y_i, y_j, y_k), R in zip(labels, budgets):
        order = " < ".join(f"y_{s}" for _, s in sorted([(y_i, "i"), (y_j, "j"), (y_k, "k")]))
        row = out.setdefault(order, {"triples": 0, "claim holds": 0, "brute force agrees": 0})
        row["triples"] += 1
        p_ij, p_ik = triplet_allocation(y_i, y_j, y_k, R)
        if min(y_j, y_k) < y_i < max(y_j, y_k):
            # Intermediate: interior optimum in the stated ratio.
            claim = 0 < p_ij < R and np.isclose(p_ij / p_ik, (y_k - y_i) / (y_i - y_j), rtol=1e-9)
        else:
            # Extreme: all weight on the neighbour with the nearer label.
            nearer_j = abs(y_j - y_i) < abs(y_k - y_i)
            claim = (p_ij, p_ik) == ((R, 0.0) if nearer_j else (0.0, R))
        row["claim holds"] += bool(claim)
        row["brute force agrees"] += bool(abs(brute_force_triplet(y_i, y_j, y_k, R) - p_ij) < 1e-6 * max(R, 1.0))
    return out
