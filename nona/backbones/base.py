"""What every feature extractor offers.

``transform`` (raw inputs -> batch), ``embed`` (batch -> (b, D)) and ``trainable``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import nn

OFFLINE_ENVS = ("NONA_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline() -> bool:
    """True when the environment forbids downloads (NONA_OFFLINE, HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set)."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in OFFLINE_ENVS)


def missing_weights(identifier: str, how: str, error: BaseException | None = None) -> FileNotFoundError:
    """The error raised when pretrained weights are neither cached nor downloadable."""
    if offline():
        mode = "downloads are disabled (" + ", ".join(v for v in OFFLINE_ENVS if os.environ.get(v)) + ")"
    else:
        mode = "the download failed"
    reason = f": {type(error).__name__}: {error}" if error is not None else ""
    return FileNotFoundError(
        f"pretrained weights {identifier!r} are not available: they are not in the local cache and {mode}{reason}. "
        f"On a machine with internet access, {how}; or unset the offline variables to let the companion download them."
    )


class Backbone(nn.Module):
    """A feature extractor: ``embed(transform(inputs))`` is a (b, out_dim) float tensor."""

    name: str = ""
    modality: str = ""
    out_dim: int = 0

    def transform(self, inputs: Any, sample_rate: int | None = None) -> Any:
        """Raw dataset inputs (a slice of ``Dataset.inputs``) to a batch ``embed`` accepts."""
        raise NotImplementedError

    def embed(self, batch: Any) -> torch.Tensor:
        """A batch to its (b, out_dim) features."""
        raise NotImplementedError

    def forward(self, batch: Any) -> torch.Tensor:
        """Same as ``embed``."""
        return self.embed(batch)

    def trainable(self, flag: bool = True) -> Backbone:
        """Unfreeze (True) or freeze (False) every parameter; train/eval mode is left to the caller."""
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    @property
    def n_blocks(self) -> int:
        """How many top blocks ``trainable_layers`` can count (stages of a CNN, layers of a transformer)."""
        raise NotImplementedError(
            f"{self.name}: fine-tuning only its top blocks is not supported; use trainable_layers=0 or 'all'"
        )

    def check_top(self, k: int) -> int:
        """``k`` if the backbone has at least ``k`` >= 1 blocks to train; else a ValueError that gives the range."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.n_blocks:
            raise ValueError(
                f"{self.name}: the number of trainable top blocks must be an integer "
                f"from 1 to {self.n_blocks}, got {k!r}"
            )
        return k

    def below(self, batch: Any, k: int) -> torch.Tensor | dict[str, torch.Tensor]:
        """The activations that the last ``k`` blocks take (what is cached while those blocks are fine-tuned)."""
        raise NotImplementedError(f"{self.name}: fine-tuning only its top blocks is not supported")

    def top(self, k: int) -> nn.Module:
        """The last ``k`` blocks and the pooling as one module: ``top(k)(below(batch, k)) == embed(batch)``.

        The module shares its parameters with this backbone (copy it to
        fine-tune several runs from the same pretrained weights); its
        ``out_dim`` is the backbone's.
        """
        raise NotImplementedError(f"{self.name}: fine-tuning only its top blocks is not supported")

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return next(self.parameters()).device

    @property
    def preprocessing(self) -> dict[str, Any]:
        """JSON-able description of what ``transform`` does (part of the feature-cache key)."""
        return {}

    def weights_hash(self) -> str:
        """SHA-256 of the state dict (names, dtypes, shapes, values)."""
        h = hashlib.sha256()
        for key, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()
