"""Comparing methods over several datasets: ranks, Friedman and Iman-Davenport tests, Nemenyi post hoc, CD diagrams.

Every function takes ``scores``: a DataFrame with one row per block (dataset)
and one column per method, holding one number per cell (for instance the mean
test MSE over the splits). The statistics follow Demšar (2006), *Statistical
comparisons of classifiers over multiple data sets*, JMLR 7:1-30:

- ranks are taken within each block, 1 = best, ties share the average rank;
- the Friedman statistic is reported with and without the tie correction
  (Demšar's worked example uses the uncorrected one);
- the Iman-Davenport F is computed from the uncorrected statistic, as in Demšar;
- Nemenyi p-values use the studentized range with infinite degrees of freedom,
  so ``p < alpha`` exactly when two average ranks differ by more than
  :func:`critical_difference`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.figure
import numpy as np
import pandas as pd
import scikit_posthocs
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.font_manager import FontProperties
from scipy import stats

CD_TESTS = ("nemenyi", "bonferroni-dunn")
# Relative slack allowed when average ranks are given rounded (Demšar prints three decimals).
_RANK_SUM_TOLERANCE = 1e-2


@dataclass(frozen=True, eq=False)
class RankTable:
    """Per-block ranks (1 = best, ties share their average rank) and each method's average rank.

    ``ranks`` has the shape and labels of ``scores``; ``average_ranks`` is indexed
    by method in the column order of ``scores`` (sort it to get the ranking).
    """

    ranks: pd.DataFrame
    average_ranks: pd.Series


@dataclass(frozen=True, eq=False)
class FriedmanResult:
    """Friedman test (with and without tie correction) and the Iman-Davenport F test on the same ranks.

    ``chi2`` is the Friedman (1937) statistic
    ``12N/(k(k+1)) * (sum_j R_j^2 - k(k+1)^2/4)`` on the average ranks ``R_j``;
    ``chi2_tie_corrected`` divides it by ``tie_correction``
    ``C = 1 - sum(t^3 - t) / (N (k^3 - k))`` over the groups of tied scores
    (``C = 1`` without ties; the value :func:`scipy.stats.friedmanchisquare`
    reports). ``iman_davenport`` is ``F_F = (N-1) chi2 / (N(k-1) - chi2)`` with
    ``df1 = k-1`` and ``df2 = (k-1)(N-1)`` degrees of freedom, built on the
    uncorrected ``chi2`` as in Demšar (2006).
    """

    k: int
    n: int
    average_ranks: pd.Series
    chi2: float
    p_value: float
    tie_correction: float
    chi2_tie_corrected: float
    p_value_tie_corrected: float
    iman_davenport: float
    df1: int
    df2: int
    iman_davenport_p_value: float


def check_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Return ``scores`` as a float DataFrame, or raise ValueError saying what is wrong with it."""
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(
            f"scores must be a pandas DataFrame with one row per dataset and one column per method, "
            f"got {type(scores).__name__}"
        )
    n_blocks, n_methods = scores.shape
    if n_methods < 2:
        raise ValueError(
            f"scores must have at least 2 methods (columns) to compare, got {n_methods}: {list(scores.columns)}"
        )
    if n_blocks < 2:
        raise ValueError(f"scores must have at least 2 blocks (rows, one per dataset), got {n_blocks}")
    duplicated = scores.columns[scores.columns.duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"method names must be unique; repeated column(s): {duplicated}")
    non_numeric = [
        column
        for column in scores.columns
        if not pd.api.types.is_numeric_dtype(scores[column]) or pd.api.types.is_bool_dtype(scores[column])
    ]
    if non_numeric:
        raise ValueError(
            f"scores must be numeric; non-numeric column(s): {non_numeric} "
            f"(dtypes {[str(scores[c].dtype) for c in non_numeric]}); convert them, e.g. scores.astype(float)"
        )
    values = scores.astype(float)
    missing = values.isna()
    if missing.to_numpy().any():
        cells = [(values.index[i], values.columns[j]) for i, j in np.argwhere(missing.to_numpy())]
        shown = ", ".join(f"({block!r}, {method!r})" for block, method in cells[:10])
        more = f" and {len(cells) - 10} more" if len(cells) > 10 else ""
        raise ValueError(
            f"scores contain NaN in {len(cells)} cell(s) (dataset, method): {shown}{more}; "
            "every method needs a score on every dataset (drop the incomplete datasets or methods)"
        )
    return values


