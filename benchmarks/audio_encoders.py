"""Do pretrained audio encoders that ship their weights in a pip wheel fit heart-rate-audio?

Measures, on the quick profile's seeded splits (``nona.data.make_splits``, seeds 0, 1, 2), how
well frozen embeddings predict the heart rate: standardised features -> ``RidgeCV`` and a k-NN
regressor (k tuned on validation), test MSE in bpm² and R². Candidates: torchcrepe's CREPE
(MIT; a pitch tracker trained on music and singing) and Resemblyzer's GE2E speaker encoder
(Apache-2.0), against the companion's random log-mel CNN (``audio_cnn``, quick-profile options)
and an envelope-autocorrelation reference (what a representation of the beat period reaches).
The Datasets page quotes the result; this script is how it was measured. It is not part of the
build: the two encoders are not dependencies of the companion.

Setup (torchcrepe and resemblyzer pin other versions of torch's neighbours, hence ``--no-deps``):

    .venv/bin/pip install --no-deps --target build/audio-encoders/pkgs torchcrepe resemblyzer librosa \
        resampy webrtcvad-wheels audioread decorator soundfile cffi pycparser pooch soxr lazy_loader msgpack
    mkdir -p build/audio-encoders/stubs/torchaudio && touch build/audio-encoders/stubs/torchaudio/__init__.py

(no torchaudio wheel matches torch 2.14.1; torchcrepe imports it only to read audio files). Run:

    PYTHONPATH=build/audio-encoders/pkgs:build/audio-encoders/stubs .venv/bin/python benchmarks/audio_encoders.py \
        --encoders audio_cnn envelope_acf resemblyzer crepe_tiny

Embeddings are cached under build/audio-encoders/cache; the table is printed and written next to it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

CACHE = Path("build/audio-encoders/cache")
SR16 = 16000


# --------------------------------------------------------------------------- data


def load_data():
    from nona.data import load_dataset

    ds = load_dataset("heart-rate-audio")  # the project's loader: 1200 clips, generator seed 0
    return np.asarray(ds.inputs, dtype=np.float32), np.asarray(ds.labels, dtype=np.float64), ds.sample_rate


def to16k(clips: np.ndarray, sr: int) -> np.ndarray:
    from nona.data.audio import resample  # the project's polyphase resampler (what its backbones use)

    return resample(clips, sr, SR16)


# --------------------------------------------------------------------------- encoders


def n_params(m: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in m.parameters()))


def enc_audio_cnn(clips, sr, batch=64):
    """The project's quick-profile audio backbone, computed as nona.backbones.cache.extract_features does."""
    from nona.backbones import get_backbone
    from nona.backbones.cache import extract_features

    net = get_backbone("audio_cnn", sample_rate=4000)  # manifest quick_profile_options
    t0 = time.perf_counter()
    feats = extract_features(net, clips, sr, batch_size=batch, progress=False)
    dt = time.perf_counter() - t0
    return {"audio_cnn[mean+std]": feats}, dt, {"params": n_params(net), "dim": net.out_dim}


