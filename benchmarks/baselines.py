"""Benchmark of the two-stage baselines of ``nona.baselines`` at the quick profile's sizes.

Prints one table row per (split sizes, embedding kind): the time of
``tuned_nnk`` (k tuned over {5, 10, 20, 30, 50} on validation), of the tuned
model's test predictions, of ``tuned_knn`` for reference, of
``tuned_interpolation`` and of ``knn_loss_weights`` on input features of the
backbone's width. Sizes: digits-rotation (~1200 / 210 / 360 points,
efficientnet_lite0 features, 1280-d) and vader-valence (7520 samples:
5114 / 902 / 1504, minilm features, 384-d); embeddings are 25-d as in the paper.

Embeddings are synthetic: ``isotropic`` (Gaussian, full rank, the hardest
case for NNLS) and ``manifold`` (a 3-d latent mapped into 25-d, closer to
trained embeddings). Labels are a smooth function of the latent plus noise.
Each time is the median of ``--repeats`` runs.

Usage: ``python benchmarks/baselines.py [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from nona.baselines import knn_loss_weights, tuned_interpolation, tuned_nnk
from nona.train import tuned_knn

SIZES = {"digits-rotation": (1200, 210, 360, 1280), "vader-valence": (5114, 902, 1504, 384)}
EMBED_DIM = 25


def synthetic_split(n: int, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` embeddings of the given kind and their labels in [0, 1]."""
    latent = rng.normal(size=(n, 3))
    if kind == "isotropic":
        z = np.c_[latent, rng.normal(size=(n, EMBED_DIM - 3))]
    else:
        mixing = np.random.default_rng(0).normal(size=(3, EMBED_DIM))  # the same map for every split
        z = np.tanh(latent @ mixing) + 0.05 * rng.normal(size=(n, EMBED_DIM))
    y = (np.sin(2 * latent[:, 0]) * np.cos(latent[:, 1]) + 1) / 2 + 0.05 * rng.normal(size=n)
    return z, y


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def row(dataset: str, kind: str, repeats: int) -> dict:
    """Timings and chosen parameters for one dataset size and embedding kind."""
    n_train, n_val, n_test, in_dim = SIZES[dataset]
    rng = np.random.default_rng(0)
    (z_train, y_train), (z_val, y_val), (z_test, y_test) = (
        synthetic_split(n, kind, rng) for n in (n_train, n_val, n_test)
    )
    t_tune, (model, params) = _median_time(lambda: tuned_nnk(z_train, y_train, z_val, y_val), repeats)
    t_pred, pred_test = _median_time(lambda: model.predict(z_test), repeats)
    t_knn, (knn, _) = _median_time(lambda: tuned_knn(z_train, y_train, z_val, y_val), repeats)
    # The NNK predictions stand in for the head's in the interpolation timing.
    pred_val_nnk, pred_val_knn = model.predict(z_val), knn.predict(z_val)
    t_interp, _ = _median_time(lambda: tuned_interpolation(pred_val_nnk, pred_val_knn, y_val), repeats)
    x_train = rng.normal(size=(n_train, in_dim))
    t_weights, _ = _median_time(lambda: knn_loss_weights(x_train, y_train), repeats)
    return {
        "dataset": dataset,
        "kind": kind,
        "sizes": f"{n_train}/{n_val}/{n_test}",
        "k": params["n_neighbors"],
        "tuned_nnk s": t_tune,
        "nnk predict s": t_pred,
        "tuned_knn s": t_knn,
        "interp ms": 1e3 * t_interp,
        "weights s": t_weights,
        "weights in_dim": in_dim,
        "nnk test mse": float(np.mean((pred_test - y_test) ** 2)),
        "knn test mse": float(np.mean((knn.predict(z_test) - y_test) ** 2)),
    }


def main() -> None:
    """Print the benchmark table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (the median is printed)")
    args = parser.parse_args()
    rows = [row(dataset, kind, args.repeats) for dataset in SIZES for kind in ("manifold", "isotropic")]
    columns = list(rows[0])
    cells = [[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-|-".join("-" * w for w in widths))
    for line in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(line, widths)))


if __name__ == "__main__":
    main()
