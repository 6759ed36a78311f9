"""Provenance of a result: git commit, package versions, time, and the notebook that made it."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata

from nona.io.paths import REPO_ROOT

# The runner passes these to the kernel so library code knows which notebook runs it.
NOTEBOOK_ENV = "NONA_NOTEBOOK"
PARAMETERS_ENV = "NONA_PARAMETERS"


def git_commit() -> str:
    """The repository's current commit hash, with ``-dirty`` if the tree has changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def package_versions(
    names: tuple[str, ...] = ("nona", "torch", "numpy", "scipy", "scikit-learn", "pandas"),
) -> dict[str, str]:
    """Installed versions of the named distributions (``missing`` where not installed)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def current_notebook() -> tuple[str | None, dict]:
    """The notebook being executed by the runner and its parameters, if any."""
    return os.environ.get(NOTEBOOK_ENV), json.loads(os.environ.get(PARAMETERS_ENV, "{}"))


def run_provenance(device: str, started: str) -> dict:
    """Where and when a training run ran: package versions, commit, device, start and end times."""
    return {
        "versions": package_versions(),
        "commit": git_commit(),
        "device": device,
        "started": started,
        "finished": now(),
    }


def now() -> str:
    """The current UTC time in ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
