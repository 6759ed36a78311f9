"""Section 4.1 symbolically.

The per-anchor MSE term in the forms the paper prints, the corrected expansion,
the ambiguity form.

Forms are built for explicit neighbour counts (sympy does not expand products of
abstract ``Sum`` objects); :func:`general_forms` gives the abstract sums for display.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy as sp


@dataclass(frozen=True)
class Neighbourhood:
    """Symbols of anchor ``i`` with ``n`` neighbours.

    Labels ``y_i``, ``y_j``, weights ``p_ij``, differences ``Δ_ij``.
    """

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
    index_pairs = (
        itertools.permutations(range(nb.n), 2) if pairs == "ordered" else itertools.combinations(range(nb.n), 2)
    )
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
