"""Two-stage baselines on final embeddings: NNK regression, k-NN test-time interpolation, k-NN loss weights.

* **NNK regression** (Shekkizhar & Ortega, ICASSP 2020). For a query
  q and its k nearest training neighbours S, with the cosine kernel shifted to
  [0, 1], ``K(u, v) = (1 + cos(u, v)) / 2``, solve the non-negative kernel
  regression

      theta* = argmin_{theta >= 0}  1/2 theta^T (K_SS + eps I) theta - K_Sq^T theta

  and predict ``y_hat = sum_j theta_j y_j / sum_j theta_j``. With the Cholesky
  factor ``K_SS + eps I = L L^T`` the objective equals
  ``1/2 ||L^T theta - L^{-1} K_Sq||^2`` minus a constant, so theta* is the
  non-negative least-squares solution of ``L^T theta = L^{-1} K_Sq`` (scipy's
  NNLS, an exact active-set method). The ridge ``eps`` (1e-6 of a unit
  diagonal) keeps the factorisation defined when neighbours coincide or are
  collinear (a cosine Gram matrix of k > d + 1 points is singular). NNK keeps a
  neighbour only if it adds a new direction, so it is sparser than k-NN and
  less sensitive to k; k is still tuned on the validation split.
* **k-NN test-time interpolation** (Jia et al. 2021, "Rethinking Nearest
  Neighbors for Visual Classification", here for regression):
  ``y = lam * y_head + (1 - lam) * y_knn``, lam tuned on the validation split.
* **k-NN-guided loss weights** (Jia et al. 2021, here for regression):
  training examples that a leave-one-out k-NN on the frozen input features
  predicts badly get more weight in :func:`nona.train.fit`.

Embeddings and inputs are standardised per dimension on the training split
before any neighbour search, as :func:`nona.train.tuned_knn` does, so the
baselines share one convention.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from nona.selection import select_best

NNK_K_GRID = (5, 10, 20, 30, 50)
LAMBDA_GRID = tuple(np.arange(21) / 20)  # 0, 0.05, ..., 1 (i / 20 is the nearest float to each step)
WEIGHT_CLIP = (0.1, 10.0)


def _as_matrix(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (points x features), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(
            f"{name} contains NaN or inf; clean the embeddings/features (a diverged run yields NaN embeddings)"
        )
    return x


def _as_vector(name: str, y, length: int | None = None) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of labels or predictions, got shape {y.shape}")
    if length is not None and len(y) != length:
        raise ValueError(f"{name} has {len(y)} entries but {length} were expected (one per point)")
    if not np.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or inf; clean it before fitting")
    return y


def _unit_rows(x: np.ndarray) -> np.ndarray:
    # A zero row stays zero: cos = 0 with everything. The kernel (1 + <u, v>) / 2
    # is then still positive semi-definite (half a constant plus a linear kernel).
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def nnk_weights(neighbours: np.ndarray, queries: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """NNK coefficients theta (m x k) of m queries (m x d) on their neighbours (m x k x d), cosine kernel in [0, 1]."""
    u_n, u_q = _unit_rows(neighbours.reshape(-1, neighbours.shape[-1])).reshape(neighbours.shape), _unit_rows(queries)
    k = u_n.shape[1]
    gram = (1.0 + u_n @ u_n.transpose(0, 2, 1)) / 2.0 + ridge * np.eye(k)
    k_sq = (1.0 + np.einsum("mkd,md->mk", u_n, u_q)) / 2.0
    chol = np.linalg.cholesky(gram)  # batched: gram = L L^T
    rhs = np.linalg.solve(chol, k_sq[..., None])[..., 0]  # L^{-1} K_Sq
    design = chol.transpose(0, 2, 1)  # L^T
    return np.stack([nnls(a, b)[0] for a, b in zip(design, rhs)])


class NNKRegressor(RegressorMixin, BaseEstimator):
    """Non-negative kernel regression on the k nearest training points (cosine kernel shifted to [0, 1])."""

    def __init__(self, n_neighbors: int = 10, ridge: float = 1e-6, chunk_size: int = 1024) -> None:
        self.n_neighbors = n_neighbors
        self.ridge = ridge
        self.chunk_size = chunk_size

    def fit(self, X, y) -> NNKRegressor:
        """Store the training points (unit-normalised) and labels."""
        X = _as_matrix("X", X)
        y = _as_vector("y", y, len(X))
        if int(self.n_neighbors) < 1:
            raise ValueError(f"n_neighbors must be a positive integer, got {self.n_neighbors!r}")
        if not float(self.ridge) > 0:
            raise ValueError(f"ridge must be positive (it keeps the Cholesky factor defined), got {self.ridge!r}")
        self.unit_train_ = _unit_rows(X)
        self.y_train_ = y
        self.n_samples_fit_ = len(X)
        self.n_features_in_ = X.shape[1]
        # Euclidean neighbours of unit vectors are the neighbours of highest cosine.
        self.index_ = NearestNeighbors(algorithm="brute").fit(self.unit_train_)
        return self

    def _check_query(self, X) -> np.ndarray:
        if not hasattr(self, "index_"):
            raise ValueError("this NNKRegressor is not fitted yet; call fit(X_train, y_train) first")
        X = _as_matrix("X", X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features but the regressor was fitted on {self.n_features_in_}")
        return X

    def kneighbors_weights(self, X, n_neighbors: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Indices of each query's k nearest training points (most similar first) and their NNK coefficients."""
        X = _unit_rows(self._check_query(X))
        k = int(self.n_neighbors if n_neighbors is None else n_neighbors)
        if not 1 <= k <= self.n_samples_fit_:
            raise ValueError(
                f"n_neighbors={k} must be between 1 and the number of training points ({self.n_samples_fit_})"
            )
        index = self.index_.kneighbors(X, n_neighbors=k, return_distance=False)
        theta = np.concatenate(
            [
                nnk_weights(self.unit_train_[index[i : i + self.chunk_size]], X[i : i + self.chunk_size], self.ridge)
                for i in range(0, len(X), self.chunk_size)
            ]
        )
        return index, theta

    def _predict_from(self, index: np.ndarray, theta: np.ndarray) -> np.ndarray:
        total = theta.sum(axis=1)
        # theta = 0 only when every neighbour has kernel 0 with the query (cosine -1):
        # then no neighbour explains it, and the prediction falls back to the nearest one's label.
        safe = np.where(total > 0, total, 1.0)
        return np.where(total > 0, (theta * self.y_train_[index]).sum(axis=1) / safe, self.y_train_[index[:, 0]])

    def predict(self, X) -> np.ndarray:
        """``sum_j theta_j y_j / sum_j theta_j`` per query (the nearest neighbour's label when theta is all zero)."""
        return self._predict_from(*self.kneighbors_weights(X))

    def predict_for_each_k(self, X, ks: tuple[int, ...]) -> np.ndarray:
        """Predictions (len(ks) x m) for several k, from one neighbour search with the largest k."""
        X = _unit_rows(self._check_query(X))
        ks = tuple(int(k) for k in ks)
        if not ks or min(ks) < 1 or max(ks) > self.n_samples_fit_:
            raise ValueError(
                f"every k must be between 1 and the number of training points ({self.n_samples_fit_}), got {ks}"
            )
        index = self.index_.kneighbors(X, n_neighbors=max(ks), return_distance=False)
        out = np.empty((len(ks), len(X)))
        for i in range(0, len(X), self.chunk_size):
            rows = slice(i, i + self.chunk_size)
            neighbours = self.unit_train_[index[rows]]
            for j, k in enumerate(ks):
                # The k nearest are a prefix of the max(ks) nearest.
                theta = nnk_weights(neighbours[:, :k], X[rows], self.ridge)
                out[j, rows] = self._predict_from(index[rows, :k], theta)
        return out


