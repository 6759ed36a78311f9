"""The theory of paper 000 (Section 4.1 and Appendix D), checked: sympy identities, allocation optima, a toy model.

Three parts:

* **Symbolic** (sympy): the per-anchor MSE term ``(y_i - sum_j p_ij y_j)^2`` in the
  forms the paper prints, the corrected pairwise/triplet expansion and the
  "ambiguity" decomposition, for explicit neighbour counts (sympy does not expand
  products of abstract ``Sum`` objects, so the abstract forms are for display only).
* **Allocation problems**: the triplet subproblem ``T_ijk`` and the M-neighbour
  quadratic program of Appendix D, with closed forms and independent numeric optima.
* **Empirical**: a small NONA model on a synthetic 1-D-label task, and the statistics
  that compare its learned attention with the allocations the theory predicts.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import sympy as sp
import torch
from scipy import optimize, stats

from nona.heads import NONA, Projector

# ---------------------------------------------------------------------------
# Symbolic: one anchor and its n neighbours
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Neighbourhood:
    """Symbols of anchor ``i`` with ``n`` neighbours: labels ``y_i``, ``y_j``, weights ``p_ij``, differences ``Δ_ij``."""

    y_i: sp.Symbol
    y: tuple[sp.Symbol, ...]
    p: tuple[sp.Symbol, ...]
    delta: tuple[sp.Symbol, ...]

    @property
    def n(self) -> int:
        """Number of neighbours."""
        return len(self.y)

    def delta_values(self) -> dict[sp.Symbol, sp.Expr]:
        """The substitution ``Δ_ij -> y_i - y_j``."""
        return {d: self.y_i - y for d, y in zip(self.delta, self.y)}

    def simplex(self) -> dict[sp.Symbol, sp.Expr]:
        """The substitution ``p_in -> 1 - sum of the other weights`` that imposes ``sum_j p_ij = 1``."""
        return {self.p[-1]: 1 - sum(self.p[:-1])}


def neighbourhood(n: int) -> Neighbourhood:
    """Real symbols for an anchor with ``n`` neighbours (``n >= 2``)."""
    if n < 2:
        raise ValueError(f"the decomposition needs at least 2 neighbours, got n={n}")
    return Neighbourhood(
        y_i=sp.Symbol("y_i", real=True),
        y=tuple(sp.Symbol(f"y_{j}", real=True) for j in range(1, n + 1)),
        p=tuple(sp.Symbol(f"p_{{i{j}}}", real=True) for j in range(1, n + 1)),
        delta=tuple(sp.Symbol(rf"\Delta_{{i{j}}}", real=True) for j in range(1, n + 1)),
    )


def _deltas(nb: Neighbourhood, symbolic: bool) -> list[sp.Expr]:
    # Δ as its own symbol reads better on the page; as y_i - y_j it lets the
    # identity checks work in independent variables only.
    return list(nb.delta) if symbolic else [nb.y_i - y for y in nb.y]


def mse_form(nb: Neighbourhood) -> sp.Expr:
    """Line 2 of the Section 4.1 derivation: ``(y_i - sum_j p_ij y_j)^2``."""
    return (nb.y_i - sum(p * y for p, y in zip(nb.p, nb.y))) ** 2


def delta_form(nb: Neighbourhood, symbolic: bool = False) -> sp.Expr:
    """Line 3: ``(sum_j Δ_ij p_ij)^2``."""
    return sum(d * p for d, p in zip(_deltas(nb, symbolic), nb.p)) ** 2


def pairwise_terms(nb: Neighbourhood, symbolic: bool = False) -> sp.Expr:
    """The pairwise part ``sum_j Δ_ij^2 p_ij^2``."""
    return sum(d**2 * p**2 for d, p in zip(_deltas(nb, symbolic), nb.p))


def triplet_terms(nb: Neighbourhood, symbolic: bool = False, factor: int = 1, pairs: str = "ordered") -> sp.Expr:
    """``factor * sum Δ_ij p_ij Δ_ik p_ik`` over ordered pairs ``j != k`` or unordered pairs ``j < k``."""
    if pairs not in ("ordered", "unordered"):
        raise ValueError(f"pairs must be 'ordered' (j != k) or 'unordered' (j < k), got {pairs!r}")
    d = _deltas(nb, symbolic)
    index_pairs = itertools.permutations(range(nb.n), 2) if pairs == "ordered" else itertools.combinations(range(nb.n), 2)
    return factor * sum(d[j] * nb.p[j] * d[k] * nb.p[k] for j, k in index_pairs)


def printed_expansion(nb: Neighbourhood, symbolic: bool = False) -> sp.Expr:
    """Line 4 exactly as printed: ``sum_j Δ_ij^2 p_ij^2 + 2 sum_{j != k} Δ_ij p_ij Δ_ik p_ik``."""
    return pairwise_terms(nb, symbolic) + triplet_terms(nb, symbolic, factor=2, pairs="ordered")


def corrected_expansion(nb: Neighbourhood, symbolic: bool = False) -> sp.Expr:
    """Line 4 corrected: ``sum_j Δ_ij^2 p_ij^2 + 2 sum_{j < k} Δ_ij p_ij Δ_ik p_ik``."""
    return pairwise_terms(nb, symbolic) + triplet_terms(nb, symbolic, factor=2, pairs="unordered")


def label_spread(nb: Neighbourhood, symbolic: bool = False, pairs: str = "unordered") -> sp.Expr:
    """The weighted spread of the neighbours' labels: ``sum_{j<k} p_ij p_ik (y_j - y_k)^2`` (= ``1/2 sum_{j,k}``)."""
    if pairs not in ("ordered", "unordered"):
        raise ValueError(f"pairs must be 'ordered' (1/2 sum over all j, k) or 'unordered' (j < k), got {pairs!r}")
    # On the page the spread reads best in labels; for the checks, y_j - y_k = Δ_ik - Δ_ij
    # keeps it in the same variables as the other forms.
    d = _deltas(nb, False)

    def gap(j: int, k: int) -> sp.Expr:
        return nb.y[j] - nb.y[k] if symbolic else d[k] - d[j]

    if pairs == "ordered":
        all_pairs = itertools.product(range(nb.n), repeat=2)
        return sp.Rational(1, 2) * sum(nb.p[j] * nb.p[k] * gap(j, k) ** 2 for j, k in all_pairs)
    return sum(nb.p[j] * nb.p[k] * gap(j, k) ** 2 for j, k in itertools.combinations(range(nb.n), 2))