def crepe_frames(wav16: torch.Tensor, hop: int) -> torch.Tensor:
    """torchcrepe.preprocess (pad=True) for a batch of equal-length clips: (b, T) -> (b, frames, 1024)."""
    import torchcrepe

    w = torchcrepe.WINDOW_SIZE
    x = torch.nn.functional.pad(wav16, (w // 2, w // 2))
    frames = x.unfold(1, w, hop)  # (b, 1 + T // hop, 1024)
    frames = frames - frames.mean(-1, keepdim=True)
    return frames / frames.std(-1, keepdim=True).clamp_min(1e-10)


def enc_crepe(clips16, capacity: str, hop_ms: float, batch_frames=2048):
    """CREPE conv5 output (torchcrepe.embed: the 5th max-pool) and conv6 output (the classifier's input).

    Per clip: mean and std over the time frames.
    """
    import torchcrepe

    model = torchcrepe.Crepe(capacity)
    path = Path(torchcrepe.__file__).parent / "assets" / f"{capacity}.pth"
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    hop = int(round(SR16 * hop_ms / 1000))
    out5, out6 = [], []
    t0 = time.perf_counter()
    clips_per_batch = max(1, batch_frames // (1 + clips16.shape[1] // hop))
    with torch.inference_mode():
        for s in range(0, len(clips16), clips_per_batch):
            fr = crepe_frames(torch.from_numpy(clips16[s : s + clips_per_batch]), hop)
            b, nf, _ = fr.shape
            e5 = model.embed(fr.reshape(b * nf, -1))  # (b*nf, C5, 8, 1)
            e6 = model.layer(e5, model.conv6, model.conv6_BN)  # (b*nf, C6, 4, 1)
            e6 = e6.permute(0, 2, 1, 3).reshape(b * nf, model.in_features)  # as Crepe.forward
            e5 = e5.reshape(b, nf, -1)
            e6 = e6.reshape(b, nf, -1)
            out5.append(torch.cat([e5.mean(1), e5.std(1)], 1).numpy())
            out6.append(torch.cat([e6.mean(1), e6.std(1)], 1).numpy())
    dt = time.perf_counter() - t0
    f5, f6 = np.concatenate(out5), np.concatenate(out6)
    d5, d6 = f5.shape[1] // 2, f6.shape[1] // 2
    tag = f"crepe_{capacity}@{hop_ms:g}ms"
    feats = {
        f"{tag} conv5[mean]": f5[:, :d5],
        f"{tag} conv5[mean+std]": f5,
        f"{tag} conv6[mean]": f6[:, :d6],
        f"{tag} conv6[mean+std]": f6,
    }
    info = {"params": n_params(model), "dim_conv5": d5, "dim_conv6": d6, "frames_per_clip": 1 + clips16.shape[1] // hop}
    return feats, dt, info


def enc_resemblyzer(clips16, vad: bool):
    """GE2E voice encoder. Each clip is set to -30 dBFS (the level resemblyzer.preprocess_wav targets; the clips
    are unit-RMS, 30 dB louder); with ``vad`` the rest of preprocess_wav (webrtcvad silence trimming) runs too.

    Features: the utterance embedding (embed_utterance: L2-normed mean of the partials' ReLU+L2 embeddings) and the
    mean over partials of the last LSTM layer's final hidden state (the linear layer's input).
    """
    from resemblyzer import VoiceEncoder, audio, hparams

    enc = VoiceEncoder("cpu", verbose=False)
    enc.eval()
    t0 = time.perf_counter()
    utt, hid, kept = [], [], []
    with torch.inference_mode():
        for wav in clips16:
            wav = audio.normalize_volume(wav.astype(np.float64), hparams.audio_norm_target_dBFS).astype(np.float32)
            if vad:
                trimmed = audio.trim_long_silences(wav)
                kept.append(len(trimmed) / len(wav))
                wav = trimmed if len(trimmed) > 0 else wav
            wav_slices, mel_slices = enc.compute_partial_slices(len(wav), 1.3, 0.75)
            if wav_slices[-1].stop >= len(wav):
                wav = np.pad(wav, (0, wav_slices[-1].stop - len(wav)))
            mel = audio.wav_to_mel_spectrogram(wav)
            mels = torch.from_numpy(np.array([mel[s] for s in mel_slices]))
            _, (h, _) = enc.lstm(mels)
            e = enc.relu(enc.linear(h[-1]))
            e = e / e.norm(dim=1, keepdim=True)
            raw = e.mean(0).numpy()
            utt.append(raw / np.linalg.norm(raw))
            hid.append(h[-1].mean(0).numpy())
    dt = time.perf_counter() - t0
    tag = "resemblyzer" + ("+vad" if vad else "")
    info = {"params": n_params(enc), "dim": 256}
    if vad:
        info["vad_kept_fraction_mean"] = float(np.mean(kept))
        info["vad_kept_fraction_min"] = float(np.min(kept))
    return {f"{tag} embed_utterance": np.stack(utt), f"{tag} lstm3_hidden[mean]": np.stack(hid)}, dt, info


def enc_envelope_acf(clips, sr):
    """Reference, not an encoder: autocorrelation of the 20-150 Hz band's envelope at lags 0.3-1.5 s."""
    from scipy import signal

    t0 = time.perf_counter()
    sos = signal.butter(4, [20, 150], btype="band", fs=sr, output="sos")
    env = np.abs(signal.sosfiltfilt(sos, clips, axis=1))
    env = signal.resample_poly(env, 1, sr // 100, axis=1)  # 100 Hz envelope
    env = env - env.mean(1, keepdims=True)
    lags = np.arange(30, 151)
    acf = np.stack([(env[:, :-lag] * env[:, lag:]).mean(1) for lag in lags], 1) / (env**2).mean(1, keepdims=True)
    info = {"params": 0, "dim": len(lags)}
    return {"reference: envelope ACF": acf.astype(np.float32)}, time.perf_counter() - t0, info


# --------------------------------------------------------------------------- evaluation


def evaluate(feats: np.ndarray, labels: np.ndarray, seeds=(0, 1, 2)) -> list[dict]:
    from sklearn.linear_model import RidgeCV
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    from nona.data import make_splits

    rows = []
    for seed in seeds:
        sp = make_splits(labels, seed=seed)
        sc = StandardScaler().fit(feats[sp.train])
        xtr, xva, xte = (np.nan_to_num(sc.transform(feats[i])) for i in (sp.train, sp.val, sp.test))
        ytr, yva, yte = labels[sp.train], labels[sp.val], labels[sp.test]
        var_test = float(np.mean((yte - yte.mean()) ** 2))
        mean_mse = float(np.mean((yte - ytr.mean()) ** 2))
        ridge = RidgeCV(alphas=np.logspace(-3, 5, 33)).fit(xtr, ytr)
        r_mse = float(np.mean((ridge.predict(xte) - yte) ** 2))
        best = None
        for k in (1, 2, 3, 5, 7, 10, 15, 20, 30, 50):
            m = KNeighborsRegressor(n_neighbors=k).fit(xtr, ytr)
            v = float(np.mean((m.predict(xva) - yva) ** 2))
            if best is None or v < best[0]:
                best = (v, k, m)
        k_mse = float(np.mean((best[2].predict(xte) - yte) ** 2))
        rows.append(
            {
                "seed": seed,
                "n_train": len(sp.train),
                "n_val": len(sp.val),
                "n_test": len(sp.test),
                "label_var_test": var_test,
                "mean_baseline_mse": mean_mse,
                "ridge_mse": r_mse,
                "ridge_r2": 1 - r_mse / var_test,
                "ridge_alpha": float(ridge.alpha_),
                "knn_mse": k_mse,
                "knn_r2": 1 - k_mse / var_test,
                "knn_k": best[1],
            }
        )
    return rows


def ms(values):
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.1f} ± {a.std(ddof=1):.1f}" if len(a) > 1 else f"{a.mean():.1f}"


def msr(values):
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1):.3f}" if len(a) > 1 else f"{a.mean():.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--encoders",
        nargs="+",
        default=["audio_cnn", "envelope_acf", "resemblyzer", "crepe_tiny"],
        help="also available, not run in the report (CPU budget): resemblyzer_vad, crepe_full",
    )
    ap.add_argument("--tiny-hop-ms", type=float, default=100.0)
    ap.add_argument("--full-hop-ms", type=float, default=250.0)
    ap.add_argument("--threads", type=int, default=1)  # 1: no OpenMP spin on a shared 2-core box
    ap.add_argument("--timing-clips", type=int, default=32)
    ap.add_argument("--out", default="build/audio-encoders/results.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)

    clips, labels, sr = load_data()
    print(f"clips {clips.shape} @ {sr} Hz; labels {labels.min():.1f}-{labels.max():.1f} bpm, var {labels.var():.1f}")
    clips16 = None
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {"encoders": {}, "fits": {}}

    for name in args.encoders:
        cache = CACHE / f"{name}.npz"
        hop = args.tiny_hop_ms if name == "crepe_tiny" else args.full_hop_ms
        if name.startswith("crepe"):
            cache = CACHE / f"{name}@{hop:g}ms.npz"
        if cache.exists():
            z = np.load(cache, allow_pickle=True)
            feats = {k: z[k] for k in z.files if k != "__info__"}
            info = z["__info__"].item()
            print(f"{name}: cached")
        else:
            if name.startswith(("crepe", "resemblyzer")) and clips16 is None:
                clips16 = to16k(clips, sr)
            if name == "audio_cnn":
                fn = lambda c: enc_audio_cnn(c, sr)  # noqa: E731
                src = clips
            elif name == "envelope_acf":
                fn = lambda c: enc_envelope_acf(c, sr)  # noqa: E731
                src = clips
            elif name.startswith("resemblyzer"):
                vad = name.endswith("vad")
                fn = lambda c, v=vad: enc_resemblyzer(c, v)  # noqa: E731
                src = clips16
            elif name.startswith("crepe"):
                capacity = name.split("_")[1]
                fn = lambda c, cap=capacity, h=hop: enc_crepe(c, cap, h)  # noqa: E731
                src = clips16
            else:
                raise ValueError(name)
            # Timing on a small batch (the 4 kHz -> 16 kHz resampling is included for the 16 kHz encoders).
            sub = clips[: args.timing_clips]
            t0 = time.perf_counter()
            fn(to16k(sub, sr) if src is clips16 else sub)
            ms_per_clip = 1000 * (time.perf_counter() - t0) / len(sub)
            feats, dt, info = fn(src)
            info.update({"ms_per_clip_timing": ms_per_clip, "full_pass_s": dt, "threads": args.threads})
            np.savez(cache, __info__=np.array(info, dtype=object), **feats)
            print(f"{name}: {dt:.1f} s for {len(src)} clips; {ms_per_clip:.1f} ms/clip; {info}")
        results["encoders"][cache.stem] = info
        for fname, f in feats.items():
            rows = evaluate(f, labels)
            results["fits"][fname] = {"dim": int(f.shape[1]), "encoder": name, "rows": rows}
            print(
                f"  {fname:40s} d={f.shape[1]:5d}  ridge MSE {ms([r['ridge_mse'] for r in rows])} "
                f"R2 {msr([r['ridge_r2'] for r in rows])} | kNN MSE {ms([r['knn_mse'] for r in rows])} "
                f"R2 {msr([r['knn_r2'] for r in rows])} (k={[r['knn_k'] for r in rows]})",
                flush=True,
            )
        Path(args.out).write_text(json.dumps(results, indent=1))

    # Markdown table of everything evaluated so far.
    lines = [
        "| features | dim | ridge test MSE (bpm²) | ridge R² | k-NN test MSE (bpm²) | k-NN R² | k chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    any_rows = None
    for fname, r in results["fits"].items():
        rows = r["rows"]
        any_rows = rows
        lines.append(
            f"| {fname} | {r['dim']} | {ms([x['ridge_mse'] for x in rows])} | {msr([x['ridge_r2'] for x in rows])} | "
            f"{ms([x['knn_mse'] for x in rows])} | {msr([x['knn_r2'] for x in rows])} | {[x['knn_k'] for x in rows]} |"
        )
    if any_rows:
        lines.append(
            f"| predict the training mean | - | {ms([x['mean_baseline_mse'] for x in any_rows])} | "
            f"{msr([1 - x['mean_baseline_mse'] / x['label_var_test'] for x in any_rows])} | | | |"
        )
        lines.append(f"\nTest-label variance per seed: {[round(x['label_var_test'], 1) for x in any_rows]}")
    table = "\n".join(lines)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
