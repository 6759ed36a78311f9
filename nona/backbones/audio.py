"""Audio feature extractors: a small log-mel CNN trained from scratch, and the paper's HuBERT and Whisper encoders."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from nona.backbones.base import Backbone, missing_weights, offline
from nona.data.audio import resample


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular filters (n_mels, n_fft // 2 + 1) equally spaced on the HTK mel scale, each peaking at 1."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}"
        )
    bins = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (centre - lower)
    falling = (upper - bins[None]) / (upper - centre)
    return torch.from_numpy(np.clip(np.minimum(rising, falling), 0.0, None)).float()


class _WaveformBackbone(Backbone):
    """Shared audio transform: resample a (n, T) array to the model's rate and make it a float tensor."""

    modality = "audio"
    sample_rate: int = 16000
    normalize: bool = False

    def transform(self, inputs: Any, sample_rate: int | None = None) -> torch.Tensor:
        """Waveforms (n, T) at ``sample_rate`` to float32 (n, T') at the model's rate.

        Zero-mean and unit-variance if ``normalize``.
        """
        if sample_rate is None:
            raise ValueError(f"{self.name}: pass the sample_rate of the audio to transform()")
        audio = resample(np.asarray(inputs, dtype=np.float32), int(sample_rate), self.sample_rate)
        if audio.ndim != 2:
            raise ValueError(f"{self.name}: expected audio of shape (n, T), got {audio.shape}")
        x = torch.from_numpy(np.ascontiguousarray(audio))
        if self.normalize:
            x = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, keepdim=True) + 1e-7)
        return x


class AudioCNN(_WaveformBackbone):
    """Log-mel spectrogram (torch.stft + mel filterbank) then dilated 1-D convolutions over time; mean+std pooled.

    Randomly initialised (seeded) and meant to be trained with the head.
    """

    name = "audio_cnn"

    def __init__(
        self,
        sample_rate: int = 4000,
        n_mels: int = 32,
        window_ms: float = 64.0,
        hop_ms: float = 16.0,
        channels: int = 64,
        dilations: tuple[int, ...] = (1, 2, 4, 8, 16),
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_fft = 2 ** math.ceil(math.log2(sample_rate * window_ms / 1000.0))
        self.hop = max(1, int(round(sample_rate * hop_ms / 1000.0)))
        self.n_mels = int(n_mels)
        self.channels = int(channels)
        self.dilations = tuple(int(d) for d in dilations)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer(
            "mel", mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, f_min=20.0), persistent=False
        )
        # Seeded initialisation without disturbing the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers: list[nn.Module] = [nn.Conv1d(self.n_mels, channels, kernel_size=3, padding=1)]
            for d in self.dilations:
                # GroupNorm has no running statistics, so frozen features do not depend on train/eval mode.
                layers += [
                    nn.GroupNorm(8, channels),
                    nn.GELU(),
                    nn.Conv1d(channels, channels, kernel_size=3, padding=d, dilation=d),
                ]
            layers += [nn.GroupNorm(8, channels), nn.GELU()]
            self.net = nn.Sequential(*layers)
        self.out_dim = 2 * channels

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Sample rate and spectrogram settings."""
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "hop": self.hop, "n_mels": self.n_mels}

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms (b, T) to per-clip standardised log-mel spectrograms (b, n_mels, frames)."""
        spec = torch.stft(wave, self.n_fft, hop_length=self.hop, window=self.window, center=True, return_complex=True)
        power = spec.real**2 + spec.imag**2
        logmel = torch.log(torch.einsum("mf,bft->bmt", self.mel, power) + 1e-6)
        mean = logmel.mean(dim=(1, 2), keepdim=True)
        std = logmel.std(dim=(1, 2), keepdim=True)
        return (logmel - mean) / (std + 1e-5)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean and standard deviation over time of the last convolution's channels (b, 2 * channels)."""
        h = self.net(self.log_mel(batch.to(self.device)))
        return torch.cat([h.mean(-1), h.std(-1)], dim=1)

    @property
    def n_blocks(self) -> int:
        """The dilated convolution blocks (normalisation, GELU, convolution)."""
        return len(self.dilations)

    def below(self, batch: torch.Tensor, k: int) -> torch.Tensor:
        """The feature map (b, channels, frames) that enters the last ``k`` dilated blocks."""
        k = self.check_top(k)
        return self.net[: 1 + 3 * (self.n_blocks - k)](self.log_mel(batch.to(self.device)))

    def top(self, k: int) -> nn.Module:
        """The last ``k`` dilated blocks, the final normalisation and the mean/std pooling."""
        return _AudioCNNTop(self, self.check_top(k))


