"""The book's number formatting (nona.paper.tables)."""

from nona.paper.tables import markdown_table, mean_std, settings_text, significant


def test_significant_keeps_three_figures_as_the_paper_prints_them():
    assert [significant(v) for v in (303.0, 28.0, 20.0, 0.435, 5.12, 0.0239, 1234.5)] == [
        "303",
        "28.0",
        "20.0",
        "0.435",
        "5.12",
        "0.0239",
        "1230",
    ]
    assert significant(1.333333, digits=2) == "1.3"


def test_mean_std_scales_and_bolds():
    assert mean_std(0.00573, 0.00028) == "5.73 ± 0.28"
    assert mean_std(5.12, 0.322, scale=1, bold=True, std_digits=3) == "**5.12 ± 0.322**"


def test_markdown_table_has_a_header_rule_and_one_line_per_row():
    assert markdown_table(["a", "b"], [(1, 2), ("x", None)]).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
        "| x | None |",
    ]


def test_settings_text_names_each_setting_with_its_value():
    assert settings_text({"n_neighbors": 7, "p": 1, "weights": "uniform"}) == "n neighbors 7, p 1, weights uniform"
    assert settings_text({}) == ""
