"""The theory tested on a trained model.

A toy NONA on a synthetic task, and how its attention compares with the predicted allocations.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from nona.heads import NONA, Projector


def synthetic_task(n: int, dim: int = 8, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``x ~ U[-1, 1]^dim`` and a smooth nonlinear label of the first four coordinates plus Gaussian noise."""
    if n < 2 or dim < 4:
        raise ValueError(f"need n >= 2 points and dim >= 4 input coordinates, got n={n}, dim={dim}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n, dim))
    y = np.sin(np.pi * x[:, 0]) + 0.8 * x[:, 1] * x[:, 2] + 0.5 * x[:, 3] ** 2 + noise * rng.normal(size=n)
    return x.astype(np.float32), y


@dataclass
class ToyFit:
    """A projector trained with a NONA head, its untrained initial state, and the mean training loss per epoch."""

    trained: Projector
    initial: Projector
    head: NONA
    epoch_losses: list[float]


def fit_toy_nona(
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    dim: int = 25,
    hidden: int = 200,
    seed: int = 0,
) -> ToyFit:
    """Train ``Projector -> NONA(l2)`` (no SoftStep) with MSE, Adam, and each batch as its own neighbour set."""
    if epochs < 1 or batch_size < 2:
        raise ValueError(f"need epochs >= 1 and batch_size >= 2, got epochs={epochs}, batch_size={batch_size}")
    torch.manual_seed(seed)
    projector = Projector(x.shape[1], dim=dim, hidden=hidden)
    initial = Projector(x.shape[1], dim=dim, hidden=hidden)
    initial.load_state_dict(projector.state_dict())
    head = NONA(similarity="l2")
    optimiser = torch.optim.Adam(projector.parameters(), lr=lr)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    # The matrices are tiny (a batch of 128 by 200 units): thread start-up costs more than
    # it saves, and on a shared CPU several threads made training ten times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=generator)
            total, batches = 0.0, 0
            for start in range(0, len(xt), batch_size):
                idx = order[start : start + batch_size]
                if len(idx) < 2:
                    continue  # a lone trailing point has no neighbour
                z = projector(xt[idx])
                loss = torch.mean((head(z, z, yt[idx], exclude_self=True) - yt[idx]) ** 2)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, batches = total + loss.item(), batches + 1
            losses.append(total / batches)
    finally:
        torch.set_num_threads(threads)
    projector.eval()
    initial.eval()
    return ToyFit(projector, initial, head, losses)


def attention_weights(
    projector: Projector, head: NONA, x_anchor: np.ndarray, x_neighbours: np.ndarray | None = None
) -> np.ndarray:
    """``p_ij`` of anchors against neighbours' embeddings, in float64 (small weights keep precision).

    With ``x_neighbours=None`` the anchors are their own neighbour set and each
    anchor's own entry is masked, as in training (leave-one-out).
    """
    with torch.no_grad():
        z = projector(torch.as_tensor(x_anchor, dtype=torch.float32)).double()
        if x_neighbours is None:
            return head.attention(z, z, exclude_self=True).numpy()
        z_n = projector(torch.as_tensor(x_neighbours, dtype=torch.float32)).double()
        return head.attention(z, z_n).numpy()


def predictions(weights: np.ndarray, y_neighbours: np.ndarray) -> np.ndarray:
    """NONA's predictions ``sum_j p_ij y_j`` from an attention matrix."""
    return weights @ y_neighbours


@dataclass(frozen=True)
class Triplets:
    """Intermediate-anchor triplets ``y_j < y_i < y_k``.

    The theory's and the model's log ratio, and the anchor of each.
    """

    theory: np.ndarray
    learned: np.ndarray
    anchor: np.ndarray


def _triplet(p: np.ndarray, y_i: float, y_n: np.ndarray, j: int, k: int) -> tuple[float, float]:
    # log p_ij - log p_ik is the similarity difference; the softmax normaliser cancels.
    return float(np.log((y_n[k] - y_i) / (y_i - y_n[j]))), float(np.log(p[j]) - np.log(p[k]))


def intermediate_triplets(
    weights: np.ndarray,
    y_anchor: np.ndarray,
    y_neighbours: np.ndarray,
    per_side: int | None = 2,
    random_per_anchor: int = 4,
    seed: int = 0,
) -> Triplets:
    """Triplets ``y_j < y_i < y_k`` per anchor, with ``log((y_k - y_i)/(y_i - y_j))`` and ``log(p_ij / p_ik)``.

    ``per_side=m`` pairs each of the anchor's ``m`` highest-weight neighbours below
    ``y_i`` with each of the ``m`` highest above; ``per_side=None`` instead draws
    ``random_per_anchor`` pairs uniformly from all neighbours below and above.
    """
    rng = np.random.default_rng(seed)
    theory, learned, anchor = [], [], []
    for row, (p, y_i) in enumerate(zip(weights, y_anchor)):
        below, above = np.flatnonzero(y_neighbours < y_i), np.flatnonzero(y_neighbours > y_i)
        if len(below) == 0 or len(above) == 0:
            continue
        if per_side is None:
            pairs = zip(rng.choice(below, random_per_anchor), rng.choice(above, random_per_anchor))
        else:
            top_below = below[np.argsort(-p[below], kind="stable")[:per_side]]
            top_above = above[np.argsort(-p[above], kind="stable")[:per_side]]
            pairs = itertools.product(top_below, top_above)
        for j, k in pairs:
            t, learned_ratio = _triplet(p, y_i, y_neighbours, j, k)
            theory.append(t)
            learned.append(learned_ratio)
            anchor.append(row)
    return Triplets(np.asarray(theory), np.asarray(learned), np.asarray(anchor, dtype=int))


def extreme_pairs(
    weights: np.ndarray,
    y_anchor: np.ndarray,
    y_neighbours: np.ndarray,
    pool: int | None = 4,
    max_pairs: int = 6,
    seed: int = 0,
) -> np.ndarray:
    """Same-side neighbour pairs (extreme anchor): does the neighbour with the nearer label get the larger weight?

    Pairs come from the anchor's ``pool`` highest-weight neighbours (``None``: all
    neighbours); at most ``max_pairs`` pairs per anchor, drawn at random when the pool has more.
    """
    rng = np.random.default_rng(seed)
    hits = []
    for p, y_i in zip(weights, y_anchor):
        chosen = np.arange(len(p)) if pool is None else np.argsort(-p, kind="stable")[:pool]
        n_pairs = len(chosen) * (len(chosen) - 1) // 2
        if n_pairs <= max_pairs:
            pairs = list(itertools.combinations(chosen, 2))
        else:
            pairs = []
            while len(pairs) < max_pairs:
                j, k = rng.choice(chosen, 2, replace=False)
                pairs.append((j, k))
        for j, k in pairs:
            d_j, d_k = y_i - y_neighbours[j], y_i - y_neighbours[k]
            if d_j * d_k <= 0 or abs(d_j) == abs(d_k):
                continue  # the anchor is not extreme for this pair (or the labels tie)
            hits.append((p[j] > p[k]) == (abs(d_j) < abs(d_k)))
    return np.asarray(hits, dtype=bool)


def bracket_mass(weights: np.ndarray, y_anchor: np.ndarray, y_neighbours: np.ndarray) -> np.ndarray:
    """Attention each anchor puts on the Appendix D allocation's support.

    The support is the nearest label below the anchor's and the nearest above.
    """
    mass = np.empty(len(y_anchor))
    for row, (p, y_i) in enumerate(zip(weights, y_anchor)):
        below, above = np.flatnonzero(y_neighbours < y_i), np.flatnonzero(y_neighbours > y_i)
        support = []
        if len(below):
            support.append(below[np.argmax(y_neighbours[below])])
        if len(above):
            support.append(above[np.argmin(y_neighbours[above])])
        mass[row] = p[support].sum()
    return mass


def effective_neighbours(weights: np.ndarray) -> np.ndarray:
    """Inverse participation ratio ``1 / sum_j p_ij^2`` per row: how many neighbours the attention effectively uses."""
    return 1.0 / np.sum(weights**2, axis=1)


def log_correlations(theory: np.ndarray, learned: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations of two log-ratio samples.

    Also the least-squares slope of ``learned`` on ``theory``.
    """
    if len(theory) < 3:
        raise ValueError(f"need at least 3 triplets to correlate, got {len(theory)}")
    slope = float(np.polyfit(theory, learned, 1)[0])
    return {
        "pearson": float(stats.pearsonr(theory, learned).statistic),
        "spearman": float(stats.spearmanr(theory, learned).statistic),
        "slope": slope,
        "n": int(len(theory)),
    }
