"""Devices: which one to use, and the one place where inputs move onto it.

Every input that reaches a model (feature tensors, a transformed batch of raw
inputs, mappings of tensors such as a tokenizer's output) goes through
:func:`move_to`, for training, validation, embedding and prediction alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an explicit ``cuda`` without a GPU raises."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but no CUDA GPU is available; use device='auto' or 'cpu'")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; valid values are: auto, cpu, cuda, cuda:N")
    return torch.device(device)


def move_to(batch: Any, device: torch.device | str) -> Any:
    """A tensor, or a mapping of tensors, on ``device`` (anything else unchanged)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    return batch
