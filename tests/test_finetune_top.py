"""Fine-tuning the top of a backbone: top(below(x)) is the backbone, the activation cache, the device plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nona.train as train_module
from nona.backbones import cached_activations, extract_activations, get_backbone
from nona.data import Dataset
from nona.train import RawInputs, RegressionModel, TrainConfig, embed_all, fit, predict


@pytest.fixture(scope="module")
def lite0():
    return get_backbone("efficientnet_lite0", pretrained=False, image_size=32).eval()


@pytest.fixture(scope="module")
def audio():
    return get_backbone("audio_cnn", sample_rate=4000).eval()


@pytest.mark.parametrize("k", [1, 2, 7])
def test_efficientnet_top_on_cached_activations_is_the_backbone(lite0, k):
    x = lite0.transform(np.random.default_rng(0).random((3, 20, 20), dtype=np.float32))
    with torch.no_grad():
        torch.testing.assert_close(lite0.top(k)(lite0.below(x, k)), lite0.embed(x))


@pytest.mark.parametrize("side", [2, 3])
def test_efficientnet_rows_forward_matches_the_modules_in_value_gradient_and_statistics(side):
    # float64, so rounding cannot hide a wrong term; train mode updates the running statistics.
    tops, outputs, grads, buffers = [], [], [], []
    for rows in (True, False):
        torch.manual_seed(0)
        top = get_backbone("efficientnet_lite0", pretrained=False, image_size=64).double().top(1).train()
        assert top.rows and top.rows_max_pixels == 9
        top.rows = rows
        h = torch.randn(6, 192, side, side, dtype=torch.float64)
        out = top(h)
        (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()
        tops.append(top)
        outputs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in top.parameters()]))
        buffers.append(torch.cat([b.double().flatten() for b in top.buffers()]))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(buffers[0], buffers[1], atol=1e-12, rtol=1e-10)
    assert grads[0].abs().max() > 0
    with torch.no_grad():
        h = torch.randn(4, 192, side, side, dtype=torch.float64)
        torch.testing.assert_close(tops[0].eval()(h), tops[1].eval()(h), atol=1e-12, rtol=1e-10)


def test_efficientnet_rows_forward_runs_only_where_it_is_exact_and_cheap(lite0, monkeypatch):
    top = lite0.top(1)
    calls = []
    monkeypatch.setattr(type(top), "_rows_forward", lambda self, h: calls.append(h.shape) or torch.zeros(len(h), 1280))
    with torch.no_grad():
        top(torch.randn(2, 192, 3, 3))  # 9 pixels: a 3 x 3 window's work
        top(torch.randn(2, 192, 4, 4))  # 16 pixels: the convolution modules
    assert calls == [(2, 192, 3, 3)]
    # The second-to-last stage starts with a stride-2 block: no pixel-rows form for the last two stages.
    assert not lite0.top(2).rows


@pytest.mark.parametrize("k", [1, 5])
def test_audio_cnn_top_on_cached_activations_is_the_backbone(audio, k):
    wave = audio.transform(np.random.default_rng(1).standard_normal((2, 4000)).astype(np.float32), sample_rate=4000)
    with torch.no_grad():
        torch.testing.assert_close(audio.top(k)(audio.below(wave, k)), audio.embed(wave))


def test_minilm_top_on_padded_cached_hidden_states_is_the_backbone():
    text = get_backbone("minilm").eval()
    texts = ["good", "a very bad day indeed", ":)", "meh"]
    with torch.no_grad():
        full = text.embed(text.transform(texts))
        # Cached in two batches of different lengths, right-padded to the longest.
        cached = extract_activations(text, texts, 1, batch_size=2, progress=False)
        assert cached["hidden"].shape[:2] == cached["attention_mask"].shape
        torch.testing.assert_close(text.top(1)(cached), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_minilm_packed_top_matches_the_library_layers_in_value_and_gradient(pooling):
    text = get_backbone("minilm").eval()
    text.pooling = pooling
    texts = ["good", "a very bad day indeed", ":)", "meh", "heartbroken", "lol"]
    with torch.no_grad():
        cached = extract_activations(text, texts, 2, batch_size=3, progress=False)
    top = text.top(2)
    assert top.packed  # MiniLM's layers are BERT layers: the packed forward runs
    outputs, grads = [], []
    for packed in (True, False):
        top.packed = packed
        top.zero_grad()
        out = top(cached)
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
        outputs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in top.parameters()]))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().max() > 0


def test_packed_top_applies_dropout_in_training_only():
    text = get_backbone("minilm")
    with torch.no_grad():
        cached = extract_activations(text, ["good", "bad day"], 1, batch_size=2, progress=False)
    top = text.top(1)
    with torch.no_grad():
        top.eval()
        assert torch.equal(top(cached), top(cached))
        top.train()
        torch.manual_seed(0)
        first = top(cached)
        assert not torch.equal(first, top(cached))


def test_top_shares_parameters_and_trains_only_the_last_blocks(lite0):
    top = lite0.top(1)
    assert top.stages[0] is lite0.model.blocks[-1]
    n_top = sum(p.numel() for p in top.parameters())
    assert 0 < n_top < sum(p.numel() for p in lite0.parameters())


@pytest.mark.parametrize("k", [0, 8, "1", True])
def test_top_block_count_out_of_range_is_refused(lite0, k):
    with pytest.raises(ValueError, match="from 1 to 7"):
        lite0.top(k)


@pytest.mark.parametrize("value", [-1, "some", 1.5, True])
def test_trainable_layers_must_be_a_count_or_all(value):
    with pytest.raises(ValueError, match="trainable_layers"):
        TrainConfig(trainable_layers=value)


def test_projector_style_is_checked():
    with pytest.raises(ValueError, match="projector"):
        TrainConfig(projector="gelu")


def test_activation_cache_is_keyed_and_reused(tmp_path, audio, monkeypatch):
    import nona.backbones.cache as cache_module

    rng = np.random.default_rng(0)
    ds = Dataset(
        "heart-rate-audio",
        "audio",
        rng.standard_normal((6, 4000)).astype(np.float32),
        rng.uniform(50, 150, 6),
        [f"c{i}" for i in range(6)],
        sample_rate=4000,
    )
    calls = []
    real = cache_module.extract_activations
    monkeypatch.setattr(cache_module, "extract_activations", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    first = cached_activations(ds, audio, 1, cache_dir=tmp_path, progress=False)
    again = cached_activations(ds, audio, 1, cache_dir=tmp_path, progress=False)
    cached_activations(ds, audio, 2, cache_dir=tmp_path, progress=False)
    assert len(calls) == 2  # the second call read the cache; another k is another entry
    torch.testing.assert_close(first, again)
    assert len(list((tmp_path / "activations" / "heart-rate-audio").glob("*.pt"))) == 2


class _Top(torch.nn.Module):
    """A trainable top that takes a mapping, like a transformer's cached hidden states and mask."""

    out_dim = 4

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, self.out_dim)

    def forward(self, batch):
        return self.linear(batch["hidden"]) * batch["scale"]


