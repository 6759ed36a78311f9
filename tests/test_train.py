"""Training loop: early stopping restores the best state, determinism, devices, and the tuned k-NN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nona.train import RegressionModel, TrainConfig, fit, mse, predict, resolve_device, tuned_knn


def noisy_task(n_train=120, n_val=60, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_train, x_val = torch.randn(n_train, dim, generator=g), torch.randn(n_val, dim, generator=g)
    # Validation labels are unrelated to the inputs: fitting the training noise
    # makes validation MSE wander, so the last epoch is not the best one.
    y_train, y_val = torch.rand(n_train, generator=g), torch.rand(n_val, generator=g)
    return x_train, y_train, x_val, y_val


@pytest.mark.parametrize("head", ["dense", "nona"])
def test_early_stopping_restores_the_best_state(head):
    data = noisy_task()
    config = TrainConfig(head=head, softstep="none", batch_size=16, lr=1e-2, max_epochs=60, patience=3, seed=1)
    model = RegressionModel(6, config)
    result = fit(model, data, config)
    history = result.history["val_mse"]
    assert result.epochs_run == result.best_epoch + config.patience  # stopped exactly `patience` epochs after the best
    assert history[-1] > min(history)
    assert result.best_val_mse == pytest.approx(min(history))
    # The returned model is the best epoch's, not the last one's.
    x_train, y_train, x_val, y_val = data
    assert mse(predict(model, x_val, x_train, y_train), y_val) == pytest.approx(min(history), rel=1e-6)


def test_max_epochs_caps_the_run():
    data = noisy_task()
    config = TrainConfig(head="nona", softstep="s2-pointwise", batch_size=32, max_epochs=2, patience=10)
    result = fit(RegressionModel(6, config), data, config)
    assert result.epochs_run == 2 and len(result.history["train_mse"]) == 2


def test_same_seed_same_metrics_on_cpu():
    data = noisy_task()
    config = TrainConfig(head="nona", softstep="s1-global", batch_size=16, max_epochs=4, patience=10, seed=3)
    first = fit(RegressionModel(6, config), data, config).history
    torch.manual_seed(123)  # global state must not leak into a seeded run
    second = fit(RegressionModel(6, config), data, config).history
    assert first == second


def test_nona_learns_a_smooth_function():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(600, 2, generator=g) * 2 - 1
    y = (torch.sin(3 * x[:, 0]) * torch.cos(2 * x[:, 1]) + 1) / 2
    data = (x[:400], y[:400], x[400:], y[400:])
    config = TrainConfig(head="nona", softstep="none", batch_size=64, lr=3e-3, max_epochs=40, patience=5)
    result = fit(RegressionModel(2, config), data, config)
    assert result.best_val_mse < 0.25 * float(y[400:].var())


def test_final_single_point_batch_is_folded():
    data = noisy_task(n_train=33)
    config = TrainConfig(head="nona", softstep="none", batch_size=16, max_epochs=1)
    fit(RegressionModel(6, config), data, config)  # 33 = 16 + 17: no batch of one point


def test_bad_labels_and_settings_raise():
    x_train, y_train, x_val, y_val = noisy_task()
    y_train[3] = float("nan")
    config = TrainConfig(max_epochs=1)
    with pytest.raises(ValueError, match="y_train contains NaN"):
        fit(RegressionModel(6, config), (x_train, y_train, x_val, y_val), config)
    with pytest.raises(ValueError, match="unknown softstep 's3-global'; valid values are: none, s1-global"):
        TrainConfig(softstep="s3-global")
    with pytest.raises(ValueError, match="unknown head"):
        TrainConfig(head="knn")
    with pytest.raises(ValueError, match="batch_size >= 2"):
        TrainConfig(batch_size=1)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_tuned_knn_selects_on_validation_and_uses_training_neighbours():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3))
    y = np.sin(z[:, 0]) + 0.05 * rng.normal(size=300)
    knn, params = tuned_knn(z[:200], y[:200], z[200:250], y[200:250])
    assert set(params) == {"n_neighbors", "p", "weights"}
    assert params["n_neighbors"] in (3, 5, 7) and params["p"] in (1, 2)
    assert knn[-1].n_samples_fit_ == 200
    assert np.mean((knn.predict(z[250:]) - y[250:]) ** 2) < 0.5 * np.var(y[250:])


class TinyBackbone(torch.nn.Module):
    """A stand-in pretrained backbone: raw inputs are lists of numbers, embed is one linear layer."""

    out_dim = 4

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, self.out_dim)

    def transform(self, inputs, sample_rate=None):
        return torch.as_tensor(np.asarray(inputs), dtype=torch.float32)

    def forward(self, batch):
        return self.linear(batch)


def test_end_to_end_fine_tuning_updates_the_backbone_at_its_own_learning_rate():
    from nona.train import RawInputs

    rng = np.random.default_rng(0)
    raw = rng.normal(size=(90, 3))
    y = torch.as_tensor((raw[:, 0] > 0).astype(np.float32))
    backbone = TinyBackbone()
    before = backbone.linear.weight.detach().clone()
    inputs = RawInputs(backbone, raw)
    config = TrainConfig(head="nona", softstep="s2-pointwise", batch_size=16, max_epochs=3, lr=1e-2, backbone_lr=1e-3)
    model = RegressionModel(backbone.out_dim, config, backbone=backbone)
    result = fit(model, (inputs.subset(np.arange(60)), y[:60], inputs.subset(np.arange(60, 90)), y[60:]), config)
    assert result.epochs_run == 3
    assert not torch.equal(before, backbone.linear.weight.detach())
    from nona.train import _optimizer

    groups = _optimizer(model, config).param_groups
    assert [g["lr"] for g in groups] == [1e-2, 1e-3]
    assert sum(p.numel() for p in groups[1]["params"]) == sum(p.numel() for p in backbone.parameters())
