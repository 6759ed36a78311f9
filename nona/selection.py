"""One deterministic rule for choosing among candidates by a score (lower is better).

Every selection of the companion goes through :func:`select_best`: NNK's k
(:func:`nona.baselines.tuned_nnk`), the interpolation weight lambda
(:func:`nona.baselines.tuned_interpolation`), the k-NN grid
(:func:`nona.train.tuned_knn`) and the winners of the ablation stages
(:func:`nona.pipeline.ablation.select_winner`).

The rule
--------
1. A candidate is **tied** with the best when its score is within a relative
   tolerance of the lowest score: ``score <= best + rtol * |best|``, with
   ``rtol = SELECTION_RTOL = 1e-6`` unless a caller states another.
2. Among the tied candidates the **stated preference** decides, never the
   rounding of the scores:

   ==========================  ======================  =================================================
   selection                   scores                  a tie goes to
   ==========================  ======================  =================================================
   NNK's k                     validation MSE          the smallest k (the sparser, cheaper model)
   interpolation lambda        validation MSE          the largest lambda (towards the head alone: the
                                                       k-NN gets weight only where it lowers the error)
   k-NN grid (k, p, weights)   validation MSE          the grid's declared order: smallest k first,
                                                       then p = 1 before 2, uniform before distance
   ablation stage winner       mean validation MSE     the stage's declared order (the paper's order of
                               over the seeds          candidates; the first listed, e.g. ``l2``)
   ==========================  ======================  =================================================

Why 1e-6. The tolerance has to sit far above rounding noise and far below any
difference that means something. Rounding noise: the scores are mean squared
errors computed in float64 from predictions that are at best float32 (machine
epsilon 6e-8); different CPU kernels (AVX2 vs. the generic ones,
``ATEN_CPU_CAPABILITY``) and thread counts sum in different orders and change
float32 results at ~1e-7 relative; NNK's k = 20, 30 and 50 give validation MSEs
that agree to 1e-15 relative when the extra neighbours get zero weight, and
the last digits then differ between machines. A relative 1e-6 is more than ten
times the float32 epsilon and ten orders of magnitude above the float64 noise
of such ties, while a difference of 1e-6 in a validation MSE is far below
anything the splits can resolve (the seed spread of the ablation's means is
of the order of 1e-2 relative). The tolerance does *not* make trained
results machine-independent: two machines train slightly different models
(see the "What varies across machines" section of the Reproduce page), and
whether a winner is inside that noise is reported separately (the margin
over the runner-up, recorded with each selection).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# Relative tolerance under which two scores count as tied (justified in the module docstring).
SELECTION_RTOL = 1e-6
PREFERENCES = ("first", "last", "smallest", "largest")


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_best`.

    ``tied`` lists every candidate within the tolerance of the best score, in
    preference order (so ``tied[0] == chosen``). ``runner_up`` is the best
    candidate other than the chosen one, by the same rule (None when there is
    only one), and ``margin = runner_up_score - score``: positive when the choice is clear;
    when the runner-up is tied it is at most ``rtol * |best|`` in size and may
    be minutely negative (the chosen candidate need not have the very lowest
    score, only a score within the tolerance of it).
    """

    chosen: Any
    score: float
    tied: tuple
    runner_up: Any
    runner_up_score: float | None
    margin: float | None
    rtol: float
    prefer: str

    def to_dict(self) -> dict[str, Any]:
        """The selection as a JSON-friendly dict (the tied set as a list)."""
        out = asdict(self)
        out["tied"] = list(self.tied)
        return out


def _preference_order(candidates: list, prefer: str) -> list[int]:
    indices = list(range(len(candidates)))
    if prefer == "first":
        return indices
    if prefer == "last":
        return indices[::-1]
    try:
        ordered = sorted(indices, key=lambda i: candidates[i])
    except TypeError as error:
        raise ValueError(f"prefer={prefer!r} needs candidates that can be compared, got {candidates!r}") from error
    return ordered if prefer == "smallest" else ordered[::-1]


def select_best(
    candidates: Sequence, scores: Sequence[float], rtol: float = SELECTION_RTOL, prefer: str = "first"
) -> Selection:
    """The candidate of lowest score, ties within ``rtol`` (relative) broken by ``prefer``.

    ``prefer`` states which tied candidate wins: ``"first"`` or ``"last"`` in the
    order given, or the ``"smallest"`` or ``"largest"`` candidate value (e.g.
    the smallest k). The result does not depend on the order of equal scores,
    nor on score differences below ``rtol * |best|``.
    """
    candidates = list(candidates)
    scores = [float(s) for s in scores]
    if not candidates:
        raise ValueError("there are no candidates to select from")
    if len(scores) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(scores)} scores; give one score per candidate")
    if prefer not in PREFERENCES:
        raise ValueError(f"prefer must be one of {', '.join(PREFERENCES)}, got {prefer!r}")
    if not (math.isfinite(rtol) and rtol >= 0):
        raise ValueError(f"rtol must be a finite number >= 0, got {rtol!r}")
    bad = [(c, s) for c, s in zip(candidates, scores) if not math.isfinite(s)]
    if bad:
        raise ValueError(f"non-finite scores {bad}; a selection compares finite scores only")
    best = min(scores)
    bound = best + rtol * abs(best)
    order = _preference_order(candidates, prefer)
    tied = [i for i in order if scores[i] <= bound]
    chosen = tied[0]
    others = [i for i in order if i != chosen]
    runner = None
    if others:
        # The runner-up by the same rule, so that it too does not depend on rounding.
        second = min(scores[i] for i in others)
        runner = next(i for i in others if scores[i] <= second + rtol * abs(second))
    return Selection(
        chosen=candidates[chosen],
        score=scores[chosen],
        tied=tuple(candidates[i] for i in tied),
        runner_up=None if runner is None else candidates[runner],
        runner_up_score=None if runner is None else scores[runner],
        margin=None if runner is None else scores[runner] - scores[chosen],
        rtol=float(rtol),
        prefer=prefer,
    )