def tuned_nnk(
    z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray, ks: tuple[int, ...] = NNK_K_GRID
) -> tuple[Pipeline, dict]:
    """NNK regressor on standardised embeddings with k tuned on the validation split.

    Each k of the grid is capped at the training size; the k of lowest
    validation MSE wins by the rule of :mod:`nona.selection`: ks whose MSE is
    within a relative ``SELECTION_RTOL`` (1e-6) of the lowest are tied, and a
    tie goes to the smallest k. (NNK gives zero weight to neighbours that add
    no new direction, so larger ks often reproduce a smaller k's predictions
    up to rounding.) The returned pipeline (StandardScaler -> NNKRegressor)
    uses the training embeddings only as neighbours; ``params`` is
    ``{"n_neighbors": k, "val_mse": ..., "tied": [ks tied with the best]}``.
    """
    z_train, z_val = _as_matrix("z_train", z_train), _as_matrix("z_val", z_val)
    y_train, y_val = _as_vector("y_train", y_train, len(z_train)), _as_vector("y_val", y_val, len(z_val))
    if z_val.shape[1] != z_train.shape[1]:
        raise ValueError(f"z_val has {z_val.shape[1]} dimensions but z_train has {z_train.shape[1]}")
    grid = tuple(sorted({min(int(k), len(z_train)) for k in ks}))
    if not grid or grid[0] < 1:
        raise ValueError(f"ks must hold positive integers, got {ks!r}")
    scaler = StandardScaler().fit(z_train)
    nnk = NNKRegressor(n_neighbors=grid[-1]).fit(scaler.transform(z_train), y_train)
    val_mse = np.mean((nnk.predict_for_each_k(scaler.transform(z_val), grid) - y_val) ** 2, axis=1)
    choice = select_best(grid, val_mse, prefer="smallest")
    nnk.set_params(n_neighbors=choice.chosen)
    params = {"n_neighbors": choice.chosen, "val_mse": choice.score, "tied": list(choice.tied)}
    return Pipeline([("standardscaler", scaler), ("nnkregressor", nnk)]), params


