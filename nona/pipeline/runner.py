"""Run one notebook of the book: jupytext source -> papermill execution -> published .ipynb.

Every Snakemake rule calls this. It refuses unknown parameter names, and it
never publishes a notebook that raised: the target appears (atomically) only
after a clean execution.

Usage: ``python -m nona.pipeline.runner notebooks/statistics.md build/executed/statistics.ipynb -p alpha 0.05``
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from nona.io.atomic import atomic_path
from nona.io.paths import REPO_ROOT
from nona.io.provenance import NOTEBOOK_ENV, PARAMETERS_ENV


def load_source(source: str | Path):
    """Read a jupytext notebook source (MyST .md or .ipynb) as an nbformat notebook."""
    import jupytext

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"notebook source {source} does not exist")
    return jupytext.read(source)


def declared_parameters(notebook) -> dict[str, Any]:
    """The names and default values assigned in the cell tagged ``parameters``."""
    cells = [c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a runnable notebook needs exactly one code cell tagged 'parameters'; found {len(cells)}")
    defaults: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    defaults[target.id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            defaults[node.target.id] = ast.literal_eval(node.value)
    return defaults


def check_parameters(source: str | Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """Raise ValueError for a parameter name the notebook does not declare; return the declared defaults."""
    defaults = declared_parameters(load_source(source))
    unknown = sorted(set(parameters) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {Path(source).name}; "
            f"valid parameters are: {', '.join(sorted(defaults))}"
        )
    return defaults


def retitle(notebook, title: str) -> None:
    """Replace the notebook's first ``# `` heading, so that copies run with other parameters get their own page titles."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            lines = cell.source.lstrip().splitlines()
            cell.source = "\n".join([f"# {title}"] + lines[1:])
            return
    raise ValueError("the notebook has no '# ' title heading to replace")


def run_notebook(
    source: str | Path,
    output: str | Path,
    parameters: dict[str, Any] | None = None,
    timeout: int = 3600,
    title: str | None = None,
) -> Path:
    """Execute ``source`` with ``parameters`` and publish it at ``output``; raises if any cell fails.

    ``title`` replaces the page title of the published copy.
    """
    import jupytext
    import papermill

    parameters = dict(parameters or {})
    source, output = Path(source), Path(output)
    check_parameters(source, parameters)
    notebook = load_source(source)
    if title:
        retitle(notebook, title)
    notebook.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    env_before = {k: os.environ.get(k) for k in (NOTEBOOK_ENV, PARAMETERS_ENV)}
    os.environ[NOTEBOOK_ENV] = output.stem
    os.environ[PARAMETERS_ENV] = json.dumps(parameters, sort_keys=True)
    started = time.time()
    try:
        with tempfile.TemporaryDirectory() as scratch, atomic_path(output) as executed:
            converted = Path(scratch) / source.with_suffix(".ipynb").name
            jupytext.write(notebook, converted, fmt="ipynb")
            papermill.execute_notebook(
                str(converted),
                str(executed),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(REPO_ROOT),
                request_save_on_cell_execute=False,
                progress_bar=False,
                execution_timeout=timeout,
            )
    finally:
        for key, value in env_before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    print(f"[nona.pipeline.runner] {source} -> {output} in {time.time() - started:.1f} s", file=sys.stderr)
    return output


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Execute a book notebook with papermill and publish it atomically.")
    parser.add_argument("source", help="jupytext source, e.g. notebooks/statistics.md")
    parser.add_argument("output", help="executed notebook to publish, e.g. build/executed/statistics.ipynb")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a notebook parameter; VALUE is read as YAML (numbers, lists, booleans)")
    parser.add_argument("--parameters-json", default="{}", help="parameters as one JSON object")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument("--title", default=None, help="page title of the published copy (replaces the first '# ' heading)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    parameters = json.loads(args.parameters_json)
    parameters.update({name: yaml.safe_load(value) for name, value in args.parameter})
    try:
        run_notebook(args.source, args.output, parameters, timeout=args.timeout, title=args.title)
    except Exception as error:  # report and fail; the target was not published
        print(f"[nona.pipeline.runner] FAILED {args.source}: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"[nona.pipeline.runner] {args.output} was not written.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