def scores_table(results: pd.DataFrame, value: str = "mean") -> pd.DataFrame:
    """Pivot a tidy results table (columns ``dataset``, ``method``, ``value``) to a dataset x method score table."""
    required = ["dataset", "method", value]
    absent = [column for column in required if column not in results.columns]
    if absent:
        raise ValueError(f"results table lacks column(s) {absent}; it needs {required}, has {list(results.columns)}")
    repeated = results[results.duplicated(["dataset", "method"], keep=False)]
    if not repeated.empty:
        pairs = sorted(set(zip(repeated["dataset"], repeated["method"])))
        raise ValueError(f"results table has more than one row for (dataset, method): {pairs[:10]}")
    table = results.pivot(index="dataset", columns="method", values=value)
    # Keep the order in which the table lists datasets and methods, not pivot's alphabetical one.
    table = table.reindex(index=pd.unique(results["dataset"]), columns=pd.unique(results["method"]))
    table.index.name, table.columns.name = "dataset", "method"
    return table


def rank_table(scores: pd.DataFrame, lower_is_better: bool = True) -> RankTable:
    """Rank the methods within each block (1 = best, ties averaged) and average the ranks over blocks."""
    values = check_scores(scores)
    oriented = values.to_numpy() if lower_is_better else -values.to_numpy()
    ranks = pd.DataFrame(stats.rankdata(oriented, axis=1, method="average"), index=values.index, columns=values.columns)
    return RankTable(ranks=ranks, average_ranks=ranks.mean(axis=0).rename("average rank"))


def tie_correction(ranks: pd.DataFrame) -> float:
    """Friedman's tie correction ``C = 1 - sum(t^3 - t) / (N (k^3 - k))`` for a table of within-block ranks."""
    n, k = ranks.shape
    ties = 0.0
    for row in ranks.to_numpy():
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts.astype(float) ** 3 - counts))
    return 1.0 - ties / (n * (k**3 - k))


def _check_average_ranks(average_ranks: Mapping[str, float] | Sequence[float] | pd.Series) -> pd.Series:
    if isinstance(average_ranks, pd.Series):
        ranks = average_ranks.astype(float)
    elif isinstance(average_ranks, Mapping):
        ranks = pd.Series(dict(average_ranks), dtype=float)
    else:
        ranks = pd.Series(list(average_ranks), dtype=float)
        ranks.index = [f"method {i + 1}" for i in range(len(ranks))]
    k = len(ranks)
    if k < 2:
        raise ValueError(f"need the average ranks of at least 2 methods, got {k}")
    if not np.isfinite(ranks.to_numpy()).all() or (ranks < 1).any() or (ranks > k).any():
        raise ValueError(f"average ranks of {k} methods must lie in [1, {k}], got {ranks.to_dict()}")
    expected = k * (k + 1) / 2
    if abs(ranks.sum() - expected) > _RANK_SUM_TOLERANCE * k:
        raise ValueError(
            f"average ranks of {k} methods must sum to k(k+1)/2 = {expected:g}, got {ranks.sum():g}: {ranks.to_dict()}"
        )
    return ranks


def _check_blocks(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"the number of blocks (datasets) n must be an integer >= 2, got {n!r}")
    return int(n)


def friedman_from_ranks(
    average_ranks: Mapping[str, float] | Sequence[float] | pd.Series, n: int, tie_correction: float = 1.0
) -> FriedmanResult:
    """Friedman and Iman-Davenport statistics from the methods' average ranks over ``n`` blocks."""
    ranks = _check_average_ranks(average_ranks)
    n = _check_blocks(n)
    if not 0.0 <= tie_correction <= 1.0:
        raise ValueError(f"tie_correction must lie in [0, 1] (1 = no ties), got {tie_correction}")
    k = len(ranks)
    chi2 = 12.0 * n / (k * (k + 1)) * (float(np.sum(ranks.to_numpy() ** 2)) - k * (k + 1) ** 2 / 4.0)
    # Rounded average ranks can push the statistic a hair below zero.
    chi2 = max(chi2, 0.0)
    if tie_correction > 0.0:
        chi2_corrected = chi2 / tie_correction
    else:
        # Every block is one big tie: no method differs from another.
        chi2_corrected = 0.0
    df1, df2 = k - 1, (k - 1) * (n - 1)
    denominator = n * (k - 1) - chi2
    # chi2 reaches N(k-1) when every block ranks the methods identically; F is then infinite.
    iman_davenport = (n - 1) * chi2 / denominator if denominator > 1e-12 * n * k else math.inf
    return FriedmanResult(
        k=k,
        n=n,
        average_ranks=ranks.rename("average rank"),
        chi2=chi2,
        p_value=float(stats.chi2.sf(chi2, df1)),
        tie_correction=float(tie_correction),
        chi2_tie_corrected=chi2_corrected,
        p_value_tie_corrected=float(stats.chi2.sf(chi2_corrected, df1)),
        iman_davenport=iman_davenport,
        df1=df1,
        df2=df2,
        iman_davenport_p_value=float(stats.f.sf(iman_davenport, df1, df2)) if math.isfinite(iman_davenport) else 0.0,
    )


