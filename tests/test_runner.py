"""The notebook runner: parameter checks, atomic publishing, and jupytext pairs in sync."""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import pytest

from nona.paper.figures import publish_figure
from nona.pipeline.runner import check_parameters, declared_parameters, main, run_notebook

HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  name: python3
  display_name: Python 3
  language: python
---
"""
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def write_notebook(path: Path, body: str) -> Path:
    path.write_text(HEADER + body)
    return path


def test_declared_parameters_reads_the_parameters_cell(tmp_path):
    source = write_notebook(tmp_path / "nb.md", "```{code-cell} ipython3\n:tags: [parameters]\n\nalpha = 0.05\nnames = ['a', 'b']\n```\n")
    assert declared_parameters(jupytext.read(source)) == {"alpha": 0.05, "names": ["a", "b"]}


def test_unknown_parameter_is_refused_with_the_valid_names(tmp_path):
    source = write_notebook(tmp_path / "nb.md", "```{code-cell} ipython3\n:tags: [parameters]\n\nalpha = 0.05\nseed = 1\n```\n")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) alfa .* valid parameters are: alpha, seed"):
        check_parameters(source, {"alfa": 0.1})


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    source = write_notebook(tmp_path / "nb.md", "```{code-cell} ipython3\nx = 1\n```\n")
    with pytest.raises(ValueError, match="exactly one code cell tagged 'parameters'"):
        check_parameters(source, {})


@pytest.mark.slow
def test_runner_publishes_only_clean_executions(tmp_path):
    source = write_notebook(
        tmp_path / "nb.md",
        "```{code-cell} ipython3\n:tags: [parameters]\n\nfail = False\nvalue = 1\n```\n\n"
        "```{code-cell} ipython3\nif fail:\n    raise RuntimeError('boom')\nprint(value * 2)\n```\n",
    )
    out = tmp_path / "out" / "nb.ipynb"
    run_notebook(source, out, {"value": 21})
    executed = json.loads(out.read_text())
    assert "42" in "".join(executed["cells"][-1]["outputs"][0]["text"])

    failed = tmp_path / "out" / "failed.ipynb"
    assert main([str(source), str(failed), "-p", "fail", "true"]) == 1
    assert not failed.exists()
    assert sorted(p.name for p in failed.parent.iterdir()) == ["nb.ipynb"]  # no partial files left


def test_publish_figure_writes_every_format_and_a_sidecar(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    import nona.paper.figures

    monkeypatch.setattr(nona.paper.figures, "FIGURE_DIR", tmp_path)
    monkeypatch.setenv("NONA_NOTEBOOK", "statistics")
    monkeypatch.setenv("NONA_PARAMETERS", json.dumps({"alpha": 0.05}))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    shown = publish_figure(fig, "demo-line", caption="A falling line.")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"demo-line.{e}" for e in ("json", "pdf", "png", "svg")]
    record = json.loads((tmp_path / "demo-line.json").read_text())
    assert record["notebook"] == "statistics" and record["parameters"] == {"alpha": 0.05}
    assert ":name: fig-demo-line" in shown._repr_markdown_()
    assert "@misc{nonacompanion-demo-line" in shown._repr_markdown_()
    with pytest.raises(ValueError, match="lowercase words joined by hyphens"):
        publish_figure(fig, "Demo Line", caption="x")


def test_every_notebook_source_has_a_paired_ipynb_in_sync():
    sources = sorted(NOTEBOOKS.glob("*.md"))
    sources = [s for s in sources if s.name != "README.md"]
    for source in sources:
        twin = source.with_suffix(".ipynb")
        assert twin.exists(), f"{twin} is missing: run `jupytext --to ipynb {source}`"
        md, ipynb = jupytext.read(source), jupytext.read(twin)
        md_cells = [(c.cell_type, c.source.strip()) for c in md.cells]
        ipynb_cells = [(c.cell_type, c.source.strip()) for c in ipynb.cells]
        assert md_cells == ipynb_cells, f"{twin.name} is out of sync with {source.name}: run `jupytext --to ipynb {source}`"
        assert all(not c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), f"{twin.name} must be committed without outputs"


def test_title_replaces_the_first_heading_of_the_published_copy(tmp_path):
    source = write_notebook(tmp_path / "nb.md", "# Template\n\ntext\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nx = 1\n```\n")
    notebook = jupytext.read(source)
    from nona.pipeline.runner import retitle

    retitle(notebook, "Fine-tuning: digits")
    assert notebook.cells[0].source.splitlines()[0] == "# Fine-tuning: digits"
    assert "text" in notebook.cells[0].source
    with pytest.raises(ValueError, match="no '# ' title heading"):
        retitle(jupytext.read(write_notebook(tmp_path / "bare.md", "text only\n")), "x")