def attraction(nb: Neighbourhood, symbolic: bool = False) -> sp.Expr:
    """The weighted mean squared label distance from the anchor to its neighbours: ``sum_j p_ij Δ_ij^2``."""
    return sum(p * d**2 for p, d in zip(nb.p, _deltas(nb, symbolic)))


def ambiguity_form(nb: Neighbourhood, symbolic: bool = False) -> sp.Expr:
    """``sum_j p_ij Δ_ij^2 - sum_{j<k} p_ij p_ik (y_j - y_k)^2`` (equals the MSE term when the weights sum to 1)."""
    return attraction(nb, symbolic) - label_spread(nb, symbolic)


def ambiguity_form_unnormalised(nb: Neighbourhood) -> sp.Expr:
    """The same split for weights of any sum ``S``: ``S sum_j p_ij Δ_ij^2 - sum_{j<k} p_ij p_ik (y_j - y_k)^2``."""
    return sum(nb.p) * attraction(nb) - label_spread(nb)


def identity_residual(lhs: sp.Expr, rhs: sp.Expr, nb: Neighbourhood, on_simplex: bool = False) -> sp.Expr:
    """``lhs - rhs`` expanded (with ``sum_j p_ij = 1`` substituted if ``on_simplex``); zero iff the identity holds."""
    difference = (lhs - rhs).subs(nb.delta_values())
    if on_simplex:
        difference = difference.subs(nb.simplex())
    return sp.expand(difference)