def interpolate(pred_head: np.ndarray, pred_knn: np.ndarray, lam: float) -> np.ndarray:
    """``lam * pred_head + (1 - lam) * pred_knn``."""
    pred_head = _as_vector("pred_head", pred_head)
    pred_knn = _as_vector("pred_knn", pred_knn, len(pred_head))
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must lie in [0, 1] (a convex combination of the two predictions), got {lam!r}")
    return lam * pred_head + (1.0 - lam) * pred_knn


def tuned_interpolation(
    pred_val_head: np.ndarray, pred_val_knn: np.ndarray, y_val: np.ndarray, grid: tuple[float, ...] = LAMBDA_GRID
) -> float:
    """The lam of ``grid`` whose interpolation has the lowest validation MSE (ties: the largest lam).

    The rule of :mod:`nona.selection`: MSEs within a relative
    ``SELECTION_RTOL`` (1e-6) of the minimum are tied, so rounding noise cannot
    decide, and a tie goes to the largest lam, i.e. towards the head alone: the
    k-NN only gets weight where it lowers the validation error. Pass the
    validation predictions only; the test split never enters the choice.
    """
    pred_val_head = _as_vector("pred_val_head", pred_val_head)
    pred_val_knn = _as_vector("pred_val_knn", pred_val_knn, len(pred_val_head))
    y_val = _as_vector("y_val", y_val, len(pred_val_head))
    if len(y_val) == 0:
        raise ValueError("y_val is empty; lam is chosen on the validation split, which needs at least one point")
    lams = np.asarray(grid, dtype=np.float64)
    if lams.ndim != 1 or len(lams) == 0 or not np.all((lams >= 0) & (lams <= 1)):
        raise ValueError(f"grid must be a non-empty sequence of values in [0, 1], got {grid!r}")
    val_mse = np.array([np.mean((interpolate(pred_val_head, pred_val_knn, lam) - y_val) ** 2) for lam in lams])
    return float(select_best(lams.tolist(), val_mse, prefer="largest").chosen)


def knn_loss_weights(
    x_train: np.ndarray, y_train: np.ndarray, k: int = 5, gamma: float = 1.0, clip: tuple[float, float] = WEIGHT_CLIP
) -> np.ndarray:
    """Per-example training loss weights (mean 1) that grow with the leave-one-out k-NN error.

    On the per-dimension standardised inputs, ``e_i = |y_i - mean of y over
    the k nearest other training points|`` (uniform k-NN, the point itself
    excluded by index, so duplicates still count as neighbours). Then
    ``w_i = (e_i / mean(e)) ** gamma``, clipped to ``clip`` (default
    [0.1, 10], so no example is dropped nor dominates) and divided by its mean.
    ``gamma = 0`` or a k-NN with no error gives uniform weights. ``k = 5`` is
    the middle of the paper's k-NN grid; gamma is not tuned here (default 1).
    """
    x_train = _as_matrix("x_train", x_train)
    y_train = _as_vector("y_train", y_train, len(x_train))
    if not 1 <= int(k) < len(x_train):
        raise ValueError(
            f"k must be between 1 and the number of training points minus one ({len(x_train) - 1}), got {k!r}"
        )
    if not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0 (0 gives uniform weights), got {gamma!r}")
    low, high = clip
    if not 0 < low <= 1 <= high < np.inf:
        raise ValueError(f"clip must be (low, high) with 0 < low <= 1 <= high < inf, got {clip!r}")
    k = int(k)
    x = StandardScaler().fit_transform(x_train)
    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x, return_distance=False)
    own = index == np.arange(len(x))[:, None]
    # Drop the point itself; if a duplicate took its place in the k + 1, drop the farthest instead.
    own[~own.any(axis=1), -1] = True
    neighbours = index[~own].reshape(len(x), k)
    errors = np.abs(y_train - y_train[neighbours].mean(axis=1))
    if errors.mean() == 0:
        return np.ones(len(x))
    weights = np.clip((errors / errors.mean()) ** gamma, low, high)
    return weights / weights.mean()
