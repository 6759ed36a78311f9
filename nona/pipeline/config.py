"""The pipeline's configuration: one file per profile, ``profiles/<name>/pipeline.yaml``.

Each profile folder also holds Snakemake's own ``config.yaml``, which only sets
command-line options (cores, executor, ``profile=<name>``): Snakemake reads a
profile's ``config.yaml`` as command-line flags, which cannot carry nested
settings. Everything the pipeline runs (datasets, seeds, notebooks and their
parameters) is in ``pipeline.yaml``, read here by the Snakefile, the notebooks
and the tests alike.
"""

from __future__ import annotations

import functools
from typing import Any

from nona.io.paths import REPO_ROOT

PROFILE_DIR = REPO_ROOT / "profiles"
SETTINGS_FILE = "pipeline.yaml"
# Keys every profile's settings must define.
REQUIRED = ("datasets", "finetune", "results", "ablation", "site", "notebooks")
# Fine-tuning settings about how the pipeline lays out its jobs, not about how a run trains.
JOB_LAYOUT_SETTINGS = ("seeds", "frozen_comparison", "own_job_arms")


def profile_names() -> list[str]:
    """The profiles that define pipeline settings (``profiles/<name>/pipeline.yaml``)."""
    return sorted(p.parent.name for p in PROFILE_DIR.glob(f"*/{SETTINGS_FILE}"))


def check_profile(name: str) -> str:
    """``name`` if it is a profile; otherwise a ValueError that lists the profiles."""
    if name not in profile_names():
        raise ValueError(f"unknown profile {name!r}; valid values are: {', '.join(profile_names())}")
    return name


@functools.cache
def _load(name: str) -> dict[str, Any]:
    import yaml

    path = PROFILE_DIR / check_profile(name) / SETTINGS_FILE
    try:
        settings = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    missing = [key for key in REQUIRED if key not in (settings or {})]
    if missing:
        raise ValueError(f"{path} lacks the settings {', '.join(missing)}")
    return settings


def load_profile(name: str) -> dict[str, Any]:
    """The settings of profile ``name`` (a fresh copy: callers may change it)."""
    import copy

    return copy.deepcopy(_load(name))


def notebook_parameters(profile: str, notebook: str) -> dict[str, Any]:
    """The parameters the profile passes to one of its once-per-profile notebooks."""
    notebooks = _load(profile)["notebooks"]
    if notebook not in notebooks:
        raise ValueError(f"profile {profile!r} runs no notebook {notebook!r}; it runs: {', '.join(notebooks)}")
    return dict(notebooks[notebook] or {})


def dataset_finetune_settings(settings: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A profile's fine-tuning settings for one dataset (seeds included), its ``finetune_overrides`` applied."""
    return {**settings["finetune"], **(settings.get("finetune_overrides") or {}).get(dataset, {})}


def training_settings(settings: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The settings one dataset's runs train with: :func:`dataset_finetune_settings` without the job layout."""
    return {k: v for k, v in dataset_finetune_settings(settings, dataset).items() if k not in JOB_LAYOUT_SETTINGS}
