"""The one tie rule: exact ties, ties within 1e-12, just inside and just outside the tolerance, each preference."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from nona.selection import SELECTION_RTOL, Selection, select_best


def test_a_clear_minimum_wins_whatever_the_preference():
    for prefer in ("first", "last", "smallest", "largest"):
        choice = select_best([5, 10, 20], [3.0, 1.0, 2.0], prefer=prefer)
        assert choice.chosen == 10 and choice.tied == (10,) and choice.score == 1.0
        assert choice.runner_up == 20 and choice.margin == 1.0


def test_exact_ties_go_to_the_stated_candidate():
    scores = [2.0, 1.0, 1.0, 1.0, 3.0]
    ks = [5, 30, 10, 50, 20]
    assert select_best(ks, scores, prefer="first").chosen == 30
    assert select_best(ks, scores, prefer="last").chosen == 50
    assert select_best(ks, scores, prefer="smallest").tied == (10, 30, 50)
    assert select_best(ks, scores, prefer="largest").tied == (50, 30, 10)


def test_ties_within_1e_12_are_ties_whichever_score_is_lowest_in_the_last_digits():
    # The situation of NNK's k on two machines: the same three scores with the lowest one in different places.
    base = 1.7442058085189773
    for lowest in range(3):
        scores = [base * (1 + 1e-12 * (i != lowest)) for i in range(3)]
        choice = select_best([20, 30, 50], scores, prefer="smallest")
        assert choice.chosen == 20 and choice.tied == (20, 30, 50)
        assert abs(choice.margin) <= 2e-12 * base


@pytest.mark.parametrize("best", [2.5e-3, 1.0, 7e4])
def test_the_tolerance_boundary_is_relative(best):
    inside = best * (1 + 0.9 * SELECTION_RTOL)
    outside = best * (1 + 1.1 * SELECTION_RTOL)
    # The preferred candidate has the higher score: it wins only inside the tolerance.
    assert select_best(["a", "b"], [inside, best]).chosen == "a"
    assert select_best(["a", "b"], [inside, best]).tied == ("a", "b")
    choice = select_best(["a", "b"], [outside, best])
    assert choice.chosen == "b" and choice.tied == ("b",) and choice.runner_up == "a"
    assert choice.margin == pytest.approx(1.1 * SELECTION_RTOL * best)


def test_the_result_does_not_depend_on_the_order_of_the_candidates():
    rng = np.random.default_rng(0)
    ks = [3, 5, 7, 9, 11, 13]
    scores = {k: s for k, s in zip(ks, [1.0, 1.0 + 1e-13, 1.0 - 1e-13, 1.1, 1.0 + 2e-6, 0.9999995])}
    expected = select_best(ks, [scores[k] for k in ks], prefer="smallest")
    assert expected.chosen == 3 and expected.tied == (3, 5, 7, 13)
    for _ in range(10):
        order = list(rng.permutation(ks))
        choice = select_best(order, [scores[k] for k in order], prefer="smallest")
        assert (choice.chosen, choice.tied, choice.runner_up) == (expected.chosen, expected.tied, expected.runner_up)


def test_the_runner_up_follows_the_same_rule():
    # 20 wins clearly; 30 and 50 tie for second place within 1e-14, and the preference decides between them.
    choice = select_best([10, 20, 30, 50], [2.0, 1.0, 1.5 * (1 + 1e-14), 1.5], prefer="smallest")
    assert choice.runner_up == 30 and choice.margin == pytest.approx(0.5)
    assert select_best([10, 20, 30, 50], [2.0, 1.0, 1.5 * (1 + 1e-14), 1.5], prefer="largest").runner_up == 50


def test_one_candidate_and_a_zero_best_score():
    only = select_best(["x"], [0.5])
    assert only.chosen == "x" and only.tied == ("x",) and only.runner_up is None and only.margin is None
    # A perfect score of 0: only an exact 0 ties with it (the tolerance is relative).
    assert select_best([1, 2], [1e-300, 0.0], prefer="smallest").chosen == 2
    assert select_best([1, 2], [0.0, 0.0], prefer="largest").chosen == 2


def test_a_selection_is_json_friendly():
    choice = select_best([5, 10], [1.0, 2.0], prefer="smallest")
    assert isinstance(choice, Selection)
    data = json.loads(json.dumps(choice.to_dict()))
    assert data == {
        "chosen": 5,
        "score": 1.0,
        "tied": [5],
        "runner_up": 10,
        "runner_up_score": 2.0,
        "margin": 1.0,
        "rtol": SELECTION_RTOL,
        "prefer": "smallest",
    }


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="no candidates"):
        select_best([], [])
    with pytest.raises(ValueError, match="2 candidates but 1 scores"):
        select_best([1, 2], [1.0])
    with pytest.raises(ValueError, match="prefer must be one of"):
        select_best([1], [1.0], prefer="random")
    with pytest.raises(ValueError, match="non-finite scores"):
        select_best([1, 2], [1.0, float("nan")])
    with pytest.raises(ValueError, match="rtol must be"):
        select_best([1], [1.0], rtol=-1.0)
    with pytest.raises(ValueError, match="needs candidates that can be compared"):
        select_best([1, "a"], [1.0, 1.0], prefer="smallest")


def test_knn_grid_ties_go_to_the_declared_order():
    from nona.train import tuned_knn

    # Every validation label equals every training label: all 12 cells of the grid have MSE 0, exactly.
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 3))
    _, params = tuned_knn(z[:30], np.full(30, 0.5), z[30:], np.full(10, 0.5))
    assert params == {"n_neighbors": 3, "p": 1, "weights": "uniform"}


def test_knn_grid_picks_the_cell_of_lowest_validation_mse():
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    from nona.train import tuned_knn

    rng = np.random.default_rng(2)
    z = rng.normal(size=(260, 3))
    y = np.sin(2 * z[:, 0]) + 0.3 * rng.normal(size=260)
    scaler = StandardScaler().fit(z[:200])
    cells = list(itertools.product([3, 5, 7], [1, 2], ["uniform", "distance"]))
    errors = [
        np.mean(
            (
                KNeighborsRegressor(n_neighbors=k, p=p, weights=w)
                .fit(scaler.transform(z[:200]), y[:200])
                .predict(scaler.transform(z[200:]))
                - y[200:]
            )
            ** 2
        )
        for k, p, w in cells
    ]
    expected = select_best(cells, errors, prefer="first")
    assert expected.margin > 1e-4 * expected.score  # a clear winner, not a rounding decision
    _, params = tuned_knn(z[:200], y[:200], z[200:], y[200:])
    assert (params["n_neighbors"], params["p"], params["weights"]) == expected.chosen
    shuffled = random.Random(0).sample(range(60), 60)  # the order of the validation points does not matter
    _, again = tuned_knn(z[:200], y[:200], z[200:][shuffled], y[200:][shuffled])
    assert again == params
