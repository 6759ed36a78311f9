"""Models of the synthetic-surfaces figure (the NONA paper's Figure 3) that the training module does not build."""

from __future__ import annotations

import torch
from torch import nn

from nona.train import RegressionModel, TrainConfig


def linear_map_model(in_dim: int, config: TrainConfig) -> RegressionModel:
    """A NONA model whose embedding is a learnable linear map of the raw inputs, starting at the identity.

    ``config.embed_dim`` must equal ``in_dim``. With the identity map the model
    starts as NONA on the raw inputs; training can only rescale and shear the
    input space (a learned metric) and fit the SoftStep parameters.
    """
    if config.head != "nona":
        raise ValueError(f"a linear-map model needs the NONA head, got head={config.head!r}")
    if config.embed_dim != in_dim:
        raise ValueError(
            f"the identity start needs embed_dim == in_dim, got embed_dim={config.embed_dim}, in_dim={in_dim}"
        )
    model = RegressionModel(in_dim, config)
    linear = nn.Linear(in_dim, in_dim)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(in_dim))
        linear.bias.zero_()
    # RegressionModel.embed applies `projector`; replacing the MLP keeps its training and prediction code.
    model.projector = linear
    return model
