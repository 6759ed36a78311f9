"""Publish a figure: SVG, PDF and PNG files, a JSON sidecar, and a numbered, labelled figure in the page.

Every figure of the book goes through :func:`publish_figure`, which writes
``build/site/figures/<id>.{svg,pdf,png,json}``. The site build copies
``build/site`` into the website's root, so each figure has stable download
URLs ``figures/<id>.svg`` etc. The notebook output is a MyST ``figure``
directive, so the figure gets a number, a caption and the label ``fig-<id>``
that any page can reference with ``{numref}`fig-<id>```.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.figure

from nona.io.atomic import atomic_path, write_json
from nona.io.paths import FIGURE_DIR
from nona.io.provenance import current_notebook, git_commit, now
from nona.io.site import companion_version, page_url, site_url

FORMATS = ("svg", "pdf", "png")
_ID_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


_BIBTEX_SPECIAL = str.maketrans(
    {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": "(", "}": ")", "\\": "/"}
)


def bibtex_text(text: str) -> str:
    """``text`` with the characters that BibTeX/LaTeX would interpret escaped (braces become parentheses)."""
    return text.translate(_BIBTEX_SPECIAL)


def figure_url(record: dict) -> str:
    """Where a published figure is seen on the site: its page and anchor, or its SVG when no notebook made it."""
    if record.get("notebook"):
        return page_url(record["notebook"], f"fig-{record['id']}")
    return f"{site_url()}figures/{record['id']}.svg"


def bibtex_entry(record: dict, site_title: str = "NONA companion") -> str:
    """A BibTeX entry (@misc) that cites one published figure of this build.

    The entry gives the figure's URL, the companion's version and commit.
    """
    title = bibtex_text(record["caption"].split(". ")[0].rstrip("."))
    version = record.get("version") or companion_version()
    url = record.get("url") or figure_url(record)
    parameters = ", ".join(f"{k}={v!r}" for k, v in sorted((record.get("parameters") or {}).items())) or "its defaults"
    made_by = (
        f"by notebook {record['notebook']} with {parameters}" if record.get("notebook") else "in an interactive session"
    )
    files = f"{site_url()}figures/{record['id']}.svg (also .pdf, .png)"
    # Double braces keep the title's capitals; howpublished and url let a reader find the figure.
    return (
        f"@misc{{nonacompanion-{record['id']},\n"
        f"  title        = {{{{{title}}}}},\n"
        f"  author       = {{{{nona-companion contributors}}}},\n"
        f"  year         = {{{record['created'][:4]}}},\n"
        f"  howpublished = {{{bibtex_text(site_title)}, version {version}, figure {record['id']}}},\n"
        f"  url          = {{{url}}},\n"
        f"  version      = {{{version}}},\n"
        f"  note         = {{Made {bibtex_text(made_by)} at commit {record['commit']}; "
        f"files: {bibtex_text(files)}}}\n}}"
    )


class FigureOutput:
    """Notebook display of a published figure, rendered by MyST as a numbered figure with downloads."""

    def __init__(self, fig_id: str, caption: str, record: dict, labelled: bool = True) -> None:
        self.fig_id = fig_id
        self.caption = caption
        self.record = record
        # Only the page that published a figure names it: a second page showing it must not
        # define the same target again.
        self.labelled = labelled

    def _repr_markdown_(self) -> str:
        # Executed notebooks live in build/executed/, figures in build/site/figures/;
        # the site serves build/site at its root, executed pages at build/executed/.
        image = f"../site/figures/{self.fig_id}.svg"
        links = " · ".join(f'<a href="../../figures/{self.fig_id}.{ext}" download>{ext.upper()}</a>' for ext in FORMATS)
        made_by = self.record.get("notebook") or "an interactive session"
        return (
            f"```{{figure}} {image}\n"
            + (f":name: fig-{self.fig_id}\n" if self.labelled else "")
            + f":alt: {self.caption}\n\n"
            f"{self.caption}\n\n"
            f'<span class="nona-figure-meta">Download: {links} · made by <code>{made_by}</code> '
            f"at commit <code>{self.record['commit'][:12]}</code></span>\n```\n\n"
            f"````{{dropdown}} Cite this figure (BibTeX)\n```bibtex\n{bibtex_entry(self.record)}\n```\n````\n"
        )


def publish_figure(fig: matplotlib.figure.Figure, fig_id: str, caption: str) -> FigureOutput:
    """Save ``fig`` as SVG/PDF/PNG plus a JSON sidecar under ``build/site/figures`` and return its display."""
    if not _ID_PATTERN.match(fig_id):
        raise ValueError(f"figure id {fig_id!r} must be lowercase words joined by hyphens, e.g. 'cd-diagram-paper'")
    if not caption.strip():
        raise ValueError(f"figure {fig_id!r} needs a caption")
    for ext in FORMATS:
        with atomic_path(FIGURE_DIR / f"{fig_id}.{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=200 if ext == "png" else None, bbox_inches="tight")
    notebook, parameters = current_notebook()
    record = {
        "id": fig_id,
        "caption": caption,
        "notebook": notebook,
        "parameters": parameters,
        "commit": git_commit(),
        "version": companion_version(),
        "created": now(),
        "files": {ext: f"figures/{fig_id}.{ext}" for ext in FORMATS},
    }
    record["url"] = figure_url(record)
    write_json(FIGURE_DIR / f"{fig_id}.json", record)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return FigureOutput(fig_id, caption, record)


def show_published(fig_id: str) -> FigureOutput:
    """The display of a figure that another page already published, read from its sidecar.

    For a page that shows the same figure again: the gallery keeps one copy, and the figure
    still downloads and cites as the one its own page made.
    """
    import json

    sidecar = FIGURE_DIR / f"{fig_id}.json"
    if not sidecar.is_file():
        raise FileNotFoundError(
            f"figure {fig_id!r} is not published yet ({sidecar.name} is missing); run its page first"
        )
    record = json.loads(sidecar.read_text())
    return FigureOutput(fig_id, record["caption"], record, labelled=False)


def published_figures(directory: Path | None = None) -> list[dict]:
    """The sidecar records of every published figure, sorted by id (``directory``: the build's figures by default)."""
    import json

    directory = FIGURE_DIR if directory is None else Path(directory)
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
