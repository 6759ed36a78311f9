"""Published numbers and the reproduction check.

The tolerance rules on built cases, the CLI's exit codes, the smoke pipeline.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nona.paper import published as pub
from nona.pipeline import reproduce as rp
from nona.pipeline.cli import main

REPO = Path(__file__).resolve().parent.parent
SMOKE_REFERENCE = rp.reference_path("smoke")


# The rules -------------------------------------------------------------------------------------


def test_exact_rule_passes_equal_values_and_fails_any_other():
    assert rp.compare_number("k", pub.exact(0.125), pub.exact(0.125)).verdict == rp.PASS
    row = rp.compare_number("k", pub.exact(0.125), pub.exact(0.125 * (1 + 1e-6)))
    assert row.verdict == rp.FAIL and row.error
    assert rp.compare_number("k", pub.exact(True), pub.exact(True)).verdict == rp.PASS
    assert rp.compare_number("k", pub.exact(True), pub.exact(False)).error
    # A stated relative tolerance (float32 computations on fixed data).
    assert rp.compare_number("k", pub.exact(2.0, rel=1e-4), pub.exact(2.0001)).verdict == rp.PASS


def test_exact_rule_to_the_last_printed_digit():
    assert rp.exact_agrees(0.001574, 0.0016, digits=4)
    assert rp.exact_agrees(0.00164, 0.0016, digits=4)
    assert not rp.exact_agrees(0.00166, 0.0016, digits=4)
    assert rp.exact_agrees(32.2039, 32.2, digits=1) and not rp.exact_agrees(32.26, 32.2, digits=1)
    row = rp.compare_number("p", pub.exact(0.0286, digits=4), pub.exact(0.02858))
    assert row.verdict == rp.PASS and "4 decimals" in row.tolerance


def test_statistical_rule_is_two_standard_errors_of_the_difference():
    reference = pub.statistical(5.0, 0.3)
    # 2 * sqrt(0.3^2 + 0.4^2) = 1.0
    assert rp.compare_number("m", reference, pub.statistical(5.99, 0.4)).verdict == rp.PASS
    outside = rp.compare_number("m", reference, pub.statistical(6.01, 0.4))
    assert outside.verdict == rp.FAIL and not outside.error
    assert "2 SE = 1" in outside.tolerance
    assert pub.mean_se([1.0, 2.0, 3.0]) == pub.statistical(2.0, 1 / np.sqrt(3), n=3)


def test_approximate_rule_is_relative():
    assert rp.compare_number("a", pub.approximate(10.0, rel=0.25), pub.approximate(12.4)).verdict == rp.PASS
    assert rp.compare_number("a", pub.approximate(10.0, rel=0.25), pub.approximate(12.6)).verdict == rp.FAIL


def test_selection_differs_reports_the_margin_and_the_noise():
    reference = pub.selection("l2", {"l2": 4.7, "cos": 4.8}, {"l2": 0.1, "cos": 0.1})
    assert reference["margin"] == pytest.approx(0.1) and reference["runner_up"] == "cos"
    same = rp.compare_number("w", reference, pub.selection("l2", {"l2": 4.6, "cos": 4.9}, {"l2": 0.1, "cos": 0.1}))
    assert same.verdict == rp.PASS
    close = rp.compare_number("w", reference, pub.selection("cos", {"l2": 4.75, "cos": 4.70}, {"l2": 0.1, "cos": 0.1}))
    assert close.verdict == rp.DIFFERS and not close.error
    assert "margin over it 0.05" in close.note and "within noise" in close.note
    far = rp.compare_number("w", reference, pub.selection("cos", {"l2": 5.5, "cos": 4.70}, {"l2": 0.1, "cos": 0.1}))
    assert "outside noise" in far.note


def test_missing_and_new_numbers():
    gone = rp.compare_number("x", pub.exact(1.0), None)
    assert gone.verdict == rp.FAIL and gone.error and "missing" in gone.note
    gone_trained = rp.compare_number("x", pub.statistical(1.0, 0.1), None)
    assert gone_trained.verdict == rp.FAIL and not gone_trained.error
    assert not rp.compare_number("x", None, pub.exact(1.0)).counted


def test_plain_values_are_exact_and_nan_is_stored_as_null():
    assert pub.as_number(3) == pub.exact(3)
    assert pub.as_number(np.float64("nan"))["value"] is None
    with pytest.raises(ValueError, match="kind"):
        pub.as_number({"value": 1})


def test_noise_se_from_the_seed_spread():
    table = pd.DataFrame(
        {"dataset": ["a", "a"], "method": ["x", "y"], "mean": [1.0, 2.0], "std": [0.0, 0.3], "n_seeds": [9, 9]}
    )
    se = pub.noise_se(table, lambda t: {"y": float(t["mean"].iloc[1]), "x": float(t["mean"].iloc[0])}, draws=2000)
    assert se["x"] == 0 and se["y"] == pytest.approx(0.1, rel=0.1)


# Records, collection, the report -----------------------------------------------------------------


def test_record_and_collect_into_one_versioned_file(tmp_path):
    pub.record_numbers({"a": 1.5, "b": pub.statistical(2.0, 0.1)}, page="results", profile="smoke", build_dir=tmp_path)
    pub.record_numbers({"c": True}, page="theory", profile="smoke", build_dir=tmp_path)
    pub.record_numbers({"stale": 1}, page="removed", profile="smoke", build_dir=tmp_path)
    content = pub.collect("smoke", pages=["results", "theory"], build_dir=tmp_path, machine={"cpu_count": 2})
    on_disk = pub.load_published(tmp_path / "results" / "smoke" / "published.json")
    assert on_disk == content
    assert (
        content["format"] == pub.FORMAT and content["version"] == pub.VERSION and content["machine"] == {"cpu_count": 2}
    )
    assert set(content["numbers"]) == {"results/a", "results/b", "theory/c"}
    assert content["numbers"]["results/a"] == pub.exact(1.5)


def test_record_numbers_outside_the_pipeline_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("NONA_NOTEBOOK", raising=False)
    monkeypatch.delenv(pub.PROFILE_ENV, raising=False)
    monkeypatch.delenv("NONA_PARAMETERS", raising=False)
    assert pub.record_numbers({"a": 1}, build_dir=tmp_path) is None
    monkeypatch.setenv("NONA_NOTEBOOK", "statistics-build")
    monkeypatch.setenv(pub.PROFILE_ENV, "quick")
    assert (
        pub.record_numbers({"a": 1}, build_dir=tmp_path) == tmp_path / "published" / "quick" / "statistics-build.json"
    )


def claim_numbers() -> dict:
    """The numbers the paper's claims read, computed as the statistics page does (no theory: those claims fail)."""
    from nona.paper import stats
    from nona.paper.reference import demsar2006_example, paper_figure5_pvalues, paper_scores

    scores = paper_scores("resolved")
    p = stats.nemenyi(scores)
    numbers = {
        f"statistics/figure5/{a} vs {b}": pub.exact(p.loc[a, b])
        for a, b, _ in paper_figure5_pvalues().itertuples(index=False)
    }
    numbers.update(
        {f"statistics/average-rank/{m}": pub.exact(r) for m, r in stats.rank_table(scores).average_ranks.items()}
    )
    example = demsar2006_example()
    ranks = stats.friedman_from_ranks(example.average_ranks, example.n)
    numbers.update(
        {
            "statistics/demsar/chi2": pub.exact(ranks.chi2),
            "statistics/demsar/iman-davenport": pub.exact(ranks.iman_davenport),
            "statistics/demsar/cd-0.05": pub.exact(stats.critical_difference(4, 14, 0.05)),
            "statistics/demsar/cd-0.10": pub.exact(stats.critical_difference(4, 14, 0.10)),
        }
    )
    numbers.update(
        {
            f"statistics/demsar/average-rank/{m}": pub.exact(r)
            for m, r in stats.rank_table(example.auc_as_ranked, lower_is_better=False).average_ranks.items()
        }
    )
    numbers["results/paper-median-reduction"] = pub.exact(32.2039, digits=1)
    numbers["results/table1/d1/NONA"] = pub.statistical(4.0, 0.2)
    numbers["results/table1/d1/Dense"] = pub.statistical(5.0, 0.2)
    numbers["results/table1/d2/NONA"] = pub.statistical(5.1, 0.2)
    numbers["results/table1/d2/Dense"] = pub.statistical(5.0, 0.2)
    return numbers