def friedman(scores: pd.DataFrame, lower_is_better: bool = True) -> FriedmanResult:
    """Friedman test, with and without tie correction, and the Iman-Davenport F test of ``scores``."""
    table = rank_table(scores, lower_is_better)
    return friedman_from_ranks(table.average_ranks, table.ranks.shape[0], tie_correction(table.ranks))


def nemenyi_from_ranks(average_ranks: Mapping[str, float] | Sequence[float] | pd.Series, n: int) -> pd.DataFrame:
    """Nemenyi p-values of every pair of methods from their average ranks over ``n`` blocks."""
    ranks = _check_average_ranks(average_ranks)
    n = _check_blocks(n)
    k = len(ranks)
    r = ranks.to_numpy()
    standard_error = math.sqrt(k * (k + 1) / (6.0 * n))
    # The studentized range is defined on differences of means in units of sigma; the rank
    # difference over its standard error is that range divided by sqrt(2).
    q = np.abs(r[:, None] - r[None, :]) / standard_error * math.sqrt(2.0)
    p = stats.studentized_range.sf(q, k, np.inf)
    np.fill_diagonal(p, 1.0)
    return pd.DataFrame(np.clip(p, 0.0, 1.0), index=ranks.index, columns=ranks.index)


def nemenyi(scores: pd.DataFrame, lower_is_better: bool = True) -> pd.DataFrame:
    """Nemenyi post hoc p-values of every pair of methods (Friedman ranks, studentized range, df = inf)."""
    values = check_scores(scores)
    oriented = values.to_numpy() if lower_is_better else -values.to_numpy()
    p = scikit_posthocs.posthoc_nemenyi_friedman(oriented)
    return pd.DataFrame(p.to_numpy(), index=values.columns, columns=values.columns)


