"""Training of a (backbone top +) projector + regression head with Adam on MSE, early stopping on validation MSE.

Protocol of the paper (Section 5): stop after ``patience`` epochs without a
validation improvement; the best state is stored and restored, so the returned
model is the one that was selected. Validation starts at epoch 1 (the authors'
loop only from epoch 6; see the deviation table on the Method page).

Inputs come in three kinds: a feature tensor (frozen backbone), a mapping of
tensors (cached activations below a trainable backbone top, e.g. a transformer's
hidden states and attention mask) or :class:`RawInputs` (end-to-end). Every
batch of every kind reaches the model through :func:`nona.devices.move_to`, in
training, validation, embedding and prediction alike.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from nona.devices import move_to, resolve_device
from nona.heads import NONA, PROJECTOR_STYLES, DenseHead, Projector
from nona.neighbour_heads import NCA, DifferentiableKNN
from nona.similarity import SIMILARITIES
from nona.softstep import PARAM_MODES, SOFTSTEP_FUNCTIONS, softstep_from_spec

HEADS = ("dense", "nona", "nca", "dknn")
# Heads that predict from neighbours (NONA and its subclasses in nona.neighbour_heads), with their names.
NEIGHBOUR_HEADS = {"nona": "NONA", "nca": "NCA", "dknn": "differentiable k-NN"}
LOSS_WEIGHTS = ("none", "knn")
SOFTSTEP_CHOICES = ("none",) + tuple(f"{fn}-{mode}" for fn in SOFTSTEP_FUNCTIONS for mode in PARAM_MODES)


@dataclass
class TrainConfig:
    """Everything that defines one training run."""

    head: str = "nona"
    similarity: str = "l2"
    softstep: str = "s2-pointwise"
    embed_dim: int = 25
    hidden: int = 200
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr: float = 1e-5
    max_epochs: int = 100
    patience: int = 10
    device: str = "auto"
    seed: int = 0
    # "knn": weight each training point's loss by its leave-one-out k-NN error
    # on the frozen features (nona.baselines.knn_loss_weights).
    loss_weights: str = "none"
    # "tanh": the authors' projector (BatchNorm -> Linear -> Tanh, twice); "relu": Linear -> ReLU -> Linear.
    projector: str = "tanh"
    # How much of the backbone trains with the head: 0 = frozen, k = its last k blocks, "all" = end to end.
    # Recorded with every run; the pipeline builds the inputs that match it (nona.pipeline.experiment).
    trainable_layers: int | str = 0

    def __post_init__(self) -> None:
        _check_choice("head", self.head, HEADS)
        _check_choice("loss_weights", self.loss_weights, LOSS_WEIGHTS)
        _check_choice("similarity", self.similarity, SIMILARITIES)
        _check_choice("softstep", self.softstep, SOFTSTEP_CHOICES)
        _check_choice("projector", self.projector, PROJECTOR_STYLES)
        check_trainable_layers(self.trainable_layers)
        for name in ("embed_dim", "hidden", "batch_size", "max_epochs", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.head in NEIGHBOUR_HEADS and self.batch_size < 2:
            raise ValueError(
                f"the {NEIGHBOUR_HEADS[self.head]} head needs batch_size >= 2: "
                "each point's neighbours are the rest of its batch"
            )
        if self.head == "nca" and self.similarity != "rbf":
            raise ValueError(
                f"the NCA head is defined on the rbf similarity; set similarity='rbf' (got {self.similarity!r})"
            )
        if self.head == "dknn" and self.softstep == "none":
            raise ValueError(
                "the dknn head learns its k through SoftStep and needs one: set softstep to e.g. 'lu-global'"
            )
        for name in ("lr", "backbone_lr"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """The configuration as a JSON-ready dict."""
        return asdict(self)


def check_trainable_layers(value: object) -> int | str:
    """``value`` if it is a valid ``trainable_layers`` (a non-negative integer or ``"all"``); else a ValueError."""
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise ValueError(
        f"trainable_layers must be 0 (frozen backbone), a positive number of top blocks or 'all', got {value!r}"
    )


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid values are: {', '.join(valid)}")


class RegressionModel(nn.Module):
    """Optional backbone -> Projector -> head (dense, NONA, NCA or differentiable k-NN)."""

    def __init__(self, in_dim: int, config: TrainConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        # The seed fixes the initial weights without touching the global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.projector = Projector(in_dim, dim=config.embed_dim, hidden=config.hidden, style=config.projector)
            if config.head == "dense":
                self.head: nn.Module = DenseHead(config.embed_dim)
            elif config.head == "nca":
                self.head = NCA(softstep=softstep_from_spec(config.softstep, config.embed_dim))
            elif config.head == "dknn":
                # Ranks scaled by a full training batch's neighbour count, so the learned k
                # means the same number of neighbours against the (larger) training set.
                self.head = DifferentiableKNN(
                    similarity=config.similarity,
                    softstep=softstep_from_spec(config.softstep, config.embed_dim),
                    max_rank=max(config.batch_size - 2, 1),
                )
            else:
                softstep = softstep_from_spec(config.softstep, config.embed_dim)
                self.head = NONA(similarity=config.similarity, softstep=softstep)

    @property
    def predicts_from_neighbours(self) -> bool:
        """Whether the head predicts from neighbours (NONA, NCA, differentiable k-NN) rather than from z alone."""
        return isinstance(self.head, NONA)

    def embed(self, x: Tensor) -> Tensor:
        """The embeddings the head sees."""
        features = self.backbone(x) if self.backbone is not None else x
        return self.projector(features)

    def train_step_prediction(self, x: Tensor, y: Tensor) -> Tensor:
        """Training predictions: a neighbour head uses the batch as its own neighbour set."""
        z = self.embed(x)
        return self.head(z, z, y, exclude_self=True) if self.predicts_from_neighbours else self.head(z)


class RawInputs:
    """Raw dataset inputs that a trainable backbone transforms batch by batch (end-to-end fine-tuning)."""

    def __init__(self, backbone, inputs, sample_rate: int | None = None) -> None:
        self.backbone = backbone
        self.inputs = inputs
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: np.ndarray) -> RawInputs:
        """The inputs at ``indices`` (e.g. one split)."""
        picked = self.inputs[indices] if isinstance(self.inputs, np.ndarray) else [self.inputs[i] for i in indices]
        return RawInputs(self.backbone, picked, self.sample_rate)

    def take(self, indices) -> object:
        """The transformed batch of the inputs at ``indices`` (on the CPU; the caller moves it with ``move_to``)."""
        picked = self.subset(np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices)).inputs
        return self.backbone.transform(picked, sample_rate=self.sample_rate)


Inputs = Tensor | Mapping[str, Tensor] | RawInputs


def input_length(x: Inputs) -> int:
    """Number of examples in a tensor, a mapping of tensors (all of the same length) or RawInputs."""
    if isinstance(x, Mapping):
        lengths = {len(v) for v in x.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"the tensors of a mapping input must all have one length per example, got lengths {sorted(lengths)}"
            )
        return lengths.pop()
    return len(x)


def take_rows(x: Inputs, indices) -> object:
    """The rows ``indices`` of a tensor or of each tensor of a mapping, or the transformed batch of RawInputs."""
    if isinstance(x, Tensor):
        return x[indices]
    if isinstance(x, Mapping):
        return {k: v[indices.to(v.device) if isinstance(indices, Tensor) else indices] for k, v in x.items()}
    return x.take(indices)


def _batch(x: Inputs, indices, device: torch.device) -> object:
    # The one path from any input kind to the model: rows, then nona.devices.move_to.
    return move_to(take_rows(x, indices), device)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@dataclass
class FitResult:
    """What :func:`fit` returns besides the trained model (which it modifies in place)."""

    best_epoch: int
    best_val_mse: float
    epochs_run: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    # Optimiser steps taken and the seconds they took (forward, backward, update; validation excluded).
    steps: int = 0
    step_seconds: float = 0.0


@torch.no_grad()
def embed_all(model: RegressionModel, x: Inputs, batch_size: int = 4096) -> Tensor:
    """Embeddings of every row of ``x`` (on the model's device), in evaluation mode and without gradients."""
    model.eval()
    device, n = _model_device(model), input_length(x)
    return torch.cat(
        [model.embed(_batch(x, torch.arange(i, min(i + batch_size, n)), device)) for i in range(0, n, batch_size)]
    )


@torch.no_grad()
def predict(model: RegressionModel, x: Inputs, x_train: Inputs, y_train: Tensor) -> Tensor:
    """Predictions for ``x`` on the model's device; a neighbour head uses the training set's embeddings as neighbours.

    The training embeddings are computed once per call, without gradients.
    """
    model.eval()
    z = embed_all(model, x)
    if not model.predicts_from_neighbours:
        return model.head(z)
    return model.head(z, embed_all(model, x_train), move_to(y_train, z.device))


def mse(prediction: Tensor, target: Tensor) -> float:
    """Mean squared error as a Python float."""
    return float(torch.mean((prediction - target) ** 2))


def _optimizer(model: RegressionModel, config: TrainConfig) -> torch.optim.Optimizer:
    groups = [{"params": [p for n, p in model.named_parameters() if not n.startswith("backbone.")], "lr": config.lr}]
    if model.backbone is not None:
        trainable = [p for p in model.backbone.parameters() if p.requires_grad]
        if trainable:
            groups.append({"params": trainable, "lr": config.backbone_lr})
    # The fused update: one kernel over all parameters instead of a dozen per-tensor ones, a
    # quarter of a frozen-feature step at b = 32 on a CPU (4.5 -> 3.3 ms). Same algorithm.
    return torch.optim.Adam(groups, fused=True)


def _check_sample_weight(sample_weight: Tensor, n_train: int) -> Tensor:
    weights = torch.as_tensor(sample_weight, dtype=torch.float64)
    if weights.shape != (n_train,):
        raise ValueError(
            f"sample_weight must hold one weight per training point, shape ({n_train},), got {tuple(weights.shape)}"
        )
    if not torch.isfinite(weights).all():
        raise ValueError(
            "sample_weight contains NaN or inf; pass finite weights (e.g. from nona.baselines.knn_loss_weights)"
        )
    if (weights < 0).any() or not weights.sum() > 0:
        raise ValueError(
            "sample_weight must be non-negative with a positive sum; a negative weight would reward errors"
        )
    # Rescaled in float64, then rounded to float32: constant weights become exactly 1.0,
    # so the weighted loss reproduces the unweighted one.
    return (weights / weights.mean()).to(torch.float32)


def fit(
    model: RegressionModel,
    data: tuple[Inputs, Tensor, Inputs, Tensor],
    config: TrainConfig,
    progress: bool = False,
    sample_weight: Tensor | None = None,
) -> FitResult:
    """Train ``model`` with Adam on the MSE, stopping early on validation MSE; restores the best state.

    Parameters
    ----------
    model : RegressionModel
        Projector and head (and optionally a trainable backbone top); trained in place.
    data : tuple
        ``(x_train, y_train, x_val, y_val)``. Each ``x`` is a feature tensor (frozen
        backbone), a mapping of tensors or a tensor of cached activations (the model's
        ``backbone`` is then the trainable top that takes them), or :class:`RawInputs`
        (the model's backbone is fine-tuned end to end); each ``y`` a 1-D float tensor.
    config : TrainConfig
        Batch size, learning rates, epochs, patience, device and seed.
    progress : bool, default=False
        Show a progress bar over epochs.
    sample_weight : torch.Tensor or None, default=None
        One non-negative weight per training point (e.g. from
        :func:`nona.baselines.knn_loss_weights`), rescaled to mean 1: each batch's loss
        is then ``mean(w_i * (y_hat_i - y_i) ** 2)``, so an epoch estimates the weighted
        mean ``sum w r^2 / sum w``, and uniform weights give the unweighted fit.
        Validation MSE, early stopping and the recorded ``train_mse`` stay unweighted.

    Returns
    -------
    FitResult
        Best epoch, its validation MSE, epochs run, seconds and the per-epoch history.

    Raises
    ------
    ValueError
        For NaN or infinite labels, inputs and labels of different lengths, or invalid weights.
    """
    x_train, y_train, x_val, y_val = data
    for name, y in (("y_train", y_train), ("y_val", y_val)):
        if not torch.isfinite(y).all():
            raise ValueError(f"{name} contains NaN or inf labels; clean the labels before training")
    n_train, n_val = input_length(x_train), input_length(x_val)
    if n_train != len(y_train) or n_val != len(y_val):
        raise ValueError(
            f"inputs and labels differ in length: {n_train} vs {len(y_train)} (train), {n_val} vs {len(y_val)} (val)"
        )
    weights = None if sample_weight is None else _check_sample_weight(sample_weight, len(y_train))
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model.to(device)
    # Tensors (and mappings of tensors) move once; RawInputs move batch by batch.
    x_train, x_val = (x if isinstance(x, RawInputs) else move_to(x, device) for x in (x_train, x_val))
    y_train, y_val = move_to(y_train, device), move_to(y_val, device)
    weights = None if weights is None else move_to(weights, device)
    optimizer = _optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    best_state, best_val, best_epoch, waited = None, float("inf"), 0, 0
    history: dict[str, list[float]] = {"train_mse": [], "val_mse": []}
    steps, step_seconds = 0, 0.0
    started = time.perf_counter()
    epochs = tqdm(
        range(1, config.max_epochs + 1), desc=f"{config.head} seed {config.seed}", disable=not progress, leave=False
    )
    for epoch in epochs:
        model.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        # A final batch of one point has no neighbour for NONA: fold it into the previous batch.
        starts = list(range(0, len(order), config.batch_size))
        if len(starts) > 1 and len(order) - starts[-1] < 2:
            starts.pop()
        total, count = 0.0, 0
        for i, start in enumerate(starts):
            stop = starts[i + 1] if i + 1 < len(starts) else len(order)
            idx = order[start:stop]
            step_started = time.perf_counter()
            prediction = model.train_step_prediction(_batch(x_train, idx, device), y_train[idx])
            if weights is None:
                loss = torch.nn.functional.mse_loss(prediction, y_train[idx])
                batch_mse = loss.item()
            else:
                squared = torch.nn.functional.mse_loss(prediction, y_train[idx], reduction="none")
                loss = torch.mean(weights[idx] * squared)
                batch_mse = squared.mean().item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps, step_seconds = steps + 1, step_seconds + time.perf_counter() - step_started
            total += batch_mse * len(idx)
            count += len(idx)
        val = mse(predict(model, x_val, x_train, y_train), y_val)
        history["train_mse"].append(total / count)
        history["val_mse"].append(val)
        epochs.set_postfix(val_mse=f"{val:.4g}")
        if val < best_val:
            best_val, best_epoch, waited = val, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    if best_state is None:
        raise ValueError(
            f"the validation MSE was never finite in {len(history['val_mse'])} epochs (NaN or inf predictions); "
            "lower the learning rates or check the inputs for NaN"
        )
    model.load_state_dict(best_state)
    return FitResult(
        best_epoch, best_val, len(history["val_mse"]), time.perf_counter() - started, history, steps, step_seconds
    )


def tuned_knn(
    z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray, n_jobs: int = 1
) -> tuple[object, dict]:
    """k-NN regressor on standardised embeddings, tuned on the validation split (paper's grid).

    Grid: k in {3, 5, 7}, p in {1, 2}, weights in {uniform, distance}. The grid
    search scores on the validation split; the chosen model's neighbours are the
    training embeddings only, as for NONA. The choice follows
    :mod:`nona.selection`, not GridSearchCV's ``best_params_`` (whose ties go by
    rank order): validation MSEs within a relative ``SELECTION_RTOL`` (1e-6) of
    the lowest are tied, and a tie goes to the grid's declared order, smallest k
    first, then p = 1 before p = 2, then uniform before distance weights.
    """
    import itertools

    from sklearn.model_selection import GridSearchCV, PredefinedSplit
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nona.selection import select_best

    grid = {
        "kneighborsregressor__n_neighbors": [3, 5, 7],
        "kneighborsregressor__p": [1, 2],
        "kneighborsregressor__weights": ["uniform", "distance"],
    }
    pipeline = make_pipeline(StandardScaler(), KNeighborsRegressor())
    folds = PredefinedSplit(np.r_[np.full(len(z_train), -1), np.zeros(len(z_val))])
    search = GridSearchCV(pipeline, grid, cv=folds, scoring="neg_mean_squared_error", refit=False, n_jobs=n_jobs)
    search.fit(np.vstack([z_train, z_val]), np.r_[y_train, y_val])
    # One validation fold: mean_test_score is minus that fold's MSE.
    val_mse = {
        tuple(sorted(p.items())): -float(score)
        for p, score in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"])
    }
    declared = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]  # k slowest: smallest k first
    choice = select_best(range(len(declared)), [val_mse[tuple(sorted(c.items()))] for c in declared], prefer="first")
    chosen = declared[choice.chosen]
    best = pipeline.set_params(**chosen).fit(z_train, y_train)
    params = {k.split("__")[1]: v for k, v in chosen.items()}
    return best, params
