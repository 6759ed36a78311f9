"""The numbers the book publishes, as data.

Each notebook of the pipeline ends with a call to :func:`record_numbers`, which
writes the numbers its page shows to ``build/published/<profile>/<page>.json``
(atomically). The Reproduction report collects them with :func:`collect` into
ONE versioned file, ``build/results/<profile>/published.json``, together with
the machine description; ``nona reproduce check`` compares that file with the
reference the repository ships (``reference/published-<profile>.json``, see
:mod:`nona.pipeline.reproduce`).

A number is a small dict; the helpers below build it and state how it may be
compared with another build's value:

``exact(value, digits=None, rel=1e-9)``
    A computation on fixed data (the paper's printed table, Demšar's example,
    a symbolic identity). Equal to the last printed digit (``digits`` decimals)
    or, without ``digits``, within a relative ``rel``. A failure is an error.
``statistical(value, se)``
    A trained result with its standard error from the seed (or fold) spread.
    Two builds agree when their difference is within 2 standard errors of the
    difference, ``2 * sqrt(se_a**2 + se_b**2)``. A mismatch is reported only.
``approximate(value, rel)``
    A single trained run without a seed spread: agrees within a relative
    ``rel``. A mismatch is reported only.
``selection(choice, scores, se)``
    A choice among candidates by a score (lower is better): the candidates'
    scores and standard errors travel with it, so that a different choice is
    reported as "selection differs" with its margin.

A plain ``int``, ``float``, ``bool`` or ``str`` given to :func:`record_numbers`
is an exact number.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nona.io.atomic import write_json
from nona.io.paths import BUILD_DIR

FORMAT = "nona-published"
VERSION = 1
KINDS = ("exact", "statistical", "approximate", "selection")
# The Snakefile sets it for every job; a notebook run by hand falls back to its ``profile`` parameter.
PROFILE_ENV = "NONA_PROFILE"


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar from a NumPy or Python one."""
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def exact(value: Any, digits: int | None = None, rel: float = 1e-9, label: str | None = None) -> dict[str, Any]:
    """A number computed on fixed data (see the module docstring)."""
    number = {"kind": "exact", "value": _plain(value), "rel": rel}
    if digits is not None:
        number["digits"] = int(digits)
    return _labelled(number, label)


def statistical(value: float, se: float, label: str | None = None, **extra: Any) -> dict[str, Any]:
    """A trained result with the standard error of ``value`` (e.g. std / sqrt(n seeds))."""
    number = {
        "kind": "statistical",
        "value": _plain(value),
        "se": _plain(se),
        **{k: _plain(v) for k, v in extra.items()},
    }
    return _labelled(number, label)


def mean_se(values: Any, label: str | None = None) -> dict[str, Any]:
    """The mean of per-seed values, with the standard error of the mean (sample std / sqrt(n))."""
    values = np.asarray(values, dtype=float)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return statistical(values.mean(), se, label=label, n=len(values))


def approximate(value: float, rel: float = 0.25, label: str | None = None) -> dict[str, Any]:
    """A single trained run without a seed spread; agreement within a relative ``rel``."""
    return _labelled({"kind": "approximate", "value": _plain(value), "rel": rel}, label)


def selection(
    choice: str, scores: Mapping[str, float], se: Mapping[str, float] | None = None, label: str | None = None
) -> dict[str, Any]:
    """A choice among candidates by score (lower is better), with every candidate's score and standard error.

    ``margin`` is the runner-up's score minus the winner's, ``noise`` the standard
    error of that difference.
    """
    scores = {str(k): _plain(v) for k, v in scores.items()}
    se = {str(k): _plain(v) for k, v in (se or {}).items()}
    choice = str(choice)
    others = sorted((v, k) for k, v in scores.items() if k != choice and v is not None)
    number = {"kind": "selection", "value": choice, "scores": scores, "se": se}
    if others and scores.get(choice) is not None:
        runner_up = others[0][1]
        number["runner_up"] = runner_up
        number["margin"] = _plain(scores[runner_up] - scores[choice])
        number["noise"] = _plain(math.hypot(se.get(choice) or 0.0, se.get(runner_up) or 0.0))
    return _labelled(number, label)


def _labelled(number: dict[str, Any], label: str | None) -> dict[str, Any]:
    if label:
        number["label"] = label
    return number


def as_number(value: Any) -> dict[str, Any]:
    """A number spec from a spec or a plain value (plain values are exact)."""
    if isinstance(value, Mapping):
        if value.get("kind") not in KINDS:
            raise ValueError(f"a published number needs a kind among {', '.join(KINDS)}, got {dict(value)!r}")
        return dict(value)
    value = _plain(value)
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise ValueError(f"a published number must be a number, a bool or a string, got {value!r}")
    return exact(value)


