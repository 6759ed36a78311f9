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

from nona.io.atomic import Terminated, atomic_path, sigterm_raises
from nona.io.paths import REPO_ROOT
from nona.io.provenance import NOTEBOOK_ENV, PARAMETERS_ENV


def load_source(source: str | Path):
    """Read a jupytext notebook source (MyST .md or .ipynb) as an nbformat notebook."""
    import jupytext

    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"notebook source {source} does not exist")
    return jupytext.read(source)


def _parameters_cell(notebook):
    cells = [c for c in notebook.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"a runnable notebook needs exactly one code cell tagged 'parameters'; found {len(cells)}")
    return cells[0]


def parameter_specs(code: str) -> dict[str, tuple[Any, ast.expr | None]]:
    """Each name assigned in a parameters cell's ``code``: its default value and its type annotation (or None)."""
    specs: dict[str, tuple[Any, ast.expr | None]] = {}
    for node in ast.parse(code).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    specs[target.id] = (ast.literal_eval(node.value), None)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            specs[node.target.id] = (ast.literal_eval(node.value), node.annotation)
    return specs


def declared_parameters(notebook) -> dict[str, Any]:
    """The names and default values assigned in the cell tagged ``parameters``."""
    return {name: default for name, (default, _) in parameter_specs(_parameters_cell(notebook).source).items()}


_SCALARS = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict, "tuple": tuple}


def _conforms(value: Any, annotation: ast.expr | None) -> bool:
    """Whether ``value`` has the annotated type; annotations this does not understand accept anything."""
    if annotation is None:
        return True
    if isinstance(annotation, ast.Constant):
        if annotation.value is None:
            return value is None
        if isinstance(annotation.value, str):  # a string annotation, e.g. "Optional[int]"
            return _conforms(value, ast.parse(annotation.value, mode="eval").body)
        return True
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _conforms(value, annotation.left) or _conforms(value, annotation.right)
    if isinstance(annotation, ast.Name):
        if annotation.id == "Any":
            return True
        if annotation.id == "float":  # an integer is a valid float, a boolean is not
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if annotation.id == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        expected = _SCALARS.get(annotation.id)
        return expected is None or isinstance(value, expected)
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        outer, inner = annotation.value.id, annotation.slice
        if outer == "Optional":
            return value is None or _conforms(value, inner)
        if outer == "Union":
            options = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            return any(_conforms(value, o) for o in options)
        if outer in ("list", "List"):
            return isinstance(value, list) and all(_conforms(v, inner) for v in value)
        if outer in ("dict", "Dict") and isinstance(inner, ast.Tuple) and len(inner.elts) == 2:
            key, item = inner.elts
            return isinstance(value, dict) and all(_conforms(k, key) and _conforms(v, item) for k, v in value.items())
        expected = _SCALARS.get(outer.lower())
        return expected is None or isinstance(value, expected)
    return True


def _type_name(default: Any, annotation: ast.expr | None) -> str:
    return ast.unparse(annotation) if annotation is not None else type(default).__name__


def check_values(parameters: dict[str, Any], specs: dict[str, tuple[Any, ast.expr | None]], notebook: str) -> None:
    """Raise ValueError for unknown names and for values whose type differs from the declared one.

    The declared type is the annotation, or else the type of the default
    (an integer is accepted where the default is a float; a default of None accepts anything).
    """
    unknown = sorted(set(parameters) - set(specs))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for {notebook}; "
            f"valid parameters are: {', '.join(sorted(specs))}"
        )
    wrong = []
    for name, value in sorted(parameters.items()):
        default, annotation = specs[name]
        if annotation is None and default is not None:
            annotation = ast.Name(id=type(default).__name__)
        if not _conforms(value, annotation):
            wrong.append(f"{name} must be {_type_name(default, annotation)}, got {value!r} ({type(value).__name__})")
    if wrong:
        raise ValueError(
            f"parameter type mismatch for {notebook}: "
            + "; ".join(wrong)
            + """ (with papermill, pass lists and dicts as YAML with -y, e.g. -y "seeds: [0, 1]")"""
        )


