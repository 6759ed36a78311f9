"""Section 4.1 and Appendix D of the paper: the identities, the errata, and the allocation optima."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp
from scipy import optimize

from nona.paper import theory as th
from nona.paper.stats import wilson_interval

NS = [2, 3, 4, 5]


# ---------------------------------------------------------------------------
# The MSE decomposition
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
def test_delta_form_equals_loss_on_the_simplex(n):
    nb = th.neighbourhood(n)
    assert th.identity_residual(th.mse_form(nb), th.delta_form(nb), nb, on_simplex=True) == 0


@pytest.mark.parametrize("n", NS)
def test_delta_form_needs_weights_summing_to_one(n):
    nb = th.neighbourhood(n)
    assert th.identity_residual(th.mse_form(nb), th.delta_form(nb), nb) != 0


@pytest.mark.parametrize("n", NS)
def test_printed_line_four_double_counts_the_cross_terms(n):
    # Erratum: with an ordered-pair sum over j != k the printed factor 2 counts every cross term twice.
    nb = th.neighbourhood(n)
    residual = th.identity_residual(th.delta_form(nb), th.printed_expansion(nb), nb)
    assert residual != 0
    assert sp.expand(residual + th.triplet_terms(nb, pairs="ordered").subs(nb.delta_values())) == 0
    # Not rescued by the constraint either.
    assert th.identity_residual(th.delta_form(nb), th.printed_expansion(nb), nb, on_simplex=True) != 0


@pytest.mark.parametrize("n", NS)
def test_corrected_line_four_both_readings(n):
    nb = th.neighbourhood(n)
    ordered = th.pairwise_terms(nb) + th.triplet_terms(nb, factor=1, pairs="ordered")
    assert th.identity_residual(th.delta_form(nb), ordered, nb) == 0
    assert th.identity_residual(th.delta_form(nb), th.corrected_expansion(nb), nb) == 0
    assert th.identity_residual(th.delta_form(nb, symbolic=True), th.corrected_expansion(nb, symbolic=True), nb) == 0


@pytest.mark.parametrize("n", NS)
def test_ambiguity_decomposition(n):
    nb = th.neighbourhood(n)
    assert th.identity_residual(th.mse_form(nb), th.ambiguity_form(nb), nb, on_simplex=True) == 0
    assert th.identity_residual(th.mse_form(nb), th.ambiguity_form(nb, symbolic=True), nb, on_simplex=True) == 0
    assert th.identity_residual(th.mse_form(nb), th.ambiguity_form(nb), nb) != 0
    assert th.identity_residual(th.delta_form(nb), th.ambiguity_form_unnormalised(nb), nb) == 0
    assert th.identity_residual(th.label_spread(nb, pairs="ordered"), th.label_spread(nb), nb) == 0


def test_counterexample_to_printed_line_four():
    c = th.printed_expansion_counterexample()
    assert c["mse"] == c["line 3"] == c["corrected line 4"] == 1
    assert c["printed line 4"] == sp.Rational(3, 2)


def test_general_forms_render():
    forms = th.general_forms()
    assert r"\delta_{j k}" in sp.latex(forms["printed"])
    assert r"\sum" in th.equation(forms["delta"], forms["corrected unordered"])
    assert th.equation(forms["delta"], forms["printed"], relation=r"\neq").count(r"\neq") == 1


def test_too_few_neighbours_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        th.neighbourhood(1)


# ---------------------------------------------------------------------------
# The triplet subproblem
# ---------------------------------------------------------------------------


def test_printed_triplet_formulas_hold():
    t = th.triplet_symbols()
    printed = th.printed_triplet_formulas(t)
    objective = th.triplet_objective(t)
    assert sp.expand(objective - printed["T(p_ij)"]) == 0
    assert sp.expand(objective - printed["T"].subs(t.p_ik, t.R - t.p_ij)) == 0
    p_star = th.triplet_minimiser(t)
    assert sp.simplify(p_star - printed["p_ij*"]) == 0
    assert sp.simplify((t.R - p_star) - printed["p_ik*"]) == 0
    ratio = sp.simplify((p_star / (t.R - p_star)).subs(t.delta_values()))
    assert sp.simplify(ratio - printed["ratio"]) == 0


def test_conditional_minimiser_reduces_to_printed_only_without_the_rest():
    t = th.triplet_symbols()
    c = sp.Symbol("c", real=True)
    conditional = th.conditional_triplet_minimiser(t, c)
    assert sp.simplify(conditional.subs(c, 0) - th.triplet_minimiser(t)) == 0
    assert sp.simplify(conditional - th.triplet_minimiser(t)) != 0


def test_all_six_orderings_decided_symbolically():
    cases = th.ordering_cases()
    assert len(cases) == 6
    assert all(c.matches_paper for c in cases)
    assert sorted(c.kind for c in cases) == ["extreme"] * 4 + ["intermediate"] * 2
    by_order = {c.order: c for c in cases}
    assert by_order["y_i < y_j < y_k"].region == "p* > R"
    assert by_order["y_j < y_i < y_k"].region == "0 < p* < R"


def test_triplet_closed_form_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(300):
        y_i, y_j, y_k = rng.normal(size=3)
        R = rng.uniform(0.05, 1.0)
        p_ij, p_ik = th.triplet_allocation(y_i, y_j, y_k, R)
        assert p_ij + p_ik == pytest.approx(R)
        # An independent minimiser: SLSQP on the two weights with the constraint explicit.
        result = optimize.minimize(
            lambda p: ((y_i - y_j) * p[0] + (y_i - y_k) * p[1]) ** 2,
            [R / 2, R / 2],
            method="SLSQP",
            bounds=[(0, R), (0, R)],
            constraints=[{"type": "eq", "fun": lambda p: p[0] + p[1] - R}],
            options={"ftol": 1e-16},
        )
        assert p_ij == pytest.approx(result.x[0], abs=1e-5)
        assert th.brute_force_triplet(y_i, y_j, y_k, R) == pytest.approx(p_ij, abs=1e-6)
        if min(y_j, y_k) < y_i < max(y_j, y_k):
            assert p_ij / p_ik == pytest.approx((y_k - y_i) / (y_i - y_j), rel=1e-9)
        else:
            nearer_j = abs(y_j - y_i) < abs(y_k - y_i)
            assert (p_ij, p_ik) == ((R, 0.0) if nearer_j else (0.0, R))


def test_sampled_orderings_all_agree():
    counts = th.sample_orderings(1200, seed=1)
    assert len(counts) == 6
    for row in counts.values():
        assert row["claim holds"] == row["brute force agrees"] == row["triples"] > 0


def test_equal_neighbour_labels_is_an_error():
    with pytest.raises(ValueError, match="not unique"):
        th.triplet_allocation(0.5, 0.2, 0.2)


# ---------------------------------------------------------------------------
# Appendix D
# ---------------------------------------------------------------------------


def test_appendix_d_lambda():
    lam = th.appendix_d_lambda()
    d_m, d_m1, d_typo = lam["symbols"]
    assert lam["residual corrected"] == 0
    assert lam["residual swapped"] != 0
    assert lam["residual printed"] != 0
    assert sp.simplify(lam["residual printed"].subs(d_typo, d_m1)) == 0
    u, v = sp.symbols("u v", positive=True)
    assert sp.simplify(th.appendix_d_lambda_range() - v / (u + v)) == 0


def test_appendix_d_closed_form_attains_the_optimum():
    study = th.appendix_d_study(200, seed=4)
    np.testing.assert_allclose(study.closed_form, study.exact, atol=1e-15)
    # The exact value is a lower bound that SLSQP, knowing nothing of it, reaches.
    assert np.all(study.slsqp >= study.exact - 1e-12)
    np.testing.assert_allclose(study.slsqp, study.exact, atol=1e-9)
    assert study.bracketed.any() and (~study.bracketed).any()


def test_appendix_d_extreme_cases():
    np.testing.assert_allclose(th.appendix_d_allocation(-0.1, np.array([0.4, 0.2, 0.9]), 0.5), [0, 0.5, 0])
    np.testing.assert_allclose(th.appendix_d_allocation(1.2, np.array([0.4, 0.2, 0.9]), 0.5), [0, 0, 0.5])
    p = th.appendix_d_allocation(0.3, np.array([0.9, 0.1, 0.5]), 1.0)
    np.testing.assert_allclose(p, [0, 0.5, 0.5])


def test_printed_case_range_misses_the_first_bracket():
    # Erratum: "1 < m < M" leaves y_j1 < y_i < y_j2 without a case; 1 <= m < M covers it.
    y_n = np.array([0.1, 0.5, 0.9])
    assert th.printed_case(0.3, y_n) is None
    assert th.printed_case(0.7, y_n) == "bracket m=2"
    p = th.appendix_d_allocation(0.3, y_n)
    assert float((0.3 - y_n) @ p) == pytest.approx(0.0, abs=1e-15)


def test_bracketed_optimum_is_not_unique_beyond_two_neighbours():
    y_i, y_n = 0.5, np.array([0.1, 0.45, 0.6, 0.95])
    vertices = th.optimal_vertices(y_i, y_n)
    assert len(vertices) == 4
    for p in vertices:
        assert p.sum() == pytest.approx(1.0)
        assert float((y_i - y_n) @ p) == pytest.approx(0.0, abs=1e-15)
    assert len({tuple(np.round(p, 12)) for p in vertices}) == 4
    assert len(th.optimal_vertices(0.5, np.array([0.2, 0.7]))) == 1
    assert len(th.optimal_vertices(-1.0, y_n)) == 1


def test_the_two_closest_labels_are_not_always_the_support():
    # Section 4.1's summary says "the one or two neighbors whose labels are closest"; the support is the
    # nearest label on each side, which need not be among the two closest.
    y_i, y_n = 0.5, np.array([0.52, 0.55, 0.2])
    closest_two = np.argsort(np.abs(y_n - y_i))[:2]
    assert th.qp_optimum((y_i - y_n)[closest_two]) > 0
    assert th.qp_optimum(y_i - y_n) == 0
    assert np.flatnonzero(th.appendix_d_allocation(y_i, y_n)).tolist() == [0, 2]


def test_qp_optimum_against_a_grid():
    rng = np.random.default_rng(5)
    grid = [np.array(w) / 20 for w in itertools.product(range(21), repeat=3) if sum(w) == 20]
    for _ in range(50):
        delta = rng.normal(size=3)
        best = min(float(delta @ w) ** 2 for w in grid)
        assert th.qp_optimum(delta) <= best + 1e-15


def test_appendix_d_rejects_tied_labels():
    with pytest.raises(ValueError, match="distinct"):
        th.appendix_d_allocation(0.5, np.array([0.2, 0.2, 0.9]))
    with pytest.raises(ValueError, match="distinct"):
        th.appendix_d_allocation(0.2, np.array([0.2, 0.9]))


# ---------------------------------------------------------------------------
# Empirical helpers
# ---------------------------------------------------------------------------


def test_triplet_and_pair_statistics_on_a_hand_made_attention():
    y_n = np.array([0.0, 0.4, 0.6, 1.0])
    weights = np.array([[0.1, 0.5, 0.3, 0.1]])
    trip = th.intermediate_triplets(weights, np.array([0.5]), y_n, per_side=1)
    assert trip.theory.tolist() == pytest.approx([np.log(0.1 / 0.1)])
    assert trip.learned.tolist() == pytest.approx([np.log(0.5 / 0.3)])
    assert trip.anchor.tolist() == [0]
    assert len(th.intermediate_triplets(weights, np.array([0.5]), y_n, per_side=2).theory) == 4
    assert len(th.intermediate_triplets(weights, np.array([0.5]), y_n, per_side=None, random_per_anchor=7).theory) == 7
    # Anchor 0.3: same-side pairs among all neighbours are (0.4, 0.6), (0.4, 1.0), (0.6, 1.0).
    hits = th.extreme_pairs(weights, np.array([0.3]), y_n, pool=None, max_pairs=10)
    assert hits.tolist() == [True, True, True]
    assert th.bracket_mass(weights, np.array([0.5]), y_n)[0] == pytest.approx(0.8)
    assert th.effective_neighbours(np.full((2, 8), 1 / 8)) == pytest.approx([8, 8])


def test_toy_fit_is_seeded_and_keeps_the_initial_state():
    x, y = th.synthetic_task(96, seed=2)
    a = th.fit_toy_nona(x, y, epochs=2, batch_size=32, dim=4, hidden=8, seed=7)
    b = th.fit_toy_nona(x, y, epochs=2, batch_size=32, dim=4, hidden=8, seed=7)
    assert a.epoch_losses == b.epoch_losses
    fresh = th.fit_toy_nona(x, y, epochs=1, batch_size=32, dim=4, hidden=8, seed=7).initial
    for p, q in zip(a.initial.parameters(), fresh.parameters()):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())
    w = th.attention_weights(a.trained, a.head, x[:5], x)
    assert w.shape == (5, 96) and w.dtype == np.float64
    np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_statistics_helpers():
    lo, hi = wilson_interval(60, 100)
    assert lo < 0.6 < hi
    corr = th.log_correlations(np.arange(5.0), 2 * np.arange(5.0))
    assert (
        corr["pearson"] == pytest.approx(1)
        and corr["spearman"] == pytest.approx(1)
        and corr["slope"] == pytest.approx(2)
    )
    with pytest.raises(ValueError):
        th.synthetic_task(10, dim=3)
    with pytest.raises(ValueError):
        th.log_correlations(np.arange(2.0), np.arange(2.0))
