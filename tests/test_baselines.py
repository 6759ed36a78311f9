"""Two-stage baselines: NNK against an independent QP solution, k and lam tuned on validation only.

Also the k-NN loss weights and the weighted fit.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

from nona.baselines import NNKRegressor, interpolate, knn_loss_weights, nnk_weights, tuned_interpolation, tuned_nnk
from nona.selection import select_best
from nona.train import RegressionModel, TrainConfig, fit, mse, predict

RIDGE = 1e-6


def qp_by_active_sets(neighbours: np.ndarray, query: np.ndarray) -> np.ndarray:
    """argmin_{theta >= 0} 1/2 theta^T G theta - b^T theta by enumerating supports (tiny k only)."""
    u = neighbours / np.linalg.norm(neighbours, axis=1, keepdims=True)
    q = query / np.linalg.norm(query)
    gram = (1 + u @ u.T) / 2 + RIDGE * np.eye(len(u))
    b = (1 + u @ q) / 2
    best, best_value = np.zeros(len(u)), 0.0
    for size in range(1, len(u) + 1):
        for support in itertools.combinations(range(len(u)), size):
            s = list(support)
            theta = np.zeros(len(u))
            theta[s] = np.linalg.solve(gram[np.ix_(s, s)], b[s])
            value = 0.5 * theta @ gram @ theta - b @ theta
            # The optimum's restriction to its support solves the unconstrained problem there.
            if theta.min() >= 0 and value < best_value:
                best, best_value = theta, value
    return best


def test_nnk_weights_solve_the_qp():
    rng = np.random.default_rng(0)
    sparse = 0
    for k in (2, 3, 5, 6):  # k = 5, 6 > d + 1: the cosine Gram matrix alone is singular
        neighbours, queries = rng.normal(size=(20, k, 3)), rng.normal(size=(20, 3))
        theta = nnk_weights(neighbours, queries, ridge=RIDGE)
        expected = np.stack([qp_by_active_sets(n, q) for n, q in zip(neighbours, queries)])
        np.testing.assert_allclose(theta, expected, atol=1e-8)
        sparse += int((expected == 0).any(axis=1).sum())
    assert sparse > 10  # the non-negativity constraint is active in many problems, so it is tested


def test_one_neighbour_is_the_nearest_neighbour_by_cosine():
    rng = np.random.default_rng(1)
    x_train, y_train, x_test = rng.normal(size=(50, 4)), rng.random(50), rng.normal(size=(30, 4))
    cosine = (x_test @ x_train.T) / np.outer(np.linalg.norm(x_test, axis=1), np.linalg.norm(x_train, axis=1))
    prediction = NNKRegressor(n_neighbors=1).fit(x_train, y_train).predict(x_test)
    np.testing.assert_allclose(prediction, y_train[cosine.argmax(axis=1)], rtol=1e-12)


def test_predictions_are_convex_combinations_of_the_neighbours_labels():
    rng = np.random.default_rng(2)
    x_train, y_train, x_test = rng.normal(size=(200, 5)), rng.random(200), rng.normal(size=(100, 5))
    model = NNKRegressor(n_neighbors=20).fit(x_train, y_train)
    index, theta = model.kneighbors_weights(x_test)
    prediction = model.predict(x_test)
    assert index.shape == theta.shape == (100, 20) and (theta >= 0).all()
    neighbour_labels = y_train[index]
    assert (prediction >= neighbour_labels.min(axis=1) - 1e-12).all()
    assert (prediction <= neighbour_labels.max(axis=1) + 1e-12).all()
    # NNK keeps only some of the k neighbours: it is not a k-NN average in disguise.
    assert (theta > 0).sum(axis=1).mean() < 15


def test_all_zero_coefficients_fall_back_to_the_nearest_label():
    # Every training point is antipodal to the query (cosine -1, kernel 0), so theta = 0;
    # the two training points coincide after unit normalisation (the ridge keeps Cholesky defined).
    model = NNKRegressor(n_neighbors=2).fit(np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([0.25, 0.25]))
    _, theta = model.kneighbors_weights(np.array([[-2.0, 0.0]]))
    assert (theta == 0).all()
    np.testing.assert_array_equal(model.predict(np.array([[-2.0, 0.0]])), [0.25])


def smooth_task(seed: int = 14):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(260, 3))
    y = np.sin(2 * z[:, 0]) + z[:, 1] ** 2 / 2 + 0.3 * rng.normal(size=260)
    return z[:200], y[:200], (z[200:230], y[200:230]), (z[230:], y[230:])


def refit_errors(z_train, y_train, z_eval, y_eval, ks=(5, 10, 20, 30, 50)) -> list[float]:
    scaler = StandardScaler().fit(z_train)
    return [
        np.mean(
            (NNKRegressor(k).fit(scaler.transform(z_train), y_train).predict(scaler.transform(z_eval)) - y_eval) ** 2
        )
        for k in ks
    ]


def test_tuned_nnk_picks_k_on_the_validation_split():
    # Seed 7: the two splits favour different k, neither the smallest, by margins of 1 % and more,
    # so no machine's rounding can change the winners. On split a, k = 20, 30 and 50 give the same
    # MSE up to rounding (NNK puts zero weight on the extra neighbours): a tie, won by the smallest k.
    z_train, y_train, split_a, split_b = smooth_task(seed=7)
    ks = (5, 10, 20, 30, 50)
    errors_a, errors_b = refit_errors(z_train, y_train, *split_a), refit_errors(z_train, y_train, *split_b)
    choice_a, choice_b = select_best(ks, errors_a, prefer="smallest"), select_best(ks, errors_b, prefer="smallest")
    assert (choice_a.chosen, choice_b.chosen) == (20, 10)  # the two splits favour different k, neither the smallest
    assert choice_a.tied == (20, 30, 50) and choice_b.tied == (10,)
    assert abs(choice_a.margin) <= 1e-12 * choice_a.score  # the runner-up of split a is a tied k
    assert min(errors_a[:2]) > 1.01 * choice_a.score  # ... and every untied k is worse by more than 1 %
    assert choice_b.runner_up == 20 and choice_b.margin > 1e-2 * choice_b.score
    model, params = tuned_nnk(z_train, y_train, *split_a)
    assert params["n_neighbors"] == 20 and params["tied"] == [20, 30, 50] and model[-1].n_samples_fit_ == 200
    assert tuned_nnk(z_train, y_train, *split_b)[1]["n_neighbors"] == 10
    # The tuned pipeline predicts as an NNK regressor with that k refitted from scratch.
    scaler = StandardScaler().fit(z_train)
    expected = NNKRegressor(20).fit(scaler.transform(z_train), y_train).predict(scaler.transform(split_b[0]))
    np.testing.assert_allclose(model.predict(split_b[0]), expected, rtol=1e-12)
    assert params["val_mse"] == pytest.approx(np.mean((model.predict(split_a[0]) - split_a[1]) ** 2))


def test_tuned_nnk_near_ties_go_to_the_smallest_k():
    # Seed 14, split b: k = 20, 30 and 50 agree to ~1e-14 relative, and which of them is lowest in the
    # last digits differs between machines (argmin picked 30 on one, 50 on another). The tie rule picks 20.
    z_train, y_train, _, split_b = smooth_task(seed=14)
    errors = refit_errors(z_train, y_train, *split_b)
    assert max(errors[2:]) - min(errors[2:]) < 1e-12 * min(errors[2:])
    model, params = tuned_nnk(z_train, y_train, *split_b)
    assert params["n_neighbors"] == 20 and params["tied"] == [20, 30, 50]
    assert model[-1].n_neighbors == 20


def test_tuned_nnk_caps_k_at_the_training_size():
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(20, 2)), rng.random(20)
    model, params = tuned_nnk(z[:8], y[:8], z[8:14], y[8:14])
    assert params["n_neighbors"] in (5, 8)
    assert model.predict(z[14:]).shape == (6,)


def test_nnk_bad_inputs_raise():
    rng = np.random.default_rng(4)
    z, y = rng.normal(size=(30, 3)), rng.random(30)
    z_nan = z.copy()
    z_nan[2, 1] = np.nan
    with pytest.raises(ValueError, match="z_train contains NaN"):
        tuned_nnk(z_nan, y, z, y)
    with pytest.raises(ValueError, match="y_val has 29 entries but 30 were expected"):
        tuned_nnk(z, y, z, y[:-1])
    with pytest.raises(ValueError, match="z_val has 2 dimensions but z_train has 3"):
        tuned_nnk(z, y, z[:, :2], y)
    with pytest.raises(ValueError, match="n_neighbors=31 must be between 1 and the number of training points"):
        NNKRegressor(31).fit(z, y).predict(z)
    with pytest.raises(ValueError, match="not fitted yet"):
        NNKRegressor().predict(z)
    with pytest.raises(ValueError, match="ridge must be positive"):
        NNKRegressor(ridge=0).fit(z, y)


def test_interpolation_lambda_minimises_validation_mse():
    rng = np.random.default_rng(5)
    y = rng.random(40)
    head, knn = y + 0.1 * rng.normal(size=40), y + 0.1 * rng.normal(size=40)
    lam = tuned_interpolation(head, knn, y)
    grid = np.arange(21) / 20
    errors = [np.mean((g * head + (1 - g) * knn - y) ** 2) for g in grid]
    assert lam == grid[int(np.argmin(errors))] and 0 < lam < 1
    # A validation target that is exactly 0.3 head + 0.7 k-NN.
    assert tuned_interpolation(head, knn, 0.3 * head + 0.7 * knn) == pytest.approx(0.3)
    np.testing.assert_allclose(interpolate(head, knn, 0.3), 0.3 * head + 0.7 * knn)


def test_interpolation_is_chosen_on_validation_not_test():
    rng = np.random.default_rng(6)
    y_val, y_test = rng.random(30), rng.random(30)
    # The head is right on validation, the k-NN on test.
    head_val, knn_val = y_val, y_val + 0.2
    head_test, knn_test = y_test + 0.2, y_test
    lam = tuned_interpolation(head_val, knn_val, y_val)
    assert lam == 1.0
    assert np.mean((interpolate(head_test, knn_test, lam) - y_test) ** 2) > np.mean((knn_test - y_test) ** 2)


def test_interpolation_ties_go_to_the_largest_lambda():
    y = np.zeros(4)
    same = np.array([0.1, -0.2, 0.3, 0.0])
    assert tuned_interpolation(same, same, y) == 1.0  # every lam gives the same MSE
    head, knn = np.ones(4), -np.ones(4)  # MSE(0) == MSE(1) == 1, exactly
    assert tuned_interpolation(head, knn, y, grid=(0.0, 1.0)) == 1.0
    assert tuned_interpolation(head, knn, y, grid=(1.0, 0.0)) == 1.0  # grid order does not matter
    assert tuned_interpolation(head, knn, y, grid=(0.0, 0.25, 1.0)) == 0.25  # a strict minimum is not a tie


def test_interpolation_near_ties_go_to_the_largest_lambda_and_clear_minima_win():
    # MSE(lam) = mean((lam * head + (1 - lam) * knn - y)^2); with head = 1 + a, knn = -1, y = 0 the MSEs of
    # lam = 0 and lam = 1 are 1 and (1 + a)^2: a tie exactly when (1 + a)^2 - 1 <= 1e-6, i.e. a below 5e-7.
    y = np.zeros(4)
    knn = -np.ones(4)
    for a, expected in ((0.0, 1.0), (1e-12, 1.0), (-1e-12, 1.0), (4e-7, 1.0), (-4e-7, 1.0), (1e-6, 0.0), (-1e-6, 1.0)):
        assert tuned_interpolation(np.full(4, 1.0 + a), knn, y, grid=(0.0, 1.0)) == expected, a


def test_interpolation_bad_inputs_raise():
    a = np.zeros(5)
    with pytest.raises(ValueError, match="pred_val_knn has 4 entries but 5 were expected"):
        tuned_interpolation(a, a[:4], a)
    with pytest.raises(ValueError, match="y_val contains NaN"):
        tuned_interpolation(a, a, np.full(5, np.nan))
    with pytest.raises(ValueError, match="lam must lie in"):
        interpolate(a, a, 1.5)
    with pytest.raises(ValueError, match="grid must be a non-empty sequence of values in"):
        tuned_interpolation(a, a, a, grid=(0.5, 2.0))


def test_loss_weights_by_hand():
    x, y = np.array([[0.0], [1.0], [3.0], [10.0]]), np.array([0.0, 0.0, 1.0, 1.0])
    # k = 1: leave-one-out neighbours 1, 0, 1, 2 -> errors 0, 0, 1, 0, mean 1/4 -> 0, 0, 4, 0,
    # clipped to 0.1, 0.1, 4, 0.1 (mean 1.075).
    np.testing.assert_allclose(knn_loss_weights(x, y, k=1), np.array([0.1, 0.1, 4.0, 0.1]) / 1.075)
    # k = 2: neighbours {1,2}, {0,2}, {1,0}, {2,1} -> errors 1/2, 1/2, 1, 1/2, mean 5/8 ->
    # ratios 0.8, 0.8, 1.6, 0.8, squared 0.64, 0.64, 2.56, 0.64 (mean 1.12).
    np.testing.assert_allclose(knn_loss_weights(x, y, k=2, gamma=2.0), np.array([4, 4, 16, 4]) / 7)


def test_loss_weights_exclude_the_point_itself_by_index():
    # Points 0 and 1 coincide: each one's leave-one-out neighbour is the other, whatever order the search returns.
    x, y = np.array([[0.0], [0.0], [5.0], [6.0]]), np.array([0.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(knn_loss_weights(x, y, k=1), np.array([2.0, 2.0, 0.1, 0.1]) / 1.05)


def test_loss_weights_have_mean_one_and_favour_hard_examples():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 4))
    y = np.sin(x[:, 0])
    hard = np.arange(0, 300, 10)
    y[hard] += 2.0  # outliers a k-NN cannot predict
    weights = knn_loss_weights(x, y)
    assert weights.mean() == pytest.approx(1.0) and (weights > 0).all()
    assert weights[hard].mean() > 3 * np.delete(weights, hard).mean()
    np.testing.assert_array_equal(knn_loss_weights(x, y, gamma=0.0), np.ones(300))
    np.testing.assert_array_equal(knn_loss_weights(x, np.full(300, 0.5)), np.ones(300))  # no k-NN error at all


def test_loss_weights_bad_inputs_raise():
    x, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError, match="y_train has 9 entries but 10 were expected"):
        knn_loss_weights(x, y[:9])
    with pytest.raises(ValueError, match="x_train contains NaN"):
        knn_loss_weights(np.full((10, 2), np.nan), y)
    with pytest.raises(ValueError, match="k must be between 1 and the number of training points minus one"):
        knn_loss_weights(x, y, k=10)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        knn_loss_weights(x, y, gamma=-1.0)
    with pytest.raises(ValueError, match="clip must be"):
        knn_loss_weights(x, y, clip=(2.0, 10.0))


def small_task(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_train, x_val = torch.randn(96, 5, generator=g), torch.randn(40, 5, generator=g)
    w = torch.randn(5, generator=g)
    return x_train, torch.sigmoid(x_train @ w), x_val, torch.sigmoid(x_val @ w)


@pytest.mark.parametrize("head", ["dense", "nona"])
def test_uniform_sample_weights_reproduce_the_unweighted_fit(head):
    data = small_task()
    config = TrainConfig(head=head, softstep="none", batch_size=16, max_epochs=3, seed=2)
    plain = RegressionModel(5, config)
    plain_result = fit(plain, data, config)
    for constant in (1.0, 3.0):
        weighted = RegressionModel(5, config)
        result = fit(weighted, data, config, sample_weight=torch.full((96,), constant))
        assert result.history == plain_result.history
        assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), weighted.state_dict().values()))
    # Non-uniform weights change the fit (a knn_loss_weights array is accepted as it is).
    weights = knn_loss_weights(data[0].numpy(), data[1].numpy())
    changed = fit(RegressionModel(5, config), data, config, sample_weight=torch.as_tensor(weights))
    assert changed.history["val_mse"] != plain_result.history["val_mse"]


def test_sample_weights_pull_the_fit_towards_heavy_points_but_validation_stays_unweighted():
    # Cluster A holds the same inputs twice, labelled 0 and 1: its weighted optimum is the weighted mean label
    # (0.1 with weights 9 and 1, 0.5 unweighted). Validation is on cluster B (label 0.7), which both fits learn alike.
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 3, generator=g) - 2.0, torch.randn(64, 3, generator=g) + 2.0
    x_train = torch.cat([a, a, b[:48]])
    y_train = torch.cat([torch.zeros(64), torch.ones(64), torch.full((48,), 0.7)])
    data = (x_train, y_train, b[48:], torch.full((16,), 0.7))
    # The ReLU projector: this test is about the weighting of the loss. With the default tanh/BatchNorm
    # projector the 15-epoch fit of this tiny task ends far from both optima (weighted mean on A: -0.35).
    config = TrainConfig(head="dense", batch_size=32, lr=1e-2, max_epochs=15, patience=15, seed=0, projector="relu")
    weights = torch.cat([torch.full((64,), 9.0), torch.ones(64), torch.ones(48)])
    mean_on_a = {}
    for name, sample_weight in (("plain", None), ("weighted", weights)):
        model = RegressionModel(3, config)
        result = fit(model, data, config, sample_weight=sample_weight)
        # Early stopping scored the unweighted validation MSE.
        assert result.best_val_mse == pytest.approx(mse(predict(model, data[2], x_train, y_train), data[3]), rel=1e-6)
        mean_on_a[name] = float(predict(model, a, x_train, y_train).mean())
    assert mean_on_a["weighted"] == pytest.approx(0.1, abs=0.05)
    assert mean_on_a["plain"] == pytest.approx(0.5, abs=0.05)


def test_bad_sample_weights_raise():
    data = small_task()
    config = TrainConfig(head="dense", max_epochs=1)
    for weights, message in (
        (torch.ones(95), r"one weight per training point, shape \(96,\), got \(95,\)"),
        (torch.ones(96, 1), r"shape \(96,\), got \(96, 1\)"),
        (torch.full((96,), float("nan")), "sample_weight contains NaN or inf"),
        (torch.cat([torch.ones(95), -torch.ones(1)]), "non-negative with a positive sum"),
        (torch.zeros(96), "non-negative with a positive sum"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(RegressionModel(5, config), data, config, sample_weight=weights)