def current_profile(default: str | None = None) -> str | None:
    """The profile of the running pipeline job (``NONA_PROFILE``), else the notebook's ``profile`` parameter."""
    from nona.io.provenance import current_notebook

    if os.environ.get(PROFILE_ENV):
        return os.environ[PROFILE_ENV]
    _, parameters = current_notebook()
    return parameters.get("profile", default)


def published_dir(profile: str, build_dir: str | Path | None = None) -> Path:
    """Where the pages of one profile's build record their numbers."""
    return Path(build_dir or BUILD_DIR) / "published" / profile


def published_file(profile: str, build_dir: str | Path | None = None) -> Path:
    """The one collected file of a build: ``build/results/<profile>/published.json``."""
    return Path(build_dir or BUILD_DIR) / "results" / profile / "published.json"


def record_numbers(
    numbers: Mapping[str, Any], page: str | None = None, profile: str | None = None, build_dir: str | Path | None = None
) -> Path | None:
    """Write a page's published numbers to ``build/published/<profile>/<page>.json``.

    ``page`` defaults to the executed notebook's name (``statistics-build`` for the
    second run of the statistics notebook), ``profile`` to the pipeline's. Outside
    the pipeline, without a page or a profile, nothing is written and None is returned.
    """
    from nona.io.provenance import current_notebook

    page = page or current_notebook()[0]
    profile = profile or current_profile()
    if not page or not profile:
        print("record_numbers: not run by the pipeline (no page or profile); nothing recorded")
        return None
    if "/" in page:
        raise ValueError(f"a page name cannot contain '/': {page!r}")
    content = {"page": page, "profile": profile, "numbers": {str(k): as_number(v) for k, v in numbers.items()}}
    path = published_dir(profile, build_dir) / f"{page}.json"
    write_json(path, content)
    return path


def machine_description() -> dict[str, Any]:
    """What the numbers may depend on: CPU, kernels, threads, library versions, commit."""
    import torch

    from nona.io.provenance import git_commit, package_versions

    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = "unknown"
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": capability,
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": package_versions(),
        "commit": git_commit(),
    }


def collect(
    profile: str,
    pages: list[str] | None = None,
    build_dir: str | Path | None = None,
    machine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Gather every page's numbers of a build into ``build/results/<profile>/published.json``; returns its content.

    ``pages`` (the executed notebooks of the build) keeps out pages left over from
    notebooks that the profile no longer runs. Keys are ``<page>/<name>``.
    """
    from nona.io.provenance import now

    folder = published_dir(profile, build_dir)
    files = sorted(folder.glob("*.json"))
    if pages is not None:
        files = [f for f in files if f.stem in set(pages)]
    numbers: dict[str, Any] = {}
    for file in files:
        content = json.loads(file.read_text())
        for name, number in content["numbers"].items():
            numbers[f"{content['page']}/{name}"] = number
    content = {
        "format": FORMAT,
        "version": VERSION,
        "profile": profile,
        "created": now(),
        "machine": machine if machine is not None else machine_description(),
        "pages": [f.stem for f in files],
        "numbers": numbers,
    }
    write_json(published_file(profile, build_dir), content)
    return content


def load_published(path: str | Path) -> dict[str, Any]:
    """Read a published-numbers file; an error names a missing file or a wrong format or version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    content = json.loads(path.read_text())
    if content.get("format") != FORMAT or content.get("version") != VERSION:
        raise ValueError(
            f"{path} is not a {FORMAT} file of version {VERSION} "
            f"(format {content.get('format')!r}, version {content.get('version')!r})"
        )
    return content


def noise_se(
    summary: Any, statistic: Callable[[Any], Mapping[str, float]], draws: int = 200, seed: int = 0
) -> dict[str, float]:
    """Standard errors of statistics of a results table, from its seed spread (a parametric bootstrap).

    ``summary`` has the columns dataset, method, mean, std and n_seeds (or a
    scalar ``n_seeds`` attribute missing: 1); each draw replaces every mean by
    ``mean + std / sqrt(n) * N(0, 1)`` and recomputes ``statistic`` (a function
    of such a table returning name -> value). The result is the standard
    deviation over the draws, per name.
    """
    rng = np.random.default_rng(seed)
    n = summary["n_seeds"].to_numpy(float) if "n_seeds" in summary else np.ones(len(summary))
    se = summary["std"].fillna(0).to_numpy(float) / np.sqrt(n)
    values: dict[str, list[float]] = {}
    for _ in range(draws):
        drawn = summary.assign(mean=summary["mean"].to_numpy(float) + se * rng.standard_normal(len(summary)))
        for name, value in statistic(drawn).items():
            values.setdefault(name, []).append(float(value))
    return {name: float(np.std(v, ddof=1)) for name, v in values.items()}
