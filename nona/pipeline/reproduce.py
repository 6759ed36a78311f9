"""Did a re-run reproduce the book? Compare a build's published numbers with the shipped reference and the paper.

A build writes every number its pages publish to ``build/results/<profile>/published.json``
(:mod:`nona.paper.published`). The repository ships the same file from a clean build of
the companion as ``reference/published-<profile>.json`` (``nona reproduce freeze``).
:func:`compare` returns a :class:`Report` with two kinds of rows:

* **paper claims**: this build against the paper (NONA below Dense on each dataset, the
  median reduction, the ranks, Figure 5's p-values, Demšar's worked example, the theory
  identities);
* **reproduction**: every published number of this build against the reference build's.

Tolerance rules (stated on the Reproduction page and by ``nona reproduce check``):

* ``exact``: computations on fixed data. Equal to the last printed digit where the number
  is printed to a number of decimals, otherwise within a relative 1e-9 (or the stated
  relative tolerance for float32 computations). A failure is an error: the command exits 1.
* ``statistical``: trained results. The difference of the two means must be within
  2 standard errors of the difference, ``2 sqrt(se_a² + se_b²)``, each standard error from
  its build's seed spread. A mismatch is reported, not an error.
* ``approximate``: single trained runs without a seed spread: within the stated relative
  tolerance. Reported, not an error.
* ``selection``: a choice among candidates. The same choice is ✓; another choice is
  "selection differs", with this build's margin between its choice and the reference's,
  and whether that margin is within 2 standard errors ("within noise"). Reported, not an error.

Paper claims on the paper's own printed numbers (Figure 5, Demšar, the theory identities, the
32.2% recomputed from Table 1) are exact; claims on this build's trained results
(NONA below Dense, the median reduction, the ranks) are statistical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nona.io.paths import REPO_ROOT

PASS, FAIL, DIFFERS, NA = "✓", "✗", "selection differs", "n/a"
REFERENCE_DIR = REPO_ROOT / "reference"
DENSE_METHODS = ("Dense", "Dense + k-NN")
NONA_METHODS = ("NONA", "NONA + k-NN")
# The theory identities the paper (or, for line 4, the companion's erratum) states, with the expected verdict.
THEORY_CLAIMS = {
    "line2-3-simplex": ("line 2 → 3 of the loss expansion (weights sum to 1)", True),
    "line3-4-printed": ("line 3 → 4 as printed is NOT an identity (erratum: the factor 2)", False),
    "line3-4-corrected": ("line 3 → 4 corrected (the companion's form)", True),
    "ambiguity-simplex": ("attraction − spread decomposition (weights sum to 1)", True),
}
THEORY_STEPS = {
    "triplet/T(p_ij) expands as printed": "triplet: T(p_ij) expands as printed",
    "triplet/p_ij* as printed": "triplet: p_ij* as printed",
    "triplet/p_ik* = R - p_ij* as printed": "triplet: p_ik* = R − p_ij* as printed",
    "triplet/p_ij*/p_ik* as printed": "triplet: p_ij*/p_ik* as printed",
    "orderings/all hold": "all six label orderings behave as Section 4.1 says",
}
RULES = {
    "exact": "computation on fixed data: equal to the last printed digit, or within the stated relative tolerance; "
    "a failure is an error",
    "statistical": "trained result: difference within 2 standard errors of the difference, "
    "2·sqrt(se_this² + se_ref²), each from its build's seed spread; reported, not an error",
    "approximate": "single trained run without a seed spread: within the stated relative tolerance; "
    "reported, not an error",
    "selection": "choice among candidates: the same choice, else 'selection differs' with this build's margin "
    "(within noise when below 2 standard errors); reported, not an error",
}


def reference_path(profile: str) -> Path:
    """The reference file the repository ships for ``profile``."""
    return REFERENCE_DIR / f"published-{profile}.json"


@dataclass
class Row:
    """One row of the report: a paper claim or a reproduced number."""

    section: str  # "claim" or "reproduction"
    item: str
    reference: str
    value: str
    tolerance: str
    verdict: str
    kind: str = "exact"
    note: str = ""

    @property
    def counted(self) -> bool:
        return self.verdict != NA

    @property
    def error(self) -> bool:
        """An exact item that failed (makes ``nona reproduce check`` exit non-zero)."""
        return self.kind == "exact" and self.verdict == FAIL


@dataclass
class Report:
    """Every row, and what they add up to."""

    profile: str
    rows: list[Row] = field(default_factory=list)
    reference_missing: bool = False
    reference_machine: dict[str, Any] | None = None
    build_machine: dict[str, Any] | None = None

    @property
    def counted(self) -> list[Row]:
        return [r for r in self.rows if r.counted]

    @property
    def n_reproduced(self) -> int:
        return sum(r.verdict == PASS for r in self.counted)

    @property
    def errors(self) -> list[Row]:
        return [r for r in self.rows if r.error]

    def summary(self) -> str:
        """The top line: "N of M reproduced", and what the others are."""
        rows = self.counted
        failed = [r for r in rows if r.verdict == FAIL]
        parts = [
            f"{sum(r.error for r in failed)} exact ✗",
            f"{sum(not r.error for r in failed)} statistical ✗",
            f"{sum(r.verdict == DIFFERS for r in rows)} selection differs",
        ]
        line = f"{self.n_reproduced} of {len(rows)} reproduced ({', '.join(parts)})"
        if self.reference_missing:
            line += f"; NO REFERENCE for the {self.profile} profile: only the paper's claims were checked"
        return line


# Formatting ------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int | None = None) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if digits is not None:
            return f"{value:.{digits}f}"
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return str(value)


def format_number(number: dict[str, Any] | None) -> str:
    """A number as the report shows it (with ± its standard error for statistical ones)."""
    if number is None:
        return "missing"
    value = number.get("value")
    if number["kind"] == "statistical" and _finite(number.get("se")) and isinstance(value, (int, float)):
        return f"{value:.4g} ± {number['se']:.2g}"
    return _fmt(value, number.get("digits"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Comparison rules ------------------------------------------------------------------------------


def exact_agrees(value: Any, reference: Any, digits: int | None = None, rel: float = 1e-9) -> bool:
    """Equal to the last printed digit (``digits`` decimals), else within a relative ``rel`` (bools, strings: equal)."""
    if isinstance(value, bool) or isinstance(reference, bool) or not (_finite(value) and _finite(reference)):
        return value == reference
    if digits is not None:
        return round(value, digits) == round(reference, digits)
    return value == reference or abs(value - reference) <= rel * max(abs(value), abs(reference))


def statistical_tolerance(se_a: Any, se_b: Any) -> float:
    """2 standard errors of a difference of two independent means (a missing se counts as 0)."""
    return 2 * math.hypot(se_a if _finite(se_a) else 0.0, se_b if _finite(se_b) else 0.0)


def compare_number(key: str, reference: dict[str, Any] | None, build: dict[str, Any] | None) -> Row:
    """One reproduction row: this build's number against the reference build's, by the reference's rule."""
    spec = reference or build
    kind = spec["kind"]
    label = spec.get("label") or key
    item = key if label == key else f"{key}: {label}"
    row = Row("reproduction", item, format_number(reference), format_number(build), "", NA, kind)
    if reference is None:
        row.tolerance, row.note = "—", "not in the reference build (new number)"
        return row
    if build is None:
        row.tolerance, row.verdict, row.note = RULE_SHORT[kind](reference), FAIL, "missing from this build"
        return row
    a, b = build.get("value"), reference.get("value")
    if kind == "exact":
        row.tolerance = RULE_SHORT["exact"](reference)
        row.verdict = PASS if exact_agrees(a, b, reference.get("digits"), reference.get("rel", 1e-9)) else FAIL
    elif kind == "statistical":
        tol = statistical_tolerance(build.get("se"), reference.get("se"))
        row.tolerance = f"|Δ| ≤ 2 SE = {tol:.2g}"
        if not (_finite(a) and _finite(b)):
            row.verdict = PASS if a == b else FAIL
        else:
            row.verdict = PASS if abs(a - b) <= tol else FAIL
            row.note = f"Δ = {a - b:+.2g}" + (f" ({abs(a - b) / (tol / 2):.1f} SE)" if tol > 0 else "")
    elif kind == "approximate":
        rel = reference.get("rel", 0.25)
        row.tolerance = f"relative {rel:g}"
        if not (_finite(a) and _finite(b)):
            row.verdict = PASS if a == b else FAIL
        else:
            row.verdict = PASS if abs(a - b) <= rel * abs(b) else FAIL
            row.note = f"Δ = {100 * (a - b) / b:+.1f}%" if b else ""
    elif kind == "selection":
        row.tolerance = "same choice"
        if a == b:
            row.verdict = PASS
            if _finite(build.get("margin")):
                row.note = (
                    f"margin {build['margin']:.3g} over {build.get('runner_up')}"
                    f"{_noise_note(build['margin'], build.get('noise'))}"
                )
        else:
            row.verdict = DIFFERS
            row.note = selection_margin(build, str(b))
    else:
        raise ValueError(f"unknown kind {kind!r} of {key}")
    return row