def printed_expansion_counterexample() -> dict[str, sp.Expr]:
    """Two neighbours with equal labels below the anchor and equal weights: line 3 and printed line 4 differ."""
    nb = neighbourhood(2)
    values = {nb.y_i: 1, nb.y[0]: 0, nb.y[1]: 0, nb.p[0]: sp.Rational(1, 2), nb.p[1]: sp.Rational(1, 2)}
    return {
        "values": values,
        "mse": mse_form(nb).subs(values),
        "line 3": delta_form(nb).subs(values),
        "printed line 4": printed_expansion(nb).subs(values),
        "corrected line 4": corrected_expansion(nb).subs(values),
    }


# ---------------------------------------------------------------------------
# Symbolic: abstract forms, for display
# ---------------------------------------------------------------------------


def general_forms() -> dict[str, sp.Expr]:
    """The derivation's forms with abstract sums over ``n`` neighbours (``j != k`` as a factor ``1 - δ_jk``)."""
    i, j, k = sp.symbols("i j k", integer=True, positive=True)
    n = sp.Symbol("n", integer=True, positive=True)
    y, p, d = sp.IndexedBase("y"), sp.IndexedBase("p"), sp.IndexedBase(r"\Delta")
    pair = d[i, j] * p[i, j] * d[i, k] * p[i, k]
    pairwise = sp.Sum(d[i, j] ** 2 * p[i, j] ** 2, (j, 1, n))
    ordered = sp.Sum(sp.Sum((1 - sp.KroneckerDelta(j, k)) * pair, (k, 1, n)), (j, 1, n))
    return {
        "loss": (y[i] - sp.Sum(p[i, j] * y[j], (j, 1, n))) ** 2,
        "delta": sp.Sum(d[i, j] * p[i, j], (j, 1, n)) ** 2,
        "printed": pairwise + 2 * ordered,
        "corrected ordered": pairwise + ordered,
        "corrected unordered": pairwise + 2 * sp.Sum(sp.Sum(pair, (k, j + 1, n)), (j, 1, n - 1)),
        "attraction": sp.Sum(p[i, j] * d[i, j] ** 2, (j, 1, n)),
        "spread": sp.Sum(sp.Sum(p[i, j] * p[i, k] * (y[j] - y[k]) ** 2, (k, j + 1, n)), (j, 1, n - 1)),
        "simplex": sp.Eq(sp.Sum(p[i, j], (j, 1, n)), 1),
    }


def equation(*sides: sp.Expr | str, relation: str = "=") -> str:
    """LaTeX of ``sides`` joined by ``relation``, each side typeset by sympy (strings are passed through)."""
    return f" {relation} ".join(s if isinstance(s, str) else sp.latex(s) for s in sides)


# ---------------------------------------------------------------------------
# The triplet subproblem of Section 4.1
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TripletSymbols:
    """Symbols of the triplet subproblem: labels, differences ``Δ_ij, Δ_ik``, the weight ``p_ij`` and the budget ``R``."""

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
    """Minimiser of the anchor's loss ``(Δ_ij p_ij + Δ_ik (R - p_ij) + c)^2`` with the rest ``c = sum_l Δ_il p_il`` fixed."""
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
    """The 6 label orderings, each with ``q = p_ij*/R`` for labels ``a < a+u < a+u+v`` (``u, v > 0``), decided by sympy."""
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
    """The minimiser ``(p_ij, p_ik)`` of ``T_ijk`` on ``p_ij + p_ik = R``, ``p >= 0`` (the paper's closed form, clipped)."""
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
    """Counts per label ordering of ``n`` random triples: all, those where the paper's claim holds, brute force agrees."""
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


