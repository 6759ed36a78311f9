"""A scikit-learn regressor: projector MLP + NONA head on tabular features, trained by :func:`nona.train.fit`."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from nona.train import RegressionModel, TrainConfig, embed_all, fit

# Two points to train on (each one the other's neighbour in a batch) and one to validate on.
MIN_SAMPLES = 3


class NONARegressor(RegressorMixin, BaseEstimator):
    """Nearness of Neighbors Attention regressor for tabular data, with the scikit-learn estimator API.

    ``fit`` standardises the features, min-max scales the targets to [0, 1]
    (as the paper does), holds out ``validation_fraction`` of the samples for
    early stopping, and trains a :class:`~nona.heads.Projector` (``n_features
    -> hidden -> embed_dim``) with a :class:`~nona.heads.NONA` head using Adam
    on the MSE (:func:`nona.train.fit`; the best validation state is kept).
    Afterwards the embeddings of *every* sample passed to ``fit`` (training and
    validation parts) are computed once, without gradients, and ``predict``
    answers ``softmax(sim(z, Z_fit)) @ y_fit`` with them as neighbours, in the
    units of ``y``.

    Parameters
    ----------
    similarity : {"l2", "l1", "dot", "cos", "rbf"}, default="l2"
        Similarity of embeddings (``l2`` = minus the Euclidean distance, the paper's choice).
    softstep : {"none", "s1-global", "s1-pointwise", "s2-global", "s2-pointwise"}, default="none"
        Optional learned SoftStep mask on the similarities.
    embed_dim : int, default=25
        Embedding dimension ``d`` (paper: 25).
    hidden : int, default=200
        Width of the projector's hidden layer (paper: 200).
    batch_size : int, default=32
        Training batch size; in training each point's neighbours are the rest of its batch.
    lr : float, default=1e-3
        Adam learning rate.
    max_epochs : int, default=100
        Upper bound on training epochs.
    patience : int, default=10
        Early stopping: epochs without a validation improvement before training stops.
    validation_fraction : float, default=0.15
        Fraction of the samples held out (at random) to select the epoch; in (0, 1).
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, the initial weights and the batch order.
        An int makes ``fit`` reproducible on CPU.
    device : str, default="cpu"
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when there is one).
        CPU is the default because tabular problems are small and CPU runs are
        bit-for-bit reproducible.
    verbose : bool, default=False
        Show a progress bar over epochs.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Feature names seen in ``fit`` (only when ``X`` had string column names).
    model_ : nona.train.RegressionModel
        The trained projector and head, in evaluation mode.
    train_config_ : nona.train.TrainConfig
        The configuration ``fit`` trained with (its ``seed`` drawn from ``random_state``).
    x_mean_, x_scale_ : ndarray of shape (n_features,)
        Feature standardisation (a constant feature gets scale 1).
    y_min_, y_span_ : float
        Target scaling ``(y - y_min_) / y_span_`` (constant targets get span 1).
    neighbour_embeddings_ : torch.Tensor of shape (n_samples, embed_dim)
        Embeddings of the samples passed to ``fit``: the neighbours of every prediction.
    neighbour_targets_ : torch.Tensor of shape (n_samples,)
        Their scaled targets.
    n_iter_ : int
        Epochs run.
    best_epoch_ : int
        Epoch whose weights were kept.
    best_validation_mse_ : float
        Validation MSE of that epoch, on the [0, 1] target scale.
    history_ : dict of list of float
        ``train_mse`` and ``val_mse`` per epoch (scaled targets).

    Notes
    -----
    ``sklearn.utils.estimator_checks.check_estimator`` passes in full, with no
    expected failures, both with the default settings and with ``max_epochs``
    lowered (as ``tests/test_estimator.py`` runs it, to keep it fast).
    Training runs in float32, prediction in float64, so that a row's
    prediction does not depend on the other rows of the batch it comes in.

    The models are small: on a busy machine ``torch.set_num_threads(1)``
    often trains them several times faster than torch's default.
    """

    def __init__(
        self,
        similarity: str = "l2",
        softstep: str = "none",
        embed_dim: int = 25,
        hidden: int = 200,
        batch_size: int = 32,
        lr: float = 1e-3,
        max_epochs: int = 100,
        patience: int = 10,
        validation_fraction: float = 0.15,
        random_state=None,
        device: str = "cpu",
        verbose: bool = False,
    ) -> None:
        self.similarity = similarity
        self.softstep = softstep
        self.embed_dim = embed_dim
        self.hidden = hidden
        self.batch_size = batch_size
        self.lr = lr
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    def fit(self, X, y) -> NONARegressor:
        """Train on ``X`` of shape (n_samples, n_features) and ``y`` of shape (n_samples,); returns self."""
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=True, ensure_min_samples=MIN_SAMPLES)
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ValueError(f"validation_fraction must lie strictly between 0 and 1, got {self.validation_fraction!r}")
        n = X.shape[0]
        n_val = math.ceil(self.validation_fraction * n)
        if n - n_val < 2:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of n_samples={n} leaves {n - n_val} training "
                "sample(s); NONA needs at least 2 (each is the other's neighbour): pass more samples or lower it"
            )
        rng = check_random_state(self.random_state)
        order = rng.permutation(n)
        config = TrainConfig(
            head="nona",
            similarity=self.similarity,
            softstep=self.softstep,
            embed_dim=self.embed_dim,
            hidden=self.hidden,
            batch_size=self.batch_size,
            lr=self.lr,
            max_epochs=self.max_epochs,
            patience=self.patience,
            device=self.device,
            seed=int(rng.randint(np.iinfo(np.int32).max)),
        )

        self.x_mean_ = X.mean(axis=0)
        scale = X.std(axis=0)
        self.x_scale_ = np.where(scale > 0, scale, 1.0)
        self.y_min_ = float(y.min())
        span = float(y.max()) - self.y_min_
        self.y_span_ = span if span > 0 else 1.0
        x_all = self._features(X).float()
        y_all = torch.as_tensor((y - self.y_min_) / self.y_span_, dtype=torch.float32)

        val_idx, fit_idx = torch.as_tensor(order[:n_val]), torch.as_tensor(order[n_val:])
        model = RegressionModel(X.shape[1], config)
        result = fit(
            model, (x_all[fit_idx], y_all[fit_idx], x_all[val_idx], y_all[val_idx]), config, progress=self.verbose
        )
        # Trained in float32; predicts in float64: the l2 distance is computed by a
        # matrix-product expansion whose float32 rounding, amplified by the square
        # root near zero distance, moved a row's prediction by ~1e-4 with the size
        # of the batch it came in, and scikit-learn expects batch-invariant output.
        model.double().eval()
        device = next(model.parameters()).device
        self.model_ = model
        self.train_config_ = config
        self.neighbour_embeddings_ = embed_all(model, x_all.to(device, torch.float64))
        self.neighbour_targets_ = y_all.to(device, torch.float64)
        self.n_iter_ = result.epochs_run
        self.best_epoch_ = result.best_epoch
        self.best_validation_mse_ = result.best_val_mse
        self.history_ = result.history
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions of shape (n_samples,) in the units of the ``y`` given to ``fit``."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        with torch.no_grad():
            z = embed_all(self.model_, self._features(X).to(self.neighbour_embeddings_.device))
            scaled = self.model_.head(z, self.neighbour_embeddings_, self.neighbour_targets_)
        return scaled.cpu().numpy() * self.y_span_ + self.y_min_

    def _features(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((X - self.x_mean_) / self.x_scale_, dtype=torch.float64)
