"""Tests of nona.paper.stats and nona.paper.reference.

The paper's Figure 5, Demšar's (2006) worked example, CD diagrams.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from nona.paper import stats
from nona.paper.reference import (
    METHODS,
    demsar2006_example,
    paper_figure5_pvalues,
    paper_scores,
    paper_table1,
    printed_ties,
)

DEMSAR = demsar2006_example()
DEMSAR_AUC = DEMSAR.auc
DEMSAR_RANKS = DEMSAR.average_ranks


def random_scores(seed: int, n: int, k: int, ties: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, k)) + np.linspace(0.0, 1.5, k)
    if ties:
        values = np.round(values)
    return pd.DataFrame(values, index=[f"d{i}" for i in range(n)], columns=[f"m{j}" for j in range(k)])


def drawn_groups(fig) -> list[tuple[str, ...]]:
    return [
        tuple(artist.get_gid().removeprefix("cd-group:").split("|"))
        for ax in fig.axes
        for artist in ax.lines
        if (artist.get_gid() or "").startswith("cd-group:")
    ]


def label_texts(fig) -> dict[str, object]:
    return {
        text.get_gid().removeprefix("cd-label:"): text
        for ax in fig.axes
        for text in ax.texts
        if (text.get_gid() or "").startswith("cd-label:")
    }


# --- the paper: Table 1 and Figure 5 ------------------------------------------------------------


def test_table1_as_printed():
    table = paper_table1()
    assert len(table) == 40 and table["dataset"].nunique() == 10
    assert tuple(pd.unique(table["method"])) == METHODS
    assert table.groupby("dataset")["citation"].nunique().eq(1).all()
    assert table.groupby("dataset")["bold"].sum().eq(1).all()
    # The bold entry is a smallest printed mean of its row (possibly tied after rounding).
    best = table.groupby("dataset")["mean"].transform("min")
    assert (table.loc[table["bold"], "mean"] == best[table["bold"]]).all()
    # "NONA yielded the best performance on 4 of 10 datasets and NONA + k-NN did so on the remaining 6."
    assert table.loc[table["bold"], "method"].value_counts().to_dict() == {"NONA + k-NN": 6, "NONA": 4}


def test_printed_ties_and_their_resolution():
    ties = printed_ties().set_index("dataset")
    assert set(ties.index) == {"CoughVid", "Books"}
    assert ties.loc["Books", "winner"] == "NONA + k-NN" and ties.loc["Books", "rule"] == "bold"
    assert ties.loc["CoughVid", "winner"] == "Dense + k-NN" and ties.loc["CoughVid", "rule"] == "smaller std"
    kept, resolved = paper_scores("kept"), paper_scores("resolved")
    # Resolution changes no printed digit, only the within-dataset order.
    assert np.allclose(kept.to_numpy(), resolved.to_numpy(), rtol=1e-12, atol=0)
    ranks = stats.rank_table(resolved).ranks
    assert ranks.loc["Books", "NONA + k-NN"] < ranks.loc["Books", "NONA"]
    assert ranks.loc["CoughVid", "Dense + k-NN"] < ranks.loc["CoughVid", "NONA + k-NN"]
    assert (ranks.apply(sorted, axis=1, result_type="expand") == [1.0, 2.0, 3.0, 4.0]).all().all()


def _max_error_against_figure5(scores: pd.DataFrame) -> float:
    p = stats.nemenyi(scores)
    printed = paper_figure5_pvalues()
    return max(abs(p.loc[row.method_a, row.method_b] - row.p_value) for row in printed.itertuples())


def test_figure5_pvalues_reproduced_with_ties_resolved():
    p = stats.nemenyi(paper_scores("resolved"))
    for row in paper_figure5_pvalues().itertuples():
        assert abs(p.loc[row.method_a, row.method_b] - row.p_value) < 5e-5, (row.method_a, row.method_b)
        assert f"{p.loc[row.method_a, row.method_b]:.4f}" == f"{row.p_value:.4f}"


def test_figure5_not_reproduced_with_ties_kept():
    assert _max_error_against_figure5(paper_scores("kept")) > 1e-2


@pytest.mark.parametrize("coughvid_winner", ["Dense + k-NN", "NONA + k-NN"])
@pytest.mark.parametrize("books_winner", ["NONA", "NONA + k-NN"])
def test_only_bold_then_std_resolution_reproduces_figure5(coughvid_winner, books_winner):
    scores = paper_scores("kept")
    for dataset, winner in (("CoughVid", coughvid_winner), ("Books", books_winner)):
        scores.loc[dataset, winner] = np.nextafter(scores.loc[dataset, winner], -np.inf)
    reproduces = _max_error_against_figure5(scores) < 5e-5
    assert reproduces == (coughvid_winner == "Dense + k-NN" and books_winner == "NONA + k-NN")


def test_paper_friedman_and_groups():
    result = stats.friedman(paper_scores("resolved"))
    assert result.average_ranks.to_dict() == pytest.approx(
        {"Dense": 3.7, "Dense + k-NN": 3.2, "NONA": 1.6, "NONA + k-NN": 1.5}
    )
    assert (result.k, result.n, result.df1, result.df2) == (4, 10, 3, 27)
    assert result.p_value < 0.05 and result.iman_davenport_p_value < 0.05
    fig = stats.cd_diagram(paper_scores("resolved"))
    assert sorted(drawn_groups(fig)) == [("Dense + k-NN", "Dense"), ("NONA + k-NN", "NONA")]


# --- Demšar (2006), Sections 3.2.2 and 3.2.4 -------------------------------------------------------


def test_demsar_worked_example_from_average_ranks():
    result = stats.friedman_from_ranks(DEMSAR_RANKS, DEMSAR.n)
    assert round(result.chi2, 2) == DEMSAR.chi2 == 9.28
    assert round(result.iman_davenport, 2) == DEMSAR.iman_davenport == 3.69
    assert (result.df1, result.df2) == (3, 39)
    # "The critical value of F(3, 39) for alpha = 0.05 is 2.85, so we reject the null-hypothesis."
    assert round(sst.f.isf(0.05, result.df1, result.df2), 2) == DEMSAR.f_critical
    assert result.iman_davenport_p_value < 0.05
    assert round(stats.critical_difference(4, 14, 0.05), 2) == DEMSAR.cd_nemenyi[0.05] == 1.25
    assert round(stats.critical_difference(4, 14, 0.10), 2) == DEMSAR.cd_nemenyi[0.10] == 1.12
    # Demšar prints 1.16 for 2.394 * 0.488 = 1.168 (truncated); his conclusions hold either way:
    # C4.5+m+cf beats the control C4.5 (1.179 > CD), C4.5+m just misses (1.143 < CD).
    bonferroni_dunn = stats.critical_difference(4, 14, 0.05, test="bonferroni-dunn")
    assert bonferroni_dunn == pytest.approx(1.168, abs=5e-4)
    assert 3.143 - 2.000 < bonferroni_dunn < 3.143 - 1.964


def test_demsar_worked_example_from_table6():
    auc = DEMSAR.auc_as_ranked
    table = stats.rank_table(auc, lower_is_better=False)
    assert table.average_ranks.round(3).to_dict() == DEMSAR_RANKS
    # Demšar's printed per-dataset ranks, e.g. iris 1, 2.5, 4, 2.5 and mushroom all 2.5.
    assert table.ranks.loc["iris"].tolist() == [1.0, 2.5, 4.0, 2.5]
    assert table.ranks.loc["mushroom"].tolist() == [2.5] * 4
    assert table.ranks.loc["voting"].tolist() == [4.0, 1.0, 2.0, 3.0]
    result = stats.friedman(auc, lower_is_better=False)
    assert round(result.chi2, 2) == DEMSAR.chi2
    assert round(result.iman_davenport, 2) == DEMSAR.iman_davenport
    assert result.tie_correction < 1 and result.chi2_tie_corrected > result.chi2
    # "Even the difference between the best and the worst ... is smaller than" the CD at 0.05 ...
    p = stats.nemenyi(auc, lower_is_better=False)
    assert (p.to_numpy() >= 0.05).all()
    # ... at 0.10, C4.5 is worse than C4.5+m and C4.5+m+cf, and C4.5+cf belongs to both groups (Figure 1a).
    assert p.loc["C4.5", "C4.5+m"] < 0.10 and p.loc["C4.5", "C4.5+m+cf"] < 0.10
    groups = stats.nonsignificant_groups(p, table.average_ranks, alpha=0.10)
    assert groups == [("C4.5+m+cf", "C4.5+m", "C4.5+cf"), ("C4.5+cf", "C4.5")]


def test_demsar_ties_kept_move_the_ranks():
    table = stats.rank_table(DEMSAR_AUC, lower_is_better=False)
    assert table.ranks.loc["voting"].tolist() == [4.0, 1.0, 2.5, 2.5]
    assert table.average_ranks.round(3).to_dict() == {
        "C4.5": 3.143,
        "C4.5+m": 2.0,
        "C4.5+cf": 2.929,
        "C4.5+m+cf": 1.929,
    }


@pytest.mark.parametrize(
    ("test", "alpha", "printed"),
    [
        ("nemenyi", 0.05, [1.960, 2.343, 2.569, 2.728, 2.850, 2.949, 3.031, 3.102, 3.164]),
        ("nemenyi", 0.10, [1.645, 2.052, 2.291, 2.459, 2.589, 2.693, 2.780, 2.855, 2.920]),
        ("bonferroni-dunn", 0.05, [1.960, 2.241, 2.394, 2.498, 2.576, 2.638, 2.690, 2.724, 2.773]),
        ("bonferroni-dunn", 0.10, [1.645, 1.960, 2.128, 2.241, 2.326, 2.394, 2.450, 2.498, 2.539]),
    ],
)
def test_critical_values_match_demsar_table5(test, alpha, printed):
    computed = {k: stats.critical_value(k, alpha, test) for k in range(2, 11)}
    # Demšar's table carries errors up to 7e-4 in the third decimal, and one misprint:
    # Bonferroni-Dunn, alpha 0.05, k = 9 is norm.isf(0.05 / 16) = 2.734, printed 2.724.
    misprint = {9: 2.734} if (test, alpha) == ("bonferroni-dunn", 0.05) else {}
    expected = {k: misprint.get(k, value) for k, value in zip(range(2, 11), printed)}
    assert computed == pytest.approx(expected, abs=1e-3)


# --- agreement with scipy, scikit-posthocs and statsmodels -------------------------------------


@pytest.mark.parametrize(("seed", "n", "k"), [(0, 10, 4), (1, 14, 3), (2, 30, 7), (3, 5, 10)])
def test_friedman_matches_scipy_without_ties(seed, n, k):
    scores = random_scores(seed, n, k)
    result = stats.friedman(scores)
    reference = sst.friedmanchisquare(*scores.to_numpy().T)
    assert result.tie_correction == 1.0
    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-12)
    assert result.chi2_tie_corrected == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    expected_f = (n - 1) * result.chi2 / (n * (k - 1) - result.chi2)
    assert result.iman_davenport == pytest.approx(expected_f, rel=1e-12)
    assert result.iman_davenport_p_value == pytest.approx(sst.f.sf(expected_f, k - 1, (k - 1) * (n - 1)), rel=1e-9)


def test_friedman_tie_correction_matches_scipy():
    scores = random_scores(4, 12, 5, ties=True)
    result = stats.friedman(scores)
    reference = sst.friedmanchisquare(*scores.to_numpy().T)
    assert result.tie_correction < 1.0
    assert result.chi2_tie_corrected == pytest.approx(reference.statistic, rel=1e-12)
    assert result.p_value_tie_corrected == pytest.approx(reference.pvalue, rel=1e-9)


def test_higher_is_better_reverses_ranks():
    scores = random_scores(5, 8, 4)
    low = stats.rank_table(scores).ranks
    high = stats.rank_table(-scores, lower_is_better=False).ranks
    pd.testing.assert_frame_equal(low, high)
    assert stats.rank_table(scores).average_ranks.sum() == pytest.approx(4 * 5 / 2)


@pytest.mark.parametrize("seed", range(5))
def test_nemenyi_matches_studentized_range_and_cd(seed):
    scores = random_scores(seed, 12, 6, ties=seed % 2 == 1)
    n, k = scores.shape
    p = stats.nemenyi(scores)
    average = stats.rank_table(scores).average_ranks
    pd.testing.assert_frame_equal(p, stats.nemenyi_from_ranks(average, n), rtol=1e-9, atol=1e-12)
    cd = stats.critical_difference(k, n, 0.05)
    for a, b in itertools.combinations(scores.columns, 2):
        difference = abs(average[a] - average[b])
        assert (p.loc[a, b] < 0.05) == (difference > cd)
    assert np.allclose(p.to_numpy(), p.to_numpy().T) and np.all(np.diag(p.to_numpy()) == 1.0)


def test_wilcoxon_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    scores = random_scores(6, 15, 4)
    p = stats.wilcoxon_holm(scores)
    pairs = list(itertools.combinations(scores.columns, 2))
    raw = [sst.wilcoxon(scores[a], scores[b]).pvalue for a, b in pairs]
    adjusted = multitest.multipletests(raw, method="holm")[1]
    for (a, b), expected in zip(pairs, adjusted):
        assert p.loc[a, b] == pytest.approx(expected, rel=1e-12)
        assert p.loc[b, a] == p.loc[a, b]
    assert np.all(np.diag(p.to_numpy()) == 1.0)
    assert stats.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])


def test_wilcoxon_holm_identical_methods():
    scores = random_scores(7, 10, 3)
    scores["copy"] = scores["m0"]
    assert stats.wilcoxon_holm(scores).loc["m0", "copy"] == 1.0


# --- the CD diagram ----------------------------------------------------------------------------


def _check_groups_against_pvalues(fig, scores, alpha):
    p = stats.nemenyi(scores)
    groups = drawn_groups(fig)
    average = stats.rank_table(scores).average_ranks
    for group in groups:
        assert len(group) >= 2
        assert list(group) == sorted(group, key=lambda m: average[m])
    for a, b in itertools.combinations(scores.columns, 2):
        shared = any(a in g and b in g for g in groups)
        assert shared == (p.loc[a, b] >= alpha), (a, b, p.loc[a, b])
    # Maximal: no drawn group lies inside another.
    assert not any(set(g) < set(h) for g in groups for h in groups)


@pytest.mark.parametrize(
    ("seed", "n", "k", "alpha"), [(0, 10, 4, 0.05), (1, 20, 6, 0.05), (2, 25, 8, 0.10), (3, 30, 10, 0.05)]
)
def test_cd_diagram_groups_agree_with_nemenyi(seed, n, k, alpha):
    scores = random_scores(seed, n, k)
    fig = stats.cd_diagram(scores, alpha=alpha)
    _check_groups_against_pvalues(fig, scores, alpha)
    assert any(line.get_gid() == "cd-bar" for line in fig.axes[0].lines)


def test_cd_diagram_with_tied_average_ranks():
    scores = random_scores(8, 10, 5)
    scores["twin"] = scores["m4"]
    fig = stats.cd_diagram(scores)
    _check_groups_against_pvalues(fig, scores, 0.05)
    assert any({"m4", "twin"} <= set(g) for g in drawn_groups(fig))


def test_cd_diagram_ten_methods_labels_do_not_overlap():
    rng = np.random.default_rng(9)
    names = [
        "Dense",
        "Dense + k-NN",
        "NONA",
        "NONA + k-NN",
        "NONA (S1, global)",
        "NONA (S2, pointwise) + k-NN",
        "NNK",
        "Ridge on frozen features",
        "k-NN (k=5)",
        "Random forest",
    ]
    scores = pd.DataFrame(rng.normal(size=(15, 10)) + np.linspace(0.0, 2.0, 10), columns=names)
    fig = stats.cd_diagram(scores)
    _check_groups_against_pvalues(fig, scores, 0.05)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = label_texts(fig)
    assert set(texts) == set(names)
    boxes = {name: text.get_window_extent(renderer) for name, text in texts.items()}
    for (a, box_a), (b, box_b) in itertools.combinations(boxes.items(), 2):
        assert not box_a.overlaps(box_b), (a, b)
    figure_box = fig.bbox
    for name, box in boxes.items():
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, name
        assert figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1, name
    # Every text of the figure (ticks, CD label) stays inside it too.
    for text in fig.axes[0].texts:
        box = text.get_window_extent(renderer)
        assert (
            figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1 and figure_box.y0 <= box.y0 and box.y1 <= figure_box.y1
        )


def test_cd_diagram_into_given_axes():
    import matplotlib.figure

    fig = matplotlib.figure.Figure(figsize=(8, 3))
    ax = fig.add_subplot()
    returned = stats.cd_diagram(paper_scores("resolved"), ax=ax)
    assert returned is fig
    assert sorted(drawn_groups(fig)) == [("Dense + k-NN", "Dense"), ("NONA + k-NN", "NONA")]


# --- bad input ---------------------------------------------------------------------------------

SCORE_FUNCTIONS = [stats.rank_table, stats.friedman, stats.nemenyi, stats.wilcoxon_holm, stats.cd_diagram]


@pytest.mark.parametrize("function", SCORE_FUNCTIONS)
def test_rejects_a_single_method(function):
    with pytest.raises(ValueError, match=r"at least 2 methods \(columns\) to compare, got 1: \['a'\]"):
        function(pd.DataFrame({"a": [1.0, 2.0, 3.0]}))


@pytest.mark.parametrize("function", SCORE_FUNCTIONS)
def test_rejects_a_single_block(function):
    with pytest.raises(ValueError, match=r"at least 2 blocks \(rows, one per dataset\), got 1"):
        function(pd.DataFrame({"a": [1.0], "b": [2.0]}))


@pytest.mark.parametrize("function", SCORE_FUNCTIONS)
def test_rejects_nan_and_names_the_cells(function):
    scores = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [2.0, 1.0, np.nan]}, index=["x", "y", "z"])
    with pytest.raises(ValueError, match=r"NaN in 2 cell\(s\) \(dataset, method\): \('y', 'a'\), \('z', 'b'\)"):
        function(scores)


@pytest.mark.parametrize("function", SCORE_FUNCTIONS)
def test_rejects_non_numeric_columns_and_names_them(function):
    scores = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "c": [3, 4]})
    with pytest.raises(ValueError, match=r"non-numeric column\(s\): \['b'\]"):
        function(scores)


def test_rejects_duplicate_methods_and_non_frames():
    with pytest.raises(ValueError, match=r"method names must be unique; repeated column\(s\): \['a'\]"):
        stats.friedman(pd.DataFrame([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], columns=["a", "a", "b"]))
    with pytest.raises(TypeError, match="must be a pandas DataFrame"):
        stats.friedman(np.ones((3, 3)))


def test_rejects_bad_critical_difference_arguments():
    with pytest.raises(ValueError, match=r"unknown test 'tukey'; valid tests are \['nemenyi', 'bonferroni-dunn'\]"):
        stats.critical_difference(4, 10, test="tukey")
    with pytest.raises(ValueError, match="alpha must lie strictly between 0 and 1, got 1.5"):
        stats.critical_difference(4, 10, alpha=1.5)
    with pytest.raises(ValueError, match="number of methods k must be an integer >= 2, got 1"):
        stats.critical_difference(1, 10)
    with pytest.raises(ValueError, match=r"number of blocks \(datasets\) n must be an integer >= 2, got 1"):
        stats.critical_difference(4, 1)


def test_rejects_bad_average_ranks():
    with pytest.raises(ValueError, match=r"must sum to k\(k\+1\)/2 = 10, got 11"):
        stats.friedman_from_ranks([3.0, 3.0, 3.0, 2.0], 10)
    with pytest.raises(ValueError, match=r"must lie in \[1, 3\]"):
        stats.friedman_from_ranks([0.5, 2.5, 3.0], 10)


def test_rejects_bad_reference_and_results_arguments():
    with pytest.raises(ValueError, match=r"ties must be one of \['kept', 'resolved'\], got 'bold'"):
        paper_scores("bold")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['mean'\]"):
        stats.scores_table(pd.DataFrame({"dataset": ["a"], "method": ["b"]}))
    with pytest.raises(ValueError, match=r"more than one row for \(dataset, method\): \[\('a', 'b'\)\]"):
        stats.scores_table(pd.DataFrame({"dataset": ["a", "a"], "method": ["b", "b"], "mean": [1.0, 2.0]}))


def test_scores_table_round_trips_table1():
    pd.testing.assert_frame_equal(stats.scores_table(paper_table1()), paper_scores("kept"))