def check_parameters(source: str | Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """Raise ValueError for a parameter name the notebook does not declare, or a value of another type.

    Return the declared defaults.
    """
    specs = parameter_specs(_parameters_cell(load_source(source)).source)
    check_values(parameters, specs, Path(source).name)
    return {name: default for name, (default, _) in specs.items()}


# papermill starts the cell it injects after the parameters cell with this comment.
_INJECTED_HEADER = "# Parameters"


def check_injected(namespace: dict[str, Any], notebook: str) -> dict[str, Any]:
    """Check the parameters papermill injected into this kernel, and record them for the figures' sidecars.

    Call it in the cell right after the ``parameters`` cell, as
    ``check_injected(globals(), "<notebook name>")``. It reads the kernel's input
    history: papermill executes its injected ``# Parameters`` cell right after the
    notebook's own ``parameters`` cell. An unknown name or a value of the wrong type
    raises ValueError, so plain ``papermill`` fails as the runner does. Unless the
    runner already did, it sets the environment that :func:`nona.io.provenance.current_notebook`
    reads, so figures published by a plain papermill run name their notebook and parameters.
    Returns the injected parameters (empty when none were given).
    """
    history = [str(code) for code in namespace.get("_ih") or namespace.get("In") or []]
    injected: dict[str, Any] = {}
    for position in range(len(history) - 1, 0, -1):
        if history[position].lstrip().startswith(_INJECTED_HEADER):
            # Assigned names only: papermill writes values such as float('nan') that are not literals.
            names = [
                t.id
                for node in ast.parse(history[position]).body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            ]
            specs = parameter_specs(history[position - 1])
            injected = {name: namespace[name] for name in names}
            check_values(injected, specs, notebook)
            break
    if NOTEBOOK_ENV not in os.environ:
        os.environ[NOTEBOOK_ENV] = notebook
        os.environ[PARAMETERS_ENV] = json.dumps(injected, sort_keys=True, default=str)
    return injected


def retitle(notebook, title: str) -> None:
    """Replace the notebook's first ``# `` heading.

    Copies run with other parameters thus get their own page titles.
    """
    for cell in notebook.cells:
        if cell.cell_type == "markdown" and cell.source.lstrip().startswith("# "):
            lines = cell.source.lstrip().splitlines()
            cell.source = "\n".join([f"# {title}"] + lines[1:])
            return
    raise ValueError("the notebook has no '# ' title heading to replace")


# Cell tags with which MyST-NB already hides or removes part of a cell.
VISIBILITY_TAGS = {"hide-input", "hide-output", "hide-cell", "remove-input", "remove-output", "remove-cell"}


def fold_code(notebook) -> None:
    """Fold the code of every cell on the published page (shown on demand), and show one parameters cell.

    A cell that already says how it is shown keeps its tags. When papermill
    injected parameters, the defaults cell is removed from the page and the
    injected cell, which holds the values this page ran with, is the one shown
    (folded); otherwise the defaults cell is.
    """
    injected = any("injected-parameters" in c.metadata.get("tags", []) for c in notebook.cells)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        if injected and "parameters" in tags:
            tags = [t for t in tags if t not in VISIBILITY_TAGS] + ["remove-cell"]
        elif not VISIBILITY_TAGS & set(tags):
            tags.append("hide-input")
        cell.metadata["tags"] = tags


# Where a reader's re-run of a page writes (relative to the repository), apart from the book's build.
RERUN_DIR = "build/rerun"


def rerun_command(source: str | Path, output_name: str, parameters: dict[str, Any]) -> str:
    """The one command that re-runs a page with ``parameters``, writing under ``RERUN_DIR`` (``build/rerun``) only."""
    import shlex

    source = Path(source)
    if source.is_absolute() and source.is_relative_to(REPO_ROOT):
        source = source.relative_to(REPO_ROOT)
    arguments = ["python", "-m", "nona.pipeline.runner", source.as_posix(), f"{RERUN_DIR}/executed/{output_name}.ipynb"]
    if parameters:
        arguments += ["--parameters-json", json.dumps(parameters, sort_keys=True)]
    return f"NONA_BUILD={RERUN_DIR} " + " ".join(shlex.quote(a) for a in arguments)


def rerun_box(source: str | Path, output_name: str, parameters: dict[str, Any]):
    """A folded "Re-run this page" box for the top of a published page."""
    import nbformat

    command = rerun_command(source, output_name, parameters)
    text = (
        ":::{admonition} Re-run this page\n:class: dropdown\n\n"
        "With the project's environment active (`source .venv/bin/activate` after `make setup`), this command "
        f"executes the page again with the parameters it was built with. It writes under `{RERUN_DIR}/` and "
        "leaves the book's own build untouched:\n\n"
        f"```bash\n{command}\n```\n\n"
        "Change a value in the JSON to run it your way; "
        f"`papermill --help-notebook {Path(source).with_suffix('.ipynb').as_posix()}` lists every parameter "
        "with its type and meaning.\n:::\n"
    )
    return nbformat.v4.new_markdown_cell(text, metadata={"tags": ["rerun-box"]})


def run_notebook(
    source: str | Path,
    output: str | Path,
    parameters: dict[str, Any] | None = None,
    timeout: int = 3600,
    title: str | None = None,
    rerun_parameters: dict[str, Any] | None = None,
) -> Path:
    """Execute ``source`` with ``parameters`` and publish it at ``output``; raises if any cell fails.

    ``title`` replaces the page title of the published copy. The page gets a
    "Re-run this page" box whose command uses ``rerun_parameters`` (by
    default ``parameters``; the pipeline passes output folders moved under
    ``RERUN_DIR`` (``build/rerun``) so that a re-run never writes into the build).
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
            import nbformat

            published = nbformat.read(executed, as_version=4)
            fold_code(published)
            shown = parameters if rerun_parameters is None else rerun_parameters
            # The box goes right below the page title (the first cell).
            published.cells.insert(1, rerun_box(source, output.stem, shown))
            nbformat.write(published, executed)
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
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a notebook parameter; VALUE is read as YAML (numbers, lists, booleans)",
    )
    parser.add_argument("--parameters-json", default="{}", help="parameters as one JSON object")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds allowed per cell")
    parser.add_argument(
        "--title", default=None, help="page title of the published copy (replaces the first '# ' heading)"
    )
    parser.add_argument(
        "--rerun-json",
        default=None,
        help="parameters of the page's 'Re-run this page' command (default: the parameters)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    parameters = json.loads(args.parameters_json)
    parameters.update({name: yaml.safe_load(value) for name, value in args.parameter})
    try:
        # SIGTERM (Snakemake cancelling the job, a scheduler's time limit) unwinds like an error:
        # the kernel is shut down and the temporary beside the target is removed.
        with sigterm_raises():
            run_notebook(
                args.source,
                args.output,
                parameters,
                timeout=args.timeout,
                title=args.title,
                rerun_parameters=None if args.rerun_json is None else json.loads(args.rerun_json),
            )
    except Terminated as stop:
        print(f"[nona.pipeline.runner] TERMINATED {args.source}; {args.output} was not written.", file=sys.stderr)
        return int(stop.code)
    except Exception as error:  # report and fail; the target was not published
        print(f"[nona.pipeline.runner] FAILED {args.source}: {type(error).__name__}: {error}", file=sys.stderr)
        print(f"[nona.pipeline.runner] {args.output} was not written.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