class _Raw(torch.nn.Module):
    out_dim = 4

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, self.out_dim)

    def transform(self, inputs, sample_rate=None):
        return torch.as_tensor(np.asarray(inputs), dtype=torch.float32)

    def forward(self, batch):
        return self.linear(batch)


def _recording_mover(monkeypatch):
    """Replace nona.train's move_to by one that marks every tensor it returns; returns the marked ids."""
    moved: set[int] = set()
    real = train_module.move_to

    def recording(batch, device):
        out = real(batch, device)
        for t in out.values() if isinstance(out, dict) else [out]:
            if isinstance(t, torch.Tensor):
                moved.add(id(t))
        return out

    monkeypatch.setattr(train_module, "move_to", recording)
    return moved


@pytest.mark.parametrize("kind", ["tensor", "mapping", "raw"])
def test_every_model_input_goes_through_the_mover(kind, monkeypatch):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(40, 3)).astype(np.float32)
    y = torch.as_tensor(raw[:, 0])
    if kind == "tensor":
        backbone, x = None, torch.as_tensor(raw)
    elif kind == "mapping":
        backbone, x = _Top(), {"hidden": torch.as_tensor(raw), "scale": torch.ones(40, 1)}
    else:
        backbone = _Raw()
        x = RawInputs(backbone, raw)
    moved = _recording_mover(monkeypatch)
    seen = []
    config = TrainConfig(head="nona", softstep="none", batch_size=8, max_epochs=2, device="cpu")
    model = RegressionModel(3 if backbone is None else backbone.out_dim, config, backbone=backbone)
    real_embed = model.embed

    def checking_embed(batch):
        tensors = list(batch.values()) if isinstance(batch, dict) else [batch]
        seen.append(all(id(t) in moved for t in tensors))
        return real_embed(batch)

    monkeypatch.setattr(model, "embed", checking_embed)
    part = (
        (lambda idx: x.subset(idx)) if kind == "raw" else (lambda idx: train_module.take_rows(x, torch.as_tensor(idx)))
    )
    fit(model, (part(np.arange(30)), y[:30], part(np.arange(30, 40)), y[30:]), config)
    predict(model, part(np.arange(30, 40)), part(np.arange(30)), y[:30])
    embed_all(model, part(np.arange(30, 40)))
    assert seen and all(seen), "a batch reached the model without nona.devices.move_to"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_inputs_predict_on_a_cuda_model():
    x, y = torch.randn(50, 3), torch.rand(50)
    config = TrainConfig(head="nona", softstep="none", batch_size=8, max_epochs=1, device="cuda")
    model = RegressionModel(3, config)
    fit(model, (x[:40], y[:40], x[40:], y[40:]), config)
    assert predict(model, x[40:], x[:40], y[:40]).device.type == "cuda"


def test_predict_moves_the_callers_cpu_inputs_itself(monkeypatch):
    """The old bug: fit moved its own copies, predict got the caller's tensors; now predict moves every batch itself."""
    x, y = torch.randn(50, 3), torch.rand(50)
    config = TrainConfig(head="nona", softstep="none", batch_size=8, max_epochs=1, device="cpu")
    model = RegressionModel(3, config)
    fit(model, (x[:40], y[:40], x[40:], y[40:]), config)
    devices = []
    monkeypatch.setattr(train_module, "move_to", lambda batch, device: devices.append(torch.device(device)) or batch)
    predict(model, x[40:], x[:40], y[:40])
    # Query batches, neighbour batches and the neighbours' labels, each to the model's device.
    assert len(devices) == 3 and set(devices) == {next(model.parameters()).device}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_gpu_check_fails_clearly_without_cuda():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--skip-smoke"], capture_output=True, text=True)
    assert done.returncode != 0 and "needs a CUDA GPU" in done.stderr