def _noise_note(margin: float, noise: Any) -> str:
    if not _finite(noise) or noise <= 0:
        return ""
    return f" ({'within' if margin <= 2 * noise else 'outside'} noise: 2 SE = {2 * noise:.2g})"


def selection_margin(build: dict[str, Any], reference_choice: str) -> str:
    """This build's margin between its choice and the reference's choice (scores: lower is better)."""
    scores, se = build.get("scores", {}), build.get("se", {})
    mine, theirs = scores.get(build["value"]), scores.get(reference_choice)
    if not (_finite(mine) and _finite(theirs)):
        return f"the reference chose {reference_choice}, which this build did not score"
    margin = theirs - mine
    noise = math.hypot(se.get(build["value"]) or 0.0, se.get(reference_choice) or 0.0)
    return f"reference chose {reference_choice}; this build's margin over it {margin:.3g}{_noise_note(margin, noise)}"


RULE_SHORT = {
    "exact": lambda n: (
        f"last printed digit ({n['digits']} decimals)"
        if n.get("digits") is not None
        else "equal"
        if isinstance(n.get("value"), (bool, str))
        else f"relative {n.get('rel', 1e-9):g}"
    ),
    "statistical": lambda n: "|Δ| ≤ 2 SE",
    "approximate": lambda n: f"relative {n.get('rel', 0.25):g}",
    "selection": lambda n: "same choice",
}


