"""Feature extractors: real pretrained weights where they install with pip, the paper's architectures offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nona.backbones import BACKBONES, Backbone, get_backbone
from nona.backbones.audio import mel_filterbank
from nona.backbones.text import minilm_path

IMAGENET_CHURCH, IMAGENET_BELL_COTE, IMAGENET_PALACE = 497, 442, 698


@pytest.fixture(scope="module")
def lite0():
    return get_backbone("efficientnet_lite0").eval()


@pytest.fixture(scope="module")
def mini():
    return get_backbone("minilm").eval()


def test_registry_lists_the_quick_and_paper_backbones():
    assert set(BACKBONES) == {
        "efficientnet_lite0",
        "minilm",
        "audio_cnn",
        "resnet18",
        "resnet34",
        "efficientnet_b0",
        "distilbert",
        "bert_base",
        "hubert_base",
        "whisper_tiny",
    }
    assert not any(BACKBONES[n].downloads for n in ("efficientnet_lite0", "minilm", "audio_cnn"))
    with pytest.raises(ValueError, match="choose one of"):
        get_backbone("vgg16")


# ---------------------------------------------------------------- EfficientNet-Lite0


def test_efficientnet_lite0_weights_are_real_imagenet_weights(lite0):
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg")  # a Chinese temple
    with torch.inference_mode():
        logits = lite0.classify(lite0.transform(image[None]))
    top3 = logits.topk(3).indices[0].tolist()
    assert {IMAGENET_CHURCH, IMAGENET_BELL_COTE, IMAGENET_PALACE} & set(top3), top3
    assert logits.shape == (1, 1000)


def test_efficientnet_lite0_features(lite0):
    small = get_backbone("efficientnet_lite0", image_size=64).eval()
    assert small.out_dim == lite0.out_dim == 1280
    torch.testing.assert_close(
        dict(small.state_dict())["model.conv_stem.weight"], dict(lite0.state_dict())["model.conv_stem.weight"]
    )
    gray = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    batch = small.transform(gray)
    assert batch.shape == (3, 3, 64, 64)
    with torch.inference_mode():
        feats = small.embed(batch)
    assert feats.shape == (3, 1280) and torch.isfinite(feats).all()
    # The pooled features are what the classifier reads.
    with torch.inference_mode():
        torch.testing.assert_close(small.model.get_classifier()(feats), small.classify(batch))


def test_image_transform_normalises_arrays_and_files(tmp_path, lite0):
    white_u8 = np.full((2, 10, 12, 3), 255, dtype=np.uint8)
    x = lite0.transform(white_u8)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 100, 100], expected)
    path = tmp_path / "white.png"
    Image.fromarray(np.full((30, 40), 255, dtype=np.uint8), "L").save(path)
    torch.testing.assert_close(lite0.transform([str(path), path]), x)
    crop = get_backbone("efficientnet_lite0", resize=256, image_size=224, pretrained=False)
    assert crop.transform(white_u8).shape == (2, 3, 224, 224)
    assert crop.preprocessing == {
        "image_size": 224,
        "resize": 256,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    with pytest.raises(ValueError, match="stack of images"):
        lite0.transform(np.zeros((4, 4)))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "audio_cnn"])
def test_trainable_freezes_and_unfreezes(name):
    net = get_backbone(name) if name == "audio_cnn" else get_backbone(name, pretrained=False)
    assert net.trainable(False) is net
    assert not any(p.requires_grad for p in net.parameters())
    net.trainable(True)
    assert all(p.requires_grad for p in net.parameters())


# ---------------------------------------------------------------- MiniLM


def test_minilm_matches_sentence_transformers(mini, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = ["a wonderful day", "terrible", ":-)", "the cat sat on the mat and looked around"]
    with torch.inference_mode():
        ours = mini.embed(mini.transform(texts))
    assert ours.shape == (4, 384) and mini.out_dim == 384
    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(torch.nn.functional.normalize(ours, dim=1), reference, atol=1e-5, rtol=1e-4)


def test_minilm_exposes_tokenizer_and_transformer(mini):
    assert mini.tokenizer("hello world")["input_ids"][0] == mini.tokenizer.cls_token_id
    assert type(mini.model).__name__ == "BertModel" and mini.model.config.num_hidden_layers == 6
    batch = mini.transform(["short", "a somewhat longer sentence"])
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    # Padding does not change a text's embedding (masked mean).
    with torch.inference_mode():
        alone = mini.embed(mini.transform(["short"]))
        padded = mini.embed(batch)[:1]
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- audio CNN


def test_mel_filterbank_is_triangular_and_ordered():
    fb = mel_filterbank(4000, 256, 32, f_min=20.0)
    assert fb.shape == (32, 129) and fb.min() >= 0
    assert torch.all(fb.max(1).values > 0.5) and torch.all(fb.max(1).values <= 1.0)
    centres = fb.argmax(1)
    assert torch.all(centres[1:] >= centres[:-1])
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(4000, 256, 32, f_max=3000)


def test_audio_cnn_is_seeded_trainable_and_resamples():
    a, b, c = (get_backbone("audio_cnn", seed=s) for s in (0, 0, 1))
    assert a.weights_hash() == b.weights_hash() != c.weights_hash()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    get_backbone("audio_cnn", seed=5)
    assert torch.rand(1) == before, "building the CNN must not consume the caller's random stream"
    wave = np.random.default_rng(0).standard_normal((3, 8000)).astype(np.float32)
    x = a.transform(wave, sample_rate=8000)
    assert x.shape == (3, 4000)
    out = a.embed(x)
    assert out.shape == (3, a.out_dim) == (3, 128)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in a.parameters())
    with pytest.raises(ValueError, match="sample_rate"):
        a.transform(wave)


# ---------------------------------------------------------------- paper backbones, offline


def test_torchvision_backbones_build_offline():
    x = torch.randn(2, 3, 64, 64)
    for name, dim in (("resnet18", 512), ("resnet34", 512), ("efficientnet_b0", 1280)):
        net = get_backbone(name, pretrained=False, image_size=64).eval()
        assert isinstance(net, Backbone) and net.out_dim == dim and net.name == name
        with torch.inference_mode():
            assert net.embed(x).shape == (2, dim)
    rsna = get_backbone("resnet18", pretrained=False, mean=(0.5,) * 3, std=(0.5,) * 3)
    torch.testing.assert_close(rsna.transform(np.ones((1, 8, 8), dtype=np.float32))[0, :, 0, 0], torch.ones(3))


def test_hf_text_backbones_build_offline_from_tiny_configs():
    from transformers import BertConfig, DistilBertConfig

    tiny = {"vocab_size": 30522, "max_position_embeddings": 64}
    configs = {
        "distilbert": DistilBertConfig(dim=32, hidden_dim=37, n_layers=1, n_heads=2, **tiny),
        "bert_base": BertConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, **tiny
        ),
    }
    for name, config in configs.items():
        net = get_backbone(name, pretrained=False, config=config, tokenizer=minilm_path(), max_length=16).eval()
        with torch.inference_mode():
            out = net.embed(net.transform(["hello there", "a much longer text " * 20]))
        assert out.shape == (2, 32) and net.out_dim == 32
        mean = get_backbone(name, pretrained=False, config=config, tokenizer=minilm_path(), pooling="mean")
        assert mean.preprocessing["pooling"] == "mean"


def test_hubert_and_whisper_build_offline_from_tiny_configs():
    from transformers import HubertConfig, WhisperConfig

    hubert_cfg = HubertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    hubert = get_backbone("hubert_base", pretrained=False, config=hubert_cfg).eval()
    wave = np.random.default_rng(0).standard_normal((2, 8000)).astype(np.float32)
    x = hubert.transform(wave, sample_rate=8000)
    assert x.shape == (2, 16000)
    torch.testing.assert_close(x.mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    with torch.inference_mode():
        assert hubert.embed(x).shape == (2, 32)

    whisper_cfg = WhisperConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        num_mel_bins=80,
        max_source_positions=50,
        max_target_positions=16,
    )
    whisper = get_backbone("whisper_tiny", pretrained=False, config=whisper_cfg).eval()
    batch = whisper.transform(np.zeros((2, 8000), dtype=np.float32), sample_rate=16000)
    assert batch["input_features"].shape == (2, 80, 100)
    assert batch["attention_mask"].sum(1).tolist() == [50, 50]
    with torch.inference_mode():
        assert whisper.embed(batch).shape == (2, 32) and whisper.out_dim == 32


@pytest.mark.parametrize(
    ("name", "identifier"),
    [
        ("resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
        ("resnet34", "ResNet34_Weights.IMAGENET1K_V1"),
        ("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1"),
        ("distilbert", "distilbert/distilbert-base-uncased"),
        ("bert_base", "google-bert/bert-base-uncased"),
        ("hubert_base", "facebook/hubert-base-ls960"),
        ("whisper_tiny", "openai/whisper-tiny"),
    ],
)
def test_missing_pretrained_weights_name_the_identifier(name, identifier, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        get_backbone(name)
    message = str(info.value)
    assert identifier in message and "not available" in message and "download" in message
