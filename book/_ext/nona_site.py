"""Sphinx extension of the companion's site: small fixes to the pages Jupyter Book generates."""

from __future__ import annotations


def drop_duplicate_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep one copy of each script: Jupyter Book 1.0.4 registers some inline scripts twice.

    The second copy of sphinx-thebe's ``const THEBE_JS_URL = ...`` is a
    SyntaxError in the browser console of every page.
    """
    seen = set()
    unique = []
    for script in context.get("script_files", []):
        # Inline scripts come with filename None or "", depending on who added them.
        key = (getattr(script, "filename", str(script)) or "", repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def use_site_identity(app, config) -> None:
    """Take the site's address and version from nona.io.site, the one place figures and the bundle read them too.

    ``NONA_SITE_URL`` (a build published elsewhere) thus reaches the canonical links of
    the pages as well as the figures' BibTeX entries.
    """
    from nona.io.site import companion_version, site_url

    config.html_baseurl = site_url()
    config.version = config.release = companion_version()
    config.html_context = {**(config.html_context or {}), "nona_version": config.release}


def author_year_label(entry) -> str:
    """The bibliography label an author-year citation matches.

    For example "Friedman, 1940", "Krogh and Vedelsby, 1995", "Susman et al., 2025a".
    """
    from pybtex.richtext import Text

    people = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [Text.from_latex(" ".join(p.prelast_names + p.last_names)).render_as("text") for p in people]
    if not last:
        who = Text.from_latex(entry.fields.get("title", entry.key)).render_as("text")
    elif len(last) == 1:
        who = last[0]
    elif len(last) == 2:
        who = f"{last[0]} and {last[1]}"
    else:
        who = f"{last[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


def _register_bibliography_style() -> None:
    """``bibtex_default_style: nona_author_year``: the alpha style with the labels of the author-year citations."""
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.alpha import Style as AlphaStyle
    from pybtex.style.labels import BaseLabelStyle

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            for entry in sorted_entries:
                yield author_year_label(entry)

    class AuthorYearStyle(AlphaStyle):
        default_label_style = AuthorYearLabels

    register_plugin("pybtex.style.formatting", "nona_author_year", AuthorYearStyle)


def setup(app):
    """Register the bibliography style and the configuration and page hooks."""
    _register_bibliography_style()
    app.connect("config-inited", use_site_identity)
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