def critical_value(k: int, alpha: float = 0.05, test: str = "nemenyi") -> float:
    """Demšar's q_alpha for ``k`` methods: Nemenyi (all pairs) or Bonferroni-Dunn (each against one control)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"the number of methods k must be an integer >= 2, got {k!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    if test == "nemenyi":
        return float(stats.studentized_range.isf(alpha, k, np.inf) / math.sqrt(2.0))
    if test == "bonferroni-dunn":
        return float(stats.norm.isf(alpha / (2 * (k - 1))))
    raise ValueError(f"unknown test {test!r}; valid tests are {list(CD_TESTS)}")


def critical_difference(k: int, n: int, alpha: float = 0.05, test: str = "nemenyi") -> float:
    """Demšar's critical difference ``q_alpha * sqrt(k(k+1) / (6N))`` of average ranks."""
    q = critical_value(k, alpha, test)
    return q * math.sqrt(k * (k + 1) / (6.0 * _check_blocks(n)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values, in the order given."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p-values must be a flat sequence of numbers in [0, 1], got {p_values!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def wilcoxon_holm(scores: pd.DataFrame) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank p-values of every pair of methods over the blocks, Holm-adjusted."""
    values = check_scores(scores)
    methods = list(values.columns)
    pairs = [(i, j) for i in range(len(methods)) for j in range(i + 1, len(methods))]
    raw = []
    for i, j in pairs:
        differences = values.iloc[:, i].to_numpy() - values.iloc[:, j].to_numpy()
        # Identical columns leave the signed-rank statistic undefined; they do not differ.
        raw.append(1.0 if np.all(differences == 0) else float(stats.wilcoxon(differences).pvalue))
    p = np.ones((len(methods), len(methods)))
    for (i, j), adjusted in zip(pairs, holm(raw)):
        p[i, j] = p[j, i] = adjusted
    return pd.DataFrame(p, index=methods, columns=methods)


def nonsignificant_groups(
    p_values: pd.DataFrame, average_ranks: pd.Series, alpha: float = 0.05
) -> list[tuple[str, ...]]:
    """Maximal runs of methods, consecutive by average rank, whose every pair has ``p >= alpha``.

    These are the bars of a CD diagram: two methods share a bar exactly when
    their p-value is at least ``alpha``. Raises ValueError if some
    non-significant pair cannot be joined by such a run, which cannot happen
    for Nemenyi p-values (they fall as the rank difference grows).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    unknown = [m for m in average_ranks.index if m not in p_values.index or m not in p_values.columns]
    if unknown:
        raise ValueError(f"p-value matrix has no row/column for method(s) {unknown}")
    order = list(average_ranks.sort_values(kind="stable").index)

    def joined(a: str, b: str) -> bool:
        return bool(p_values.loc[a, b] >= alpha)

    groups: list[tuple[str, ...]] = []
    reach = -1
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and all(joined(order[m], order[end + 1]) for m in range(start, end + 1)):
            end += 1
        if end > start and end > reach:
            groups.append(tuple(order[start : end + 1]))
            reach = end
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            if joined(a, b) and not any(a in g and b in g for g in groups):
                raise ValueError(
                    f"{a!r} and {b!r} are not significantly different but some method ranked between them is "
                    "significantly different from one of them; such p-values cannot be drawn as CD bars"
                )
    return groups


def cd_diagram(
    scores: pd.DataFrame, lower_is_better: bool = True, alpha: float = 0.05, ax: Axes | None = None
) -> matplotlib.figure.Figure:
    """Demšar's critical-difference diagram of ``scores`` with Nemenyi groups at level ``alpha``.

    The rank axis runs from 1 (best) on the left to k on the right (Demšar's
    original puts the best on the right). Each method is labelled with its
    average rank; the better half of the methods is labelled on the left, the
    other half on the right, each label on its own row. Thick bars join methods
    whose Nemenyi p-value is at least ``alpha``; the bar above the axis is one
    critical difference long. Artists carry gids a program can read back:
    ``cd-group:A|B|...`` (a bar, methods in rank order), ``cd-label:A``,
    ``cd-elbow:A`` and ``cd-bar``. Without ``ax`` the figure is sized so that
    no label overlaps or is clipped; with ``ax`` its limits are replaced and
    the layout scales with the axes.
    """
    table = rank_table(scores, lower_is_better)
    n, k = table.ranks.shape
    groups = nonsignificant_groups(nemenyi(scores, lower_is_better), table.average_ranks, alpha)
    cd = critical_difference(k, n, alpha)
    return _draw_cd(table.average_ranks, groups, cd, alpha, ax)


def _text_width_inches(text: str, fontsize: float) -> float:
    renderer = RendererAgg(10, 10, 72)
    width, _, _ = renderer.get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return width / 72.0


def _draw_cd(
    average_ranks: pd.Series, groups: list[tuple[str, ...]], cd: float, alpha: float, ax: Axes | None
) -> matplotlib.figure.Figure:
    fontsize, tick_fontsize = 10.0, 9.0
    order = average_ranks.sort_values(kind="stable")
    names = list(order.index)
    k = len(names)
    n_left = math.ceil(k / 2)
    left, right = names[:n_left], names[n_left:]
    labels = {name: f"{name} ({order[name]:.2f})" for name in names}

    # Geometry in inches, y growing downwards from the top edge of the figure.
    pad, stub, gap = 0.12, 0.3, 0.06
    row = max(0.27, 1.7 * fontsize / 72.0)
    left_text = max(_text_width_inches(labels[m], fontsize) for m in left)
    right_text = max((_text_width_inches(labels[m], fontsize) for m in right), default=0.0)
    # 0.75 in per rank, but at most 4 in: with many methods the labels take the width, and a
    # wider axis would only shrink every label when the page scales the figure to its column.
    axis_width = min(max(3.0, 0.75 * (k - 1)), 4.0)
    scale = axis_width / (k - 1)
    x0 = pad + left_text + gap + stub

    def x(rank: float) -> float:
        return x0 + (rank - 1.0) * scale

    y_cd, y_axis = 0.35, 0.8
    bar_extents = _bar_extents(groups, order, x)
    bar_rows = _pack_bars(bar_extents, min_gap=0.1)
    n_bar_rows = max(bar_rows, default=-1) + 1
    y_bar0, bar_step = y_axis + 0.2, 0.13
    y_label0 = y_axis + 0.2 + n_bar_rows * bar_step + 0.15
    height = y_label0 + (n_left - 1) * row + 0.3
    width = max(x(k) + stub + gap + right_text + pad, x(1) + cd * scale + pad)

    if ax is None:
        fig = matplotlib.figure.Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    fig = ax.figure
    ax.set_xlim(0.0, width)
    ax.set_ylim(height, 0.0)
    ax.set_axis_off()

    line = {"color": "black", "solid_capstyle": "butt", "clip_on": False}
    ax.plot([x(1), x(k)], [y_axis, y_axis], lw=1.0, **line)
    for tick in np.arange(1.0, k + 0.25, 0.5):
        length = 0.1 if float(tick).is_integer() else 0.05
        ax.plot([x(tick), x(tick)], [y_axis - length, y_axis], lw=1.0, **line)
    for tick in range(1, k + 1):
        ax.text(x(tick), y_axis - 0.13, str(tick), ha="center", va="bottom", fontsize=tick_fontsize)

    (cd_bar,) = ax.plot([x(1), x(1) + cd * scale], [y_cd, y_cd], lw=1.5, **line)
    cd_bar.set_gid("cd-bar")
    for end in (x(1), x(1) + cd * scale):
        ax.plot([end, end], [y_cd - 0.05, y_cd + 0.05], lw=1.0, **line)
    ax.text(
        x(1) + cd * scale / 2,
        y_cd - 0.08,
        f"CD = {cd:.2f} (α = {alpha:g})",
        ha="center",
        va="bottom",
        fontsize=tick_fontsize,
    )

    for group, (x_start, x_end), bar_row in zip(groups, bar_extents, bar_rows):
        y = y_bar0 + bar_row * bar_step
        (bar,) = ax.plot([x_start, x_end], [y, y], lw=3.5, **line)
        bar.set_gid("cd-group:" + "|".join(group))
        bar.set_label("not significantly different: " + ", ".join(group))

    for index, name in enumerate(left):
        y = y_label0 + index * row
        _elbow(ax, name, x(order[name]), y_axis, y, x0 - stub, line)
        text = ax.text(x0 - stub - gap, y, labels[name], ha="right", va="center", fontsize=fontsize, parse_math=False)
        text.set_gid(f"cd-label:{name}")
    for index, name in enumerate(right):
        # The worst method takes the top row so that elbow lines never cross.
        y = y_label0 + (len(right) - 1 - index) * row
        _elbow(ax, name, x(order[name]), y_axis, y, x(k) + stub, line)
        text = ax.text(x(k) + stub + gap, y, labels[name], ha="left", va="center", fontsize=fontsize, parse_math=False)
        text.set_gid(f"cd-label:{name}")
    return fig


def _bar_extents(
    groups: list[tuple[str, ...]], order: pd.Series, x: Callable[[float], float]
) -> list[tuple[float, float]]:
    # A bar overhangs its end methods a little so that a group of tied ranks stays visible.
    return [(x(order[g[0]]) - 0.06, x(order[g[-1]]) + 0.06) for g in groups]


def _pack_bars(extents: list[tuple[float, float]], min_gap: float) -> list[int]:
    """Row of each bar: the first row where it clears every bar already placed there by ``min_gap``."""
    row_ends: list[float] = []
    rows = []
    for start, end in extents:
        for index, row_end in enumerate(row_ends):
            if start > row_end + min_gap:
                row_ends[index] = end
                rows.append(index)
                break
        else:
            row_ends.append(end)
            rows.append(len(row_ends) - 1)
    return rows


def _elbow(ax: Axes, name: str, x_rank: float, y_axis: float, y: float, x_end: float, line: dict) -> None:
    (elbow,) = ax.plot([x_rank, x_rank, x_end], [y_axis, y, y], lw=0.8, **line)
    elbow.set_gid(f"cd-elbow:{name}")


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default)."""
    if n < 1:
        raise ValueError("need at least one trial for a proportion")
    phat = hits / n
    centre = (phat + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(phat * (1 - phat) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return float(centre - half), float(centre + half)