# Paper claims ----------------------------------------------------------------------------------


def _get(numbers: dict[str, Any], key: str) -> Any:
    number = numbers.get(key)
    return None if number is None else number.get("value")


def _claim(item, reference, value, tolerance, ok, kind, note="") -> Row:
    verdict = NA if ok is None else PASS if ok else FAIL
    return Row("claim", item, reference, value, tolerance, verdict, kind, note)


def paper_claims(numbers: dict[str, Any]) -> list[Row]:
    """The paper's claims, checked on this build's numbers (``numbers``: the ``numbers`` of a published file)."""
    from nona.paper.reference import demsar2006_example, paper_figure5_pvalues, paper_table1

    rows: list[Row] = []
    paper = paper_table1()
    paper_wide = paper.pivot(index="dataset", columns="method", values="mean")
    n_below = int((paper_wide["NONA"] < paper_wide["Dense"]).sum())
    # NONA below Dense, per dataset of this build.
    datasets = sorted({k.split("/")[2] for k in numbers if k.startswith("results/table1/")})
    for dataset in datasets:
        nona, dense = numbers.get(f"results/table1/{dataset}/NONA"), numbers.get(f"results/table1/{dataset}/Dense")
        if nona is None or dense is None:
            continue
        difference = nona["value"] - dense["value"]
        tol = statistical_tolerance(nona.get("se"), dense.get("se"))
        beyond = "beyond" if abs(difference) > tol else "within"
        rows.append(
            _claim(
                f"NONA below Dense on {dataset}",
                f"paper: NONA below Dense on {n_below} of {len(paper_wide)} datasets",
                f"NONA {format_number(nona)} vs Dense {format_number(dense)} (test MSE ×10³)",
                "NONA mean < Dense mean",
                difference < 0,
                "statistical",
                f"Δ = {difference:+.3g}, {beyond} 2 SE ({tol:.2g})",
            )
        )
    # The median reduction.
    printed = _get(numbers, "results/paper-median-reduction")
    rows.append(
        _claim(
            "the paper's median Dense → NONA reduction, recomputed from its printed Table 1",
            "32.2% (printed)",
            _fmt(printed, 1) + ("%" if printed is not None else ""),
            "last printed digit (1 decimal)",
            None if printed is None else exact_agrees(printed, 32.2, 1),
            "exact",
        )
    )
    reduction = numbers.get("results/median-reduction")
    rows.append(
        _claim(
            "median Dense → NONA reduction in this build is positive",
            "paper: 32.2% over its ten datasets",
            "—" if reduction is None else f"{format_number(reduction)}%",
            "> 0 (datasets and training differ from the paper's)",
            None if reduction is None else reduction["value"] > 0,
            "statistical",
        )
    )
    # Ranks: both NONA methods above both dense methods.
    for page, who, kind in (
        ("statistics", "the paper's Table 1 (printed ties resolved)", "exact"),
        ("results", "this build's Table 1", "statistical"),
    ):
        ranks = {m: _get(numbers, f"{page}/average-rank/{m}") for m in DENSE_METHODS + NONA_METHODS}
        known = all(_finite(r) for r in ranks.values())
        ok = known and max(ranks[m] for m in NONA_METHODS) < min(ranks[m] for m in DENSE_METHODS)
        rows.append(
            _claim(
                f"NONA and NONA + k-NN ranked above both dense methods, on {who}",
                "paper: average ranks NONA, NONA + k-NN < Dense, Dense + k-NN",
                ", ".join(f"{m} {r:.3g}" for m, r in ranks.items()) if known else "not computed in this build",
                "ordering of the average ranks",
                ok if known else None,
                kind,
            )
        )
    # Figure 5's six p-values.
    for a, b, printed_p in paper_figure5_pvalues().itertuples(index=False):
        value = _get(numbers, f"statistics/figure5/{a} vs {b}")
        rows.append(
            _claim(
                f"Figure 5 p-value, {a} vs {b}",
                f"{printed_p:.4f} (printed)",
                _fmt(value, 4) if value is not None else "missing",
                "last printed digit (4 decimals)",
                exact_agrees(value, printed_p, 4) if value is not None else False,
                "exact",
            )
        )
    # Demšar's worked example.
    example = demsar2006_example()
    printed_demsar = {
        "chi2": (example.chi2, 2),
        "iman-davenport": (example.iman_davenport, 2),
        "cd-0.05": (example.cd_nemenyi[0.05], 2),
        "cd-0.10": (example.cd_nemenyi[0.10], 2),
        **{f"average-rank/{m}": (r, 3) for m, r in example.average_ranks.items()},
    }
    for name, (printed_value, digits) in printed_demsar.items():
        value = _get(numbers, f"statistics/demsar/{name}")
        rows.append(
            _claim(
                f"Demšar (2006) worked example: {name}",
                f"{printed_value:.{digits}f} (printed)",
                _fmt(value, digits) if value is not None else "missing",
                f"last printed digit ({digits} decimals)",
                exact_agrees(value, printed_value, digits) if value is not None else False,
                "exact",
            )
        )
    # The theory identities.
    theory = {k[len("theory/identity/") :]: v for k, v in numbers.items() if k.startswith("theory/identity/")}
    for name, (text, expected) in THEORY_CLAIMS.items():
        found = {k: v["value"] for k, v in theory.items() if k.split("/n=")[0] == name}
        value = ", ".join(f"n={k.split('/n=')[1]}: {_fmt(v)}" for k, v in sorted(found.items())) if found else "missing"
        rows.append(
            _claim(
                f"theory: {text}",
                f"{'identity' if expected else 'not an identity'} for every n",
                value,
                "exact (symbolic)",
                bool(found) and all(v is expected for v in found.values()),
                "exact",
            )
        )
    for key, text in THEORY_STEPS.items():
        value = _get(numbers, f"theory/{key}")
        rows.append(
            _claim(
                f"theory: {text}",
                "holds",
                _fmt(value) if value is not None else "missing",
                "exact (symbolic)",
                value is True,
                "exact",
            )
        )
    return rows