# ---------------------------------------------------------------------------
# Appendix D: the M-neighbour quadratic program
# ---------------------------------------------------------------------------


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
    """Random instances of the M-neighbour problem: exact optimum, the closed form's value, SLSQP's value and solution."""
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


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default)."""
    if n < 1:
        raise ValueError("need at least one trial for a proportion")
    phat = hits / n
    centre = (phat + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(centre - half), float(centre + half)


# ---------------------------------------------------------------------------
# Empirical: a toy NONA model and the statistics of its attention
# ---------------------------------------------------------------------------


def synthetic_task(n: int, dim: int = 8, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``x ~ U[-1, 1]^dim`` and a smooth nonlinear label of the first four coordinates plus Gaussian noise."""
    if n < 2 or dim < 4:
        raise ValueError(f"need n >= 2 points and dim >= 4 input coordinates, got n={n}, dim={dim}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, dim))
    y = np.sin(np.pi * x[:, 0]) + 0.8 * x[:, 1] * x[:, 2] + 0.5 * x[:, 3] ** 2 + noise * rng.normal(size=n)
    return x.astype(np.float32), y


@dataclass
class ToyFit:
    """A projector trained with a NONA head, its untrained initial state, and the mean training loss per epoch."""

    trained: Projector
    initial: Projector
    head: NONA
    epoch_losses: list[float]


def fit_toy_nona(
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    dim: int = 25,
    hidden: int = 200,
    seed: int = 0,
) -> ToyFit:
    """Train ``Projector -> NONA(l2)`` (no SoftStep) with MSE, Adam, and each batch as its own neighbour set."""
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got epochs={epochs}, batch_size={batch_size}")
    torch.manual_seed(seed)
    projector = Projector(x.shape[1], dim=dim, hidden=hidden)
    initial = Projector(x.shape[1], dim=dim, hidden=hidden)
    initial.load_state_dict(projector.state_dict())
    head = NONA(similarity="l2")
    optimiser = torch.optim.Adam(projector.parameters(), lr=lr)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    # The matrices are tiny (a batch of 128 by 200 units): thread start-up costs more than
    # it saves, and on a shared CPU several threads made training ten times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=generator)
            total, batches = 0.0, 0
            for start in range(0, len(xt), batch_size):
                idx = order[start : start + batch_size]
                if len(idx) < 2:
                    continue  # a lone trailing point has no neighbour
                z = projector(xt[idx])
                loss = torch.mean((head(z, z, yt[idx], exclude_self=True) - yt[idx]) ** 2)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, batches = total + loss.item(), batches + 1
            losses.append(total / batches)
    finally:
        torch.set_num_threads(threads)
    projector.eval()
    initial.eval()
    return ToyFit(projector, initial, head, losses)


def attention_weights(
    projector: Projector, head: NONA, x_anchor: np.ndarray, x_neighbours: np.ndarray | None = None
) -> np.ndarray:
    """``p_ij`` of anchors against neighbours' embeddings, in float64 (small weights keep precision).

    With ``x_neighbours=None`` the anchors are their own neighbour set and each
    anchor's own entry is masked, as in training (leave-one-out).
    """
    with torch.no_grad():
        z = projector(torch.as_tensor(x_anchor, dtype=torch.float32)).double()
        if x_neighbours is None:
            return head.attention(z, z, exclude_self=True).numpy()
        z_n = projector(torch.as_tensor(x_neighbours, dtype=torch.float32)).double()
        return head.attention(z, z_n).numpy()


def predictions(weights: np.ndarray, y_neighbours: np.ndarray) -> np.ndarray:
    """NONA's predictions ``sum_j p_ij y_j`` from an attention matrix."""
    return weights @ y_neighbours


@dataclass(frozen=True)
class Triplets:
    """Intermediate-anchor triplets ``y_j < y_i < y_k``: the theory's and the model's log ratio, and the anchor of each."""

    theory: np.ndarray
    learned: np.ndarray
    anchor: np.ndarray


def _triplet(p: np.ndarray, y_i: float, y_n: np.ndarray, j: int, k: int) -> tuple[float, float]:
    # log p_ij - log p_ik is the similarity difference; the softmax normaliser cancels.
    return float(np.log((y_n[k] - y_i) / (y_i - y_n[j]))), float(np.log(p[j]) - np.log(p[k]))


def intermediate_triplets(
    weights: np.ndarray,
    y_anchor: np.ndarray,
    y_neighbours: np.ndarray,
    per_side: int | None = 2,
    random_per_anchor: int = 4,
    seed: int = 0,
) -> Triplets:
    """Triplets ``y_j < y_i < y_k`` per anchor, with ``log((y_k - y_i)/(y_i - y_j))`` and ``log(p_ij / p_ik)``.

    ``per_side=m`` pairs each of the anchor's ``m`` highest-weight neighbours below
    ``y_i`` with each of the ``m`` highest above; ``per_side=None`` instead draws
    ``random_per_anchor`` pairs uniformly from all neighbours below and above.
    """
    rng = np.random.default_rng(seed)
    theory, learned, anchor = [], [], []
    for row, (p, y_i) in enumerate(zip(weights, y_anchor)):
        below, above = np.flatnonzero(y_neighbours < y_i), np.flatnonzero(y_neighbours > y_i)
        if len(below) == 0 or len(above) == 0:
            continue
        if per_side is None:
            pairs = zip(rng.choice(below, random_per_anchor), rng.choice(above, random_per_anchor))
        else:
            top_below = below[np.argsort(-p[below], kind="stable")[:per_side]]
            top_above = above[np.argsort(-p[above], kind="stable")[:per_side]]
            pairs = itertools.product(top_below, top_above)
        for j, k in pairs:
            t, l = _triplet(p, y_i, y_neighbours, j, k)
            theory.append(t)
            learned.append(l)
            anchor.append(row)
    return Triplets(np.asarray(theory), np.asarray(learned), np.asarray(anchor, dtype=int))


def extreme_pairs(
    weights: np.ndarray,
    y_anchor: np.ndarray,
    y_neighbours: np.ndarray,
    pool: int | None = 4,
    max_pairs: int = 6,
    seed: int = 0,
) -> np.ndarray:
    """Same-side neighbour pairs (extreme anchor): does the neighbour with the nearer label get the larger weight?

    Pairs come from the anchor's ``pool`` highest-weight neighbours (``None``: all
    neighbours); at most ``max_pairs`` pairs per anchor, drawn at random when the pool has more.
    """
    rng = np.random.default_rng(seed)
    hits = []
    for p, y_i in zip(weights, y_anchor):
        chosen = np.arange(len(p)) if pool is None else np.argsort(-p, kind="stable")[:pool]
        n_pairs = len(chosen) * (len(chosen) - 1) // 2
        if n_pairs <= max_pairs:
            pairs = list(itertools.combinations(chosen, 2))
        else:
            pairs = []
            while len(pairs) < max_pairs:
                j, k = rng.choice(chosen, 2, replace=False)
                pairs.append((j, k))
        for j, k in pairs:
            d_j, d_k = y_i - y_neighbours[j], y_i - y_neighbours[k]
            if d_j * d_k <= 0 or abs(d_j) == abs(d_k):
                continue  # the anchor is not extreme for this pair (or the labels tie)
            hits.append((p[j] > p[k]) == (abs(d_j) < abs(d_k)))
    return np.asarray(hits, dtype=bool)


def bracket_mass(weights: np.ndarray, y_anchor: np.ndarray, y_neighbours: np.ndarray) -> np.ndarray:
    """Attention each anchor puts on the Appendix D allocation's support: the nearest label below and the nearest above."""
    mass = np.empty(len(y_anchor))
    for row, (p, y_i) in enumerate(zip(weights, y_anchor)):
        below, above = np.flatnonzero(y_neighbours < y_i), np.flatnonzero(y_neighbours > y_i)
        support = []
        if len(below):
            support.append(below[np.argmax(y_neighbours[below])])
        if len(above):
            support.append(above[np.argmin(y_neighbours[above])])
        mass[row] = p[support].sum()
    return mass


def effective_neighbours(weights: np.ndarray) -> np.ndarray:
    """Inverse participation ratio ``1 / sum_j p_ij^2`` per row: how many neighbours the attention effectively uses."""
    return 1.0 / np.sum(weights**2, axis=1)


def log_correlations(theory: np.ndarray, learned: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations of two log-ratio samples and the least-squares slope of ``learned`` on ``theory``."""
    if len(theory) < 3:
        raise ValueError(f"need at least 3 triplets to correlate, got {len(theory)}")
    slope = float(np.polyfit(theory, learned, 1)[0])
    return {
        "pearson": float(stats.pearsonr(theory, learned).statistic),
        "spearman": float(stats.spearmanr(theory, learned).statistic),
        "slope": slope,
        "n": int(len(theory)),
    }