class _AudioCNNTop(nn.Module):
    """The last dilated blocks of an AudioCNN and its pooling: a cached feature map -> (b, 2 * channels)."""

    def __init__(self, backbone: AudioCNN, k: int) -> None:
        super().__init__()
        self.net = backbone.net[1 + 3 * (backbone.n_blocks - k) :]
        self.out_dim = backbone.out_dim

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Mean and standard deviation over time (b, out_dim)."""
        h = self.net(h)
        return torch.cat([h.mean(-1), h.std(-1)], dim=1)


def _hf_load(cls: Any, model_id: str, how: str) -> Any:
    try:
        return cls.from_pretrained(model_id, local_files_only=offline())
    except OSError as err:
        raise missing_weights(model_id, how, err) from err


class HuBERT(_WaveformBackbone):
    """HuBERT-base pretrained on LibriSpeech 960 h (downloads); last hidden state mean-pooled over time, 768-d."""

    name = "hubert_base"
    model_id = "facebook/hubert-base-ls960"

    def __init__(self, pretrained: bool = True, config: Any = None, normalize: bool = True) -> None:
        super().__init__()
        from transformers import HubertModel

        self.sample_rate = 16000
        self.normalize = normalize
        if pretrained:
            self.model = _hf_load(HubertModel, self.model_id, f"run `huggingface-cli download {self.model_id}`")
        else:
            if config is None:
                raise ValueError("hubert_base: pretrained=False needs a HubertConfig")
            self.model = HubertModel(config)
        self.out_dim = int(self.model.config.hidden_size)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Sample rate and waveform normalisation."""
        return {"sample_rate": self.sample_rate, "normalize": self.normalize}

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """Mean over time of the last hidden state."""
        return self.model(input_values=batch.to(self.device)).last_hidden_state.mean(1)


class WhisperTinyEncoder(Backbone):
    """The audio encoder of Whisper-tiny (downloads); encoder frames covering the clip mean-pooled, 384-d."""

    name = "whisper_tiny"
    modality = "audio"
    model_id = "openai/whisper-tiny"

    def __init__(self, pretrained: bool = True, config: Any = None) -> None:
        super().__init__()
        from transformers import WhisperFeatureExtractor, WhisperModel

        if pretrained:
            full = _hf_load(WhisperModel, self.model_id, f"run `huggingface-cli download {self.model_id}`")
        else:
            if config is None:
                raise ValueError("whisper_tiny: pretrained=False needs a WhisperConfig")
            full = WhisperModel(config)
        # Only the encoder is used; the decoder is dropped.
        self.encoder = full.get_encoder()
        cfg = full.config
        self.sample_rate = 16000
        hop = 160
        # The encoder takes exactly 2 * max_source_positions mel frames (30 s for the released models).
        n_samples = 2 * cfg.max_source_positions * hop
        if n_samples % self.sample_rate:
            raise ValueError(
                "whisper_tiny: max_source_positions must be a multiple of 50 (whole seconds), "
                f"got {cfg.max_source_positions}"
            )
        self.features = WhisperFeatureExtractor(
            feature_size=cfg.num_mel_bins,
            sampling_rate=self.sample_rate,
            hop_length=hop,
            chunk_length=n_samples // self.sample_rate,
            n_fft=400,
        )
        self.n_frames = 2 * cfg.max_source_positions
        self.out_dim = int(cfg.d_model)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """Sample rate, mel bins and the fixed input length."""
        return {"sample_rate": self.sample_rate, "num_mel_bins": self.features.feature_size, "n_frames": self.n_frames}

    def transform(self, inputs: Any, sample_rate: int | None = None) -> dict[str, torch.Tensor]:
        """Waveforms (n, T) to Whisper log-mel features padded or cut to the encoder's length, with a frame mask."""
        if sample_rate is None:
            raise ValueError("whisper_tiny: pass the sample_rate of the audio to transform()")
        audio = resample(np.asarray(inputs, dtype=np.float32), int(sample_rate), self.sample_rate)
        out = self.features(
            list(audio),
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
        )
        return {"input_features": out["input_features"], "attention_mask": out["attention_mask"]}

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the encoder's output frames that cover audio (padding frames excluded)."""
        hidden = self.encoder(batch["input_features"].to(self.device)).last_hidden_state
        # The encoder halves the time resolution (stride-2 convolution).
        mask = batch["attention_mask"].to(self.device)[:, ::2][:, : hidden.shape[1]].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