def compare(build: dict[str, Any], reference: dict[str, Any] | None) -> Report:
    """The report of a build (a published file's content) against a reference (None: claims only)."""
    report = Report(
        build["profile"],
        reference_missing=reference is None,
        build_machine=build.get("machine"),
        reference_machine=None if reference is None else reference.get("machine"),
    )
    numbers = build["numbers"]
    report.rows += paper_claims(numbers)
    if reference is not None:
        keys = list(reference["numbers"]) + [k for k in numbers if k not in reference["numbers"]]
        report.rows += [compare_number(k, reference["numbers"].get(k), numbers.get(k)) for k in keys]
    return report


# Rendering -------------------------------------------------------------------------------------

COLUMNS = ("item", "reference", "this build", "tolerance", "verdict", "note")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.item, row.reference, row.value, row.tolerance, row.verdict, row.note)


def to_markdown(report: Report, section: str) -> str:
    """One section's rows as a Markdown table."""
    rows = [r for r in report.rows if r.section == section]
    escape = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(escape(c) for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def to_text(report: Report) -> str:
    """The report for a terminal: the summary line, then both sections as aligned columns."""
    out = [report.summary(), ""]
    for section, title in (
        ("claim", "Paper claims (this build against the paper)"),
        ("reproduction", "Reproduction (this build against the reference build)"),
    ):
        rows = [r for r in report.rows if r.section == section]
        if not rows:
            continue
        cells = [COLUMNS] + [_cells(r) for r in rows]
        # Columns up to a width (the item 72 characters, the others 44), the note in full.
        widths = [min(72 if i == 0 else 44, max(len(c[i]) for c in cells)) for i in range(len(COLUMNS) - 1)]
        out += [title, ""]
        for c in cells:
            out.append("  ".join(str(x)[:w].ljust(w) for x, w in zip(c, widths)) + "  " + c[-1])
        out.append("")
    out.append("Rules: " + "; ".join(f"{k}: {v}" for k, v in RULES.items()))
    return "\n".join(out)


# Command line (``nona reproduce check | freeze``) --------------------------------------------------

MISSING_REFERENCE_EXIT = 2


def check(
    profile: str,
    build_dir: str | Path | None = None,
    reference: str | Path | None = None,
    allow_missing_reference: bool = False,
    out=None,
) -> int:
    """``nona reproduce check``: print the report; exit status 0, 1 (an exact item failed) or 2 (nothing to compare)."""
    import sys

    from nona.paper.published import load_published, published_file

    out = out or sys.stdout
    path = published_file(profile, build_dir)
    try:
        build = load_published(path)
    except FileNotFoundError:
        print(
            f"error: this build has no published numbers ({path}); "
            f"run the pipeline first (make book PROFILE={profile})",
            file=sys.stderr,
        )
        return MISSING_REFERENCE_EXIT
    reference_file = Path(reference) if reference else reference_path(profile)
    try:
        reference_content = load_published(reference_file)
    except FileNotFoundError:
        reference_content = None
        print(
            f"NO REFERENCE: {reference_file} does not exist, so the {profile} build cannot be compared with the "
            "companion's reference build. Freeze one from a clean build with "
            f"`nona reproduce freeze --profile {profile}`.",
            file=out,
        )
    report = compare(build, reference_content)
    print(to_text(report), file=out)
    if report.errors:
        print(
            f"\nFAILED: {len(report.errors)} exact item(s) differ: " + "; ".join(r.item for r in report.errors),
            file=out,
        )
        return 1
    if reference_content is None and not allow_missing_reference:
        print(
            f"\nFAILED: no reference for the {profile} profile, so nothing was reproduced against it "
            "(pass --allow-missing-reference to check the paper's claims only).",
            file=out,
        )
        return MISSING_REFERENCE_EXIT
    return 0


def freeze(profile: str, build_dir: str | Path | None = None, reference: str | Path | None = None, out=None) -> int:
    """``nona reproduce freeze``: make this build's published numbers the shipped reference of ``profile``."""
    import shutil
    import sys

    from nona.paper.published import load_published, published_file

    out = out or sys.stdout
    path = published_file(profile, build_dir)
    try:
        content = load_published(path)
    except FileNotFoundError:
        print(f"error: {path} does not exist; run the pipeline first (make book PROFILE={profile})", file=sys.stderr)
        return MISSING_REFERENCE_EXIT
    if content["profile"] != profile:
        print(f"error: {path} is of profile {content['profile']!r}, not {profile!r}", file=sys.stderr)
        return MISSING_REFERENCE_EXIT
    target = Path(reference) if reference else reference_path(profile)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    commit = (content.get("machine") or {}).get("commit", "unknown")
    print(f"froze {len(content['numbers'])} numbers of the {profile} build (commit {commit}) into {target}", file=out)
    if str(commit).endswith("-dirty") or commit == "unknown":
        print("warning: the build was made from a tree with uncommitted changes; freeze from a clean build", file=out)
    return 0