def test_paper_claims_on_built_numbers():
    rows = {r.item: r for r in rp.paper_claims(claim_numbers())}
    assert all(
        rows[f"Figure 5 p-value, {a} vs {b}"].verdict == rp.PASS
        for a, b in [
            ("NONA", "Dense"),
            ("NONA", "Dense + k-NN"),
            ("NONA + k-NN", "Dense"),
            ("NONA + k-NN", "Dense + k-NN"),
        ]
    )
    assert all(r.verdict == rp.PASS for k, r in rows.items() if k.startswith("Demšar"))
    assert rows["NONA below Dense on d1"].verdict == rp.PASS
    below = rows["NONA below Dense on d2"]
    assert below.verdict == rp.FAIL and not below.error and "within 2 SE" in below.note
    assert (
        rows[
            "NONA and NONA + k-NN ranked above both dense methods, on the paper's Table 1 (printed ties resolved)"
        ].verdict
        == rp.PASS
    )
    assert rows["NONA and NONA + k-NN ranked above both dense methods, on this build's Table 1"].verdict == rp.NA
    assert rows["the paper's median Dense → NONA reduction, recomputed from its printed Table 1"].verdict == rp.PASS
    # A missing exact claim (here every theory identity) is an error.
    assert rows["theory: line 3 → 4 as printed is NOT an identity (erratum: the factor 2)"].error


