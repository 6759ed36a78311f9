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


def setup(app):
    """Register the page hooks."""
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
