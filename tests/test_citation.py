"""Citations resolve.

Every BibTeX entry the site publishes parses and has its type's fields; CITATION.cff agrees with the site.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from cffconvert.cli.create_citation import create_citation
from pybtex.database import parse_string

from nona.io.paths import FIGURE_DIR
from nona.io.site import companion_version, repository_url, site_url
from nona.paper.citation import cff_bibtex, cffconvert_bibtex, citation_metadata, companion_bibtex, paper_bibtex
from nona.paper.figures import bibtex_entry

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import nona_site  # noqa: E402  (the site's Sphinx extension: the bibliography's labels)

# BibTeX's required fields per entry type; for @misc, something that says where to find it.
REQUIRED = {
    "article": [("author",), ("title",), ("journal",), ("year",)],
    "inproceedings": [("author",), ("title",), ("booktitle",), ("year",)],
    "phdthesis": [("author",), ("title",), ("school",), ("year",)],
    "book": [("author", "editor"), ("title",), ("publisher",), ("year",)],
    "misc": [("author",), ("title",), ("year",), ("howpublished", "url", "doi")],
}


def check_entries(bibtex: str, where: str) -> dict:
    """Parse ``bibtex``; fail on a missing required field, an unknown type or a year that is not a year."""
    entries = parse_string(bibtex, "bibtex").entries
    assert entries, f"{where}: no BibTeX entry"
    for key, entry in entries.items():
        assert key != "YourReferenceHere", f"{where}: placeholder key"
        assert entry.type in REQUIRED, f"{where}: {key} is @{entry.type}, which BibTeX styles do not know"
        present = set(entry.fields) | set(entry.persons)
        for alternatives in REQUIRED[entry.type]:
            assert present & set(alternatives), f"{where}: @{entry.type}{{{key}}} needs {' or '.join(alternatives)}"
        assert re.fullmatch(r"\d{4}[a-z]?", entry.fields["year"]), f"{where}: {key} has year {entry.fields['year']!r}"
        assert "$" not in entry.fields["title"].replace(r"\$", ""), f"{where}: {key}'s title has raw math"
    return entries


def test_citation_cff_is_valid_and_agrees_with_the_site():
    citation = create_citation(str(ROOT / "CITATION.cff"), None)
    citation.validate()  # raises on a schema violation
    cff = citation_metadata()
    assert cff["version"] == companion_version()
    assert cff["url"] == site_url() and cff["repository-code"] == repository_url()
    assert str(cff["date-released"])
    paper = cff["preferred-citation"]
    assert paper["title"] == "Nearness of Neighbors Attention for Regression in Supervised Fine-Tuning"
    assert [a["family-names"] for a in paper["authors"]] == ["Susman", "Suárez-Fariñas", "Colonel"]


def test_cff_conversions_are_usable_bibtex():
    entries = check_entries(cff_bibtex(), "CITATION.cff (nona.paper.citation)")
    assert list(entries) == ["susman2025nona", "nonacompanion"]
    companion = entries["nonacompanion"]
    assert companion.fields["version"] == companion_version() and companion.fields["url"] == site_url()
    assert entries["susman2025nona"].fields["title"].startswith("{")  # brace-protected
    converted = check_entries(cffconvert_bibtex(), "CITATION.cff (cffconvert)")
    assert converted["nonacompanion"].fields["url"] == site_url()


def test_references_bib_entries_are_complete():
    entries = check_entries((ROOT / "book" / "references.bib").read_text(), "book/references.bib")
    assert entries["susman2025nona"].type == "misc"  # a preprint: no venue to name


def test_references_bib_titles_keep_their_capitals():
    """Words with inner capitals or all capitals (SoftStep, NONA, MedSegBench) survive the style's sentence case."""
    from pybtex.plugin import find_plugin

    nona_site._register_bibliography_style()
    data = parse_string((ROOT / "book" / "references.bib").read_text(), "bibtex")
    style = find_plugin("pybtex.style.formatting", "nona_author_year")()
    rendered = {e.key: e.text.render_as("text") for e in style.format_entries(data.entries.values())}
    for key, entry in data.entries.items():
        raw = re.sub(r"\\.|[{}]", "", entry.fields["title"])
        for word in re.findall(r"[A-Za-z]\w*", raw):
            if any(c.isupper() for c in word[1:]) or (len(word) > 1 and word.isupper()):
                assert word in rendered[key], f"{key}: {word!r} is case-folded in {rendered[key]!r}"
        assert "$" not in rendered[key] and "\\" not in rendered[key], f"{key} renders raw LaTeX: {rendered[key]!r}"


def test_same_author_year_citations_are_told_apart():
    data = parse_string((ROOT / "book" / "references.bib").read_text(), "bibtex")
    labels = [nona_site.author_year_label(entry) for entry in data.entries.values()]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    assert not repeated, f"these author-year citations are ambiguous: {repeated}"
    assert nona_site.author_year_label(data.entries["susman2025nona"]) == "Susman et al., 2025a"
    assert nona_site.author_year_label(data.entries["susman2025softstep"]) == "Susman et al., 2025b"


def test_paper_and_companion_entries():
    paper = check_entries(paper_bibtex(), "paper entry")["susman2025nona"]
    assert paper.fields["howpublished"] == "Preprint" and "nona\\_anon" in paper.fields["note"]
    companion = check_entries(companion_bibtex(), "companion entry")["nonacompanion"]
    assert companion.fields["version"] == companion_version()


def test_home_page_entries_are_complete():
    home = (ROOT / "notebooks" / "home.md").read_text()
    blocks = re.findall(r"```bibtex\n(.*?)```", home, flags=re.S)
    if "bibtex_block()" in home:
        blocks.append(cff_bibtex())
    assert blocks, "the home page shows no BibTeX"
    for block in blocks:
        check_entries(block, "notebooks/home.md")


def _figure_records() -> list[dict]:
    built = [json.loads(p.read_text()) for p in sorted(FIGURE_DIR.glob("*.json"))]
    example = {
        "id": "cd-diagram-paper",
        "caption": "Critical difference diagram of 100% of $k$_x. More text.",
        "notebook": "statistics",
        "parameters": {"alpha": 0.01},
        "commit": "0123456789abcdef-dirty",
        "created": "2026-11-22T10:00:00+00:00",
    }
    return built + [example, {**example, "id": "interactive", "notebook": None, "parameters": {}}]


@pytest.mark.parametrize("record", _figure_records(), ids=lambda r: r["id"])
def test_every_figure_bibtex_has_url_version_and_commit(record):
    entry = check_entries(bibtex_entry(record), f"figure {record['id']}")[f"nonacompanion-{record['id']}"]
    assert entry.fields["url"].startswith(site_url())
    if record.get("notebook"):
        assert entry.fields["url"].endswith(f"build/executed/{record['notebook']}.html#fig-{record['id']}")
    assert entry.fields["version"] == record.get("version", companion_version())
    assert record["commit"] in entry.fields["note"] and "None" not in entry.fields["note"]
    assert entry.fields["title"].startswith("{")
