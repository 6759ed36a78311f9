"""How to cite: BibTeX entries of the paper and of this companion, made from ``CITATION.cff``.

``CITATION.cff`` is the one source: its ``preferred-citation`` is the paper, its
root is the companion (version, release date, site and repository). cffconvert
2.0 (the latest release) writes ``@misc{YourReferenceHere, ...}`` from the root
only, so :func:`cff_bibtex` builds on its converter with real keys, a
brace-protected title and the paper's entry. ``python -m nona.paper.citation``
prints it; the release bundle ships it as ``CITATION.bib``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from nona.io.paths import REPO_ROOT

CITATION_FILE = REPO_ROOT / "CITATION.cff"
PAPER_KEY = "susman2025nona"
COMPANION_KEY = "nonacompanion"

# Accented letters of the authors' names, as classic BibTeX (8-bit) expects them.
_LATEX_ACCENTS = str.maketrans(
    {"á": r"{\'a}", "é": r"{\'e}", "í": r"{\'i}", "ó": r"{\'o}", "ú": r"{\'u}", "ñ": r"{\~n}", "ü": r"{\"u}"}
)


@functools.lru_cache(maxsize=4)
def citation_metadata(path: str | Path = CITATION_FILE) -> dict[str, Any]:
    """``CITATION.cff`` as a dict."""
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _authors(people: list[dict]) -> str:
    names = []
    for person in people:
        if "family-names" in person:
            names.append(f"{person['family-names']}, {person.get('given-names', '')}".strip(", "))
        else:  # an entity: braces keep it one name
            names.append("{" + person["name"] + "}")
    return " and ".join(names).translate(_LATEX_ACCENTS)


def _entry(kind: str, key: str, fields: dict[str, str]) -> str:
    width = max(len(name) for name in fields)
    body = ",\n".join(f"  {name.ljust(width)} = {{{value}}}" for name, value in fields.items())
    return f"@{kind}{{{key},\n{body}\n}}"


def paper_bibtex(path: str | Path = CITATION_FILE) -> str:
    """The NONA paper's BibTeX entry (a preprint: @misc), from ``preferred-citation``."""
    paper = citation_metadata(path)["preferred-citation"]
    fields = {
        "title": "{" + paper["title"] + "}",
        "author": _authors(paper["authors"]),
        "year": str(paper["year"]),
        "howpublished": "Preprint" if paper.get("status") == "preprint" else paper.get("notes", ""),
    }
    if paper.get("repository-code"):
        fields["note"] = "Code: " + paper["repository-code"].replace("_", "\\_")
    return _entry("misc", PAPER_KEY, fields)


def companion_bibtex(path: str | Path = CITATION_FILE) -> str:
    """This companion's BibTeX entry (@misc with version, URL and repository), from the root of ``CITATION.cff``."""
    cff = citation_metadata(path)
    released = str(cff["date-released"])
    fields = {
        "title": "{" + cff["title"] + "}",
        "author": _authors(cff["authors"]),
        "year": released[:4],
        "month": str(int(released[5:7])),
        "howpublished": f"Software and website, version {cff['version']}",
        "version": str(cff["version"]),
        "url": cff["url"],
        "note": "Source: " + cff["repository-code"].replace("_", "\\_"),
    }
    return _entry("misc", COMPANION_KEY, fields)


def cffconvert_bibtex(path: str | Path = CITATION_FILE) -> str:
    """cffconvert's own BibTeX of the companion, under the key ``nonacompanion`` instead of ``YourReferenceHere``."""
    from cffconvert.cli.create_citation import create_citation

    return create_citation(str(path), None).as_bibtex(reference=COMPANION_KEY)


def cff_bibtex(path: str | Path = CITATION_FILE) -> str:
    """Everything to cite, as one BibTeX file: the paper, then the companion."""
    return paper_bibtex(path) + "\n\n" + companion_bibtex(path) + "\n"


def bibtex_block(path: str | Path = CITATION_FILE):
    """A notebook display of :func:`cff_bibtex` as a highlighted ``bibtex`` block (for the home page)."""
    from IPython.display import Markdown

    return Markdown(f"```bibtex\n{cff_bibtex(path)}```\n")


if __name__ == "__main__":
    sys.stdout.write(cff_bibtex(sys.argv[1] if len(sys.argv) > 1 else CITATION_FILE))
