"""The notebook runner: parameter checks, atomic publishing, and jupytext pairs in sync."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import pytest

from nona.paper.figures import publish_figure
from nona.pipeline.runner import check_parameters, declared_parameters, main, parameter_specs, run_notebook

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
    source = write_notebook(
        tmp_path / "nb.md", "```{code-cell} ipython3\n:tags: [parameters]\n\nalpha = 0.05\nnames = ['a', 'b']\n```\n"
    )
    assert declared_parameters(jupytext.read(source)) == {"alpha": 0.05, "names": ["a", "b"]}


def test_unknown_parameter_is_refused_with_the_valid_names(tmp_path):
    source = write_notebook(
        tmp_path / "nb.md", "```{code-cell} ipython3\n:tags: [parameters]\n\nalpha = 0.05\nseed = 1\n```\n"
    )
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


def test_a_published_figure_shown_again_is_the_same_copy_without_a_second_label(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    import nona.paper.figures
    from nona.paper.figures import show_published

    monkeypatch.setattr(nona.paper.figures, "FIGURE_DIR", tmp_path)
    monkeypatch.setenv("NONA_NOTEBOOK", "results")
    with pytest.raises(FileNotFoundError, match="not published yet"):
        show_published("demo-line")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    publish_figure(fig, "demo-line", caption="A falling line.")
    files = sorted(p.name for p in tmp_path.iterdir())
    again = show_published("demo-line")._repr_markdown_()
    assert sorted(p.name for p in tmp_path.iterdir()) == files  # nothing written
    assert ":name:" not in again  # one target per figure on the site
    assert "A falling line." in again and "made by <code>results</code>" in again


def test_every_notebook_source_has_a_paired_ipynb_in_sync():
    sources = sorted(NOTEBOOKS.glob("*.md"))
    sources = [s for s in sources if s.name != "README.md"]
    for source in sources:
        twin = source.with_suffix(".ipynb")
        assert twin.exists(), f"{twin} is missing: run `jupytext --to ipynb {source}`"
        md, ipynb = jupytext.read(source), jupytext.read(twin)
        md_cells = [(c.cell_type, c.source.strip()) for c in md.cells]
        ipynb_cells = [(c.cell_type, c.source.strip()) for c in ipynb.cells]
        assert md_cells == ipynb_cells, (
            f"{twin.name} is out of sync with {source.name}: run `jupytext --to ipynb {source}`"
        )
        assert all(not c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), (
            f"{twin.name} must be committed without outputs"
        )


def test_title_replaces_the_first_heading_of_the_published_copy(tmp_path):
    source = write_notebook(
        tmp_path / "nb.md", "# Template\n\ntext\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nx = 1\n```\n"
    )
    notebook = jupytext.read(source)
    from nona.pipeline.runner import retitle

    retitle(notebook, "Fine-tuning: digits")
    assert notebook.cells[0].source.splitlines()[0] == "# Fine-tuning: digits"
    assert "text" in notebook.cells[0].source
    with pytest.raises(ValueError, match="no '# ' title heading"):
        retitle(jupytext.read(write_notebook(tmp_path / "bare.md", "text only\n")), "x")


TYPED = (
    "```{code-cell} ipython3\n:tags: [parameters]\n\n"
    "seeds: list[int] = [0, 1]  # seeds of the splits\n"
    "patience: int = 10  # epochs without improvement before stopping\n"
    "lr: float = 0.001  # learning rate\n"
    "note = 'x'\n"
    "```\n\n"
    "```{code-cell} ipython3\n:tags: [remove-cell]\n\n"
    "from nona.pipeline.runner import check_injected\n\ncheck_injected(globals(), 'typed')\n```\n\n"
    "```{code-cell} ipython3\nimport os\nprint(os.environ['NONA_NOTEBOOK'], os.environ['NONA_PARAMETERS'])\n```\n"
)


def test_type_mismatches_are_refused(tmp_path):
    source = write_notebook(tmp_path / "nb.md", TYPED)
    check_parameters(source, {"seeds": [3], "patience": 2, "lr": 1, "note": "y"})  # an int is a valid float
    for bad in ({"patience": 2.5}, {"patience": True}, {"seeds": "[0]"}, {"seeds": [0.5]}, {"lr": "fast"}, {"note": 3}):
        with pytest.raises(ValueError, match=f"parameter type mismatch for nb.md: {next(iter(bad))} must be"):
            check_parameters(source, bad)


def test_check_injected_reads_papermills_cell_and_records_provenance(monkeypatch):
    from nona.pipeline.runner import check_injected

    monkeypatch.delenv("NONA_NOTEBOOK", raising=False)
    monkeypatch.delenv("NONA_PARAMETERS", raising=False)
    defaults = "seeds: list[int] = [0, 1]  # seeds\npatience: int = 10  # epochs\n"
    namespace = {"_ih": ["", defaults, "# Parameters\npatience = 3\n"], "seeds": [0, 1], "patience": 3}
    assert check_injected(namespace, "demo") == {"patience": 3}
    assert os.environ["NONA_NOTEBOOK"] == "demo" and json.loads(os.environ["NONA_PARAMETERS"]) == {"patience": 3}
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) seed for demo"):
        check_injected({"_ih": ["", defaults, "# Parameters\nseed = 0\n"], "seed": 0}, "demo")
    with pytest.raises(ValueError, match="patience must be int, got 2.5"):
        check_injected({"_ih": ["", defaults, "# Parameters\npatience = 2.5\n"], "patience": 2.5}, "demo")
    monkeypatch.setenv("NONA_NOTEBOOK", "from-the-runner")
    assert check_injected({"_ih": ["", defaults]}, "demo") == {}  # no injected cell: nothing to check
    assert os.environ["NONA_NOTEBOOK"] == "from-the-runner"  # the runner's name is kept


@pytest.mark.slow
def test_plain_papermill_checks_parameters_and_records_them(tmp_path, monkeypatch):
    import papermill

    monkeypatch.delenv("NONA_NOTEBOOK", raising=False)
    monkeypatch.delenv("NONA_PARAMETERS", raising=False)
    source = write_notebook(tmp_path / "typed.md", TYPED)
    twin = tmp_path / "typed.ipynb"
    jupytext.write(jupytext.read(source), twin, fmt="ipynb")
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(twin), str(out), parameters={"patience": 3}, progress_bar=False, kernel_name="python3"
    )
    printed = "".join(json.loads(out.read_text())["cells"][-1]["outputs"][0]["text"])
    assert printed.strip() == 'typed {"patience": 3}'
    for bad in ({"seed": 0}, {"patience": 2.5}):
        with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter|type mismatch"):
            papermill.execute_notebook(str(twin), str(out), parameters=bad, progress_bar=False, kernel_name="python3")


def test_papermill_help_lists_types_defaults_and_meaning(tmp_path):
    from papermill.inspection import inspect_notebook

    source = write_notebook(tmp_path / "typed.md", TYPED)
    twin = tmp_path / "typed.ipynb"
    jupytext.write(jupytext.read(source), twin, fmt="ipynb")
    found = inspect_notebook(str(twin))
    assert found["patience"]["inferred_type_name"] == "int" and found["patience"]["default"] == "10"
    assert found["patience"]["help"] == "epochs without improvement before stopping"


@pytest.mark.parametrize(
    "source", sorted(p for p in NOTEBOOKS.glob("*.md") if p.name != "README.md"), ids=lambda p: p.stem
)
def test_every_notebook_documents_and_checks_its_parameters(source):
    """Each parameter has a type and a comment (papermill --help-notebook shows them).

    The cell after the parameters checks injected ones.
    """
    from papermill.inspection import inspect_notebook

    notebook = jupytext.read(source)
    specs = parameter_specs(next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", [])))
    listed = inspect_notebook(str(source.with_suffix(".ipynb")))
    for name, (default, annotation) in specs.items():
        assert annotation is not None, f"{source.name}: parameter {name} has no type annotation"
        assert listed[name]["help"], f"{source.name}: parameter {name} has no comment saying what it means"
        assert listed[name]["inferred_type_name"] != "None", f"{source.name}: papermill cannot read the type of {name}"
        check_parameters(source, {name: default})
    if specs:
        position = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
        following = next(c.source for c in notebook.cells[position + 1 :] if c.cell_type == "code")
        assert f'check_injected(globals(), "{source.stem}")' in following, (
            f"{source.name}: the cell after the parameters must check them"
        )


def test_atomic_writes_get_the_umasks_permissions(tmp_path):
    from nona.io.atomic import write_text

    previous = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_sigterm_while_writing_leaves_no_temporary(tmp_path):
    code = (
        "import os, signal, time\nfrom nona.io.atomic import atomic_path\n"
        f"with atomic_path({str(tmp_path / 'out.txt')!r}) as tmp:\n"
        "    tmp.write_text('half')\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM  # still terminated by the signal, as without the handler
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_to_the_runner_publishes_nothing_and_leaves_nothing(tmp_path):
    source = write_notebook(
        tmp_path / "nb.md",
        "```{code-cell} ipython3\n:tags: [parameters]\n\nx: int = 1  # unused\n```\n\n"
        "```{code-cell} ipython3\nimport time\ntime.sleep(120)\n```\n",
    )
    out = tmp_path / "out" / "nb.ipynb"
    runner = subprocess.Popen(
        [sys.executable, "-m", "nona.pipeline.runner", str(source), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 90
    while not (out.parent.exists() and any(out.parent.iterdir())) and time.time() < deadline:
        time.sleep(0.2)  # wait until the runner holds its temporary
    time.sleep(2)
    runner.send_signal(signal.SIGTERM)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM and "TERMINATED" in err
    assert list(out.parent.iterdir()) == []


def test_published_pages_fold_code_and_show_one_parameters_cell():
    import nbformat

    from nona.pipeline.runner import fold_code

    def notebook(injected: bool):
        cells = [
            nbformat.v4.new_markdown_cell("# Title"),
            nbformat.v4.new_code_cell("alpha = 0.05", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print(alpha)"),
            nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["remove-input"]}),
        ]
        if injected:
            cells.insert(2, nbformat.v4.new_code_cell("alpha = 0.1", metadata={"tags": ["injected-parameters"]}))
        return nbformat.v4.new_notebook(cells=cells)

    plain = notebook(injected=False)
    fold_code(plain)
    assert [c.metadata.get("tags") for c in plain.cells[1:]] == [
        ["parameters", "hide-input"],
        ["hide-input"],
        ["remove-input"],
    ]
    assert "tags" not in plain.cells[0].metadata

    run = notebook(injected=True)
    fold_code(run)
    assert [c.metadata["tags"] for c in run.cells[1:]] == [
        ["parameters", "remove-cell"],
        ["injected-parameters", "hide-input"],
        ["hide-input"],
        ["remove-input"],
    ]


def test_rerun_command_writes_apart_from_the_build(tmp_path):
    import shlex

    from nona.pipeline.runner import RERUN_DIR, rerun_box, rerun_command

    command = rerun_command(
        "notebooks/finetune.md", "finetune-digits-rotation", {"dataset": "digits-rotation", "seeds": [0, 1, 2]}
    )
    words = shlex.split(command)
    assert words[0] == f"NONA_BUILD={RERUN_DIR}"
    assert words[1:5] == ["python", "-m", "nona.pipeline.runner", "notebooks/finetune.md"]
    assert words[5] == f"{RERUN_DIR}/executed/finetune-digits-rotation.ipynb"
    assert json.loads(words[7]) == {"dataset": "digits-rotation", "seeds": [0, 1, 2]}
    box = rerun_box("notebooks/statistics.md", "statistics", {})
    assert "Re-run this page" in box.source and "--parameters-json" not in box.source


@pytest.mark.slow
def test_published_page_has_the_rerun_box_below_its_title(tmp_path, monkeypatch):
    monkeypatch.setenv("NONA_BUILD", str(tmp_path))
    source = write_notebook(
        tmp_path / "tiny.md",
        "# Tiny\n\n```{code-cell} ipython3\n:tags: [parameters]\n\n"
        "n: int = 3  # how many\n```\n\n```{code-cell} ipython3\nprint(n)\n```\n",
    )
    out = run_notebook(source, tmp_path / "executed" / "tiny.ipynb", {"n": 4}, timeout=60, rerun_parameters={"n": 5})
    cells = json.loads(out.read_text())["cells"]
    assert cells[1]["metadata"]["tags"] == ["rerun-box"]
    assert '{"n": 5}' in "".join(cells[1]["source"])