def test_a_wrong_figure5_p_value_is_an_exact_failure():
    numbers = claim_numbers()
    numbers["statistics/figure5/NONA vs Dense"] = pub.exact(0.0018)
    rows = {r.item: r for r in rp.paper_claims(numbers)}
    assert rows["Figure 5 p-value, NONA vs Dense"].error


def test_report_summary_counts_reproduced_rows():
    build = {
        "profile": "smoke",
        "numbers": {
            "p/a": pub.exact(1.0),
            "p/b": pub.statistical(2.0, 0.1),
            "p/w": pub.selection("x", {"x": 1.0, "y": 2.0}),
        },
    }
    reference = copy.deepcopy(build)
    reference["numbers"]["p/b"] = pub.statistical(3.0, 0.1)
    reference["numbers"]["p/w"] = pub.selection("y", {"x": 1.0, "y": 0.5})
    report = rp.compare(build, reference)
    reproduction = [r for r in report.rows if r.section == "reproduction"]
    assert [r.verdict for r in reproduction] == [rp.PASS, rp.FAIL, rp.DIFFERS]
    line = report.summary()
    assert line.startswith(f"{report.n_reproduced} of {len(report.counted)} reproduced")
    assert "1 selection differs" in line
    text = rp.to_text(report)
    assert line in text and "Paper claims" in text and "Reproduction" in text
    assert "| p/b | 3 ± 0.1 | 2 ± 0.1 |" in rp.to_markdown(report, "reproduction")


# The command line --------------------------------------------------------------------------------


@pytest.fixture
def smoke_build(tmp_path):
    """A build folder whose published.json is the shipped smoke reference."""
    if not SMOKE_REFERENCE.is_file():
        pytest.skip("no smoke reference shipped")
    target = pub.published_file("smoke", tmp_path)
    target.parent.mkdir(parents=True)
    target.write_text(SMOKE_REFERENCE.read_text())
    return tmp_path


def run_cli(*args) -> tuple[int, str]:
    out = io.StringIO()
    from contextlib import redirect_stdout

    with redirect_stdout(out):
        status = main(list(args))
    return status, out.getvalue()


