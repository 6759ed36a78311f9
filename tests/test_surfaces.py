"""The linear-map NONA model of the synthetic-surfaces figure (nona.paper.surfaces)."""

from __future__ import annotations

import pytest
import torch

from nona import NONA
from nona.paper.surfaces import linear_map_model
from nona.train import TrainConfig, fit, predict


def config(**changes) -> TrainConfig:
    base = dict(
        head="nona",
        similarity="l2",
        softstep="none",
        embed_dim=2,
        hidden=1,
        batch_size=16,
        lr=0.03,
        max_epochs=3,
        patience=2,
        device="cpu",
        seed=0,
    )
    return TrainConfig(**{**base, **changes})


def test_linear_map_model_starts_as_nona_on_the_raw_inputs():
    generator = torch.Generator().manual_seed(0)
    x_train, y_train = torch.rand(30, 2, generator=generator) * 2 - 1, torch.rand(30, generator=generator)
    x = torch.rand(10, 2, generator=generator) * 2 - 1
    model = linear_map_model(2, config())
    expected = NONA("l2")(x, x_train, y_train)
    torch.testing.assert_close(predict(model, x, x_train, y_train), expected)


def test_linear_map_model_trains_the_map_and_softstep():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(80, 2, generator=generator) * 2 - 1
    y = (x[:, 0] > 0).float()
    model = linear_map_model(2, config(softstep="s1-pointwise"))
    before = model.projector.weight.detach().clone()
    result = fit(model, (x[:60], y[:60], x[60:], y[60:]), config(softstep="s1-pointwise"))
    assert result.epochs_run >= 1
    assert not torch.equal(before, model.projector.weight.detach())
    assert torch.isfinite(predict(model, x[60:], x[:60], y[:60])).all()


def test_linear_map_model_refuses_mismatched_settings():
    with pytest.raises(ValueError, match="embed_dim == in_dim"):
        linear_map_model(3, config())
    with pytest.raises(ValueError, match="needs the NONA head"):
        linear_map_model(2, config(head="dense"))