def test_check_exits_0_when_the_build_is_the_reference(smoke_build):
    status, out = run_cli("reproduce", "check", "--profile", "smoke", "--build", str(smoke_build))
    assert status == 0, out
    report = rp.compare(pub.load_published(SMOKE_REFERENCE), pub.load_published(SMOKE_REFERENCE))
    assert out.startswith(report.summary())
    assert not [r for r in report.rows if r.section == "reproduction" and r.verdict != rp.PASS]


def test_check_exits_1_when_an_exact_number_differs_and_0_for_a_statistical_one(smoke_build, tmp_path):
    path = pub.published_file("smoke", smoke_build)
    content = json.loads(path.read_text())
    statistical = next(k for k, v in content["numbers"].items() if v["kind"] == "statistical" and v["value"])
    content["numbers"][statistical]["value"] *= 100
    path.write_text(json.dumps(content))
    status, out = run_cli("reproduce", "check", "--profile", "smoke", "--build", str(smoke_build))
    assert status == 0 and "statistical ✗" in out and "1 statistical ✗" in out.splitlines()[0], out
    exact_key = "statistics/figure5/NONA vs Dense"
    content["numbers"][exact_key]["value"] += 1e-3
    path.write_text(json.dumps(content))
    status, out = run_cli("reproduce", "check", "--profile", "smoke", "--build", str(smoke_build))
    assert status == 1 and "FAILED" in out and exact_key in out


def test_check_without_a_reference_says_so_and_fails_unless_allowed(smoke_build, tmp_path):
    missing = tmp_path / "nowhere.json"
    status, out = run_cli(
        "reproduce", "check", "--profile", "smoke", "--build", str(smoke_build), "--reference", str(missing)
    )
    assert status == 2 and "NO REFERENCE" in out
    status, out = run_cli(
        "reproduce",
        "check",
        "--profile",
        "smoke",
        "--build",
        str(smoke_build),
        "--reference",
        str(missing),
        "--allow-missing-reference",
    )
    assert status == 0 and "only the paper's claims were checked" in out


def test_check_without_a_build_and_freeze(tmp_path, capsys):
    assert main(["reproduce", "check", "--profile", "smoke", "--build", str(tmp_path)]) == 2
    assert "run the pipeline first" in capsys.readouterr().err
    assert main(["reproduce", "freeze", "--profile", "smoke", "--build", str(tmp_path)]) == 2
    pub.record_numbers({"a": 1.0}, page="results", profile="smoke", build_dir=tmp_path)
    pub.collect("smoke", build_dir=tmp_path, machine={"commit": "abc"})
    frozen = tmp_path / "ref.json"
    assert (
        main(["reproduce", "freeze", "--profile", "smoke", "--build", str(tmp_path), "--reference", str(frozen)]) == 0
    )
    assert pub.load_published(frozen)["numbers"] == {"results/a": pub.exact(1.0)}


def test_the_shipped_references_are_readable():
    files = sorted(rp.REFERENCE_DIR.glob("published-*.json"))
    assert files, "the repository ships at least the smoke reference"
    for file in files:
        content = pub.load_published(file)
        assert file.stem == f"published-{content['profile']}"
        assert {"cpu_count", "torch_cpu_capability", "versions", "commit"} <= set(content["machine"])


# The smoke pipeline ------------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_pipeline_writes_published_numbers_and_passes_the_check(smoke_pipeline_build):
    tmp_path = smoke_pipeline_build
    content = pub.load_published(pub.published_file("smoke", tmp_path))
    pages = {key.split("/")[0] for key in content["numbers"]}
    assert {"results", "statistics", "theory", "ablation", "synthetic_surfaces", "diabetes"} <= pages
    assert (tmp_path / "executed" / "reproduction.ipynb").is_file()
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "nona.pipeline.cli",
            "reproduce",
            "check",
            "--profile",
            "smoke",
            "--build",
            str(tmp_path),
        ],
        cwd=REPO,
        env={**os.environ, "NONA_BUILD": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout[-4000:] + check.stderr[-2000:]
    assert " reproduced (" in check.stdout.splitlines()[0]
