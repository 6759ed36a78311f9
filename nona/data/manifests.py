"""Dataset manifests (data_manifests/*.yaml): read, validate against the schema, locate and verify files."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import yaml

from nona.io.paths import REPO_ROOT

MANIFEST_DIR = REPO_ROOT / "data_manifests"
SCHEMA_PATH = MANIFEST_DIR / "schema.json"
DATA_ENV = "NONA_DATA"


def data_root() -> Path:
    """The folder that holds downloaded datasets: ``$NONA_DATA``, else ``data/`` in the repository."""
    # Read at call time so a test (or a user) can point it elsewhere after import.
    return Path(os.environ.get(DATA_ENV) or REPO_ROOT / "data").expanduser()


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) every manifest follows."""
    return json.loads(SCHEMA_PATH.read_text())


def list_datasets(embedded: bool | None = None) -> list[str]:
    """Names of the datasets with a manifest, sorted; ``embedded`` filters on the manifest flag."""
    names = sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml"))
    if embedded is None:
        return names
    return [n for n in names if get_manifest(n)["embedded"] is embedded]


def validate_manifest(manifest: dict[str, Any], source: str = "manifest") -> None:
    """Raise ValueError listing every way ``manifest`` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft7Validator(load_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
        raise ValueError(f"{source} does not follow {SCHEMA_PATH.name}:\n" + "\n".join(lines))
    lo, hi = manifest["label"]["range"]
    if not lo < hi:
        raise ValueError(f"{source}: label.range must be [lo, hi] with lo < hi, got {[lo, hi]}")


@functools.cache
def _read_manifest(name: str) -> str:
    path = MANIFEST_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in MANIFEST_DIR.glob("*.yaml")))
        raise ValueError(f"unknown dataset {name!r}; known datasets: {known}")
    return path.read_text()


def parse_manifest(text: str, source: str) -> Any:
    """Parse a manifest's YAML; a syntax error becomes a ValueError naming ``source`` and the line."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        context = getattr(err, "context", None)
        detail = f"{context}: {problem}" if context else problem
        raise ValueError(f"{where}: not valid YAML ({detail}); fix the file or remove it") from None


def get_manifest(name: str) -> dict[str, Any]:
    """The validated manifest of dataset ``name`` as a dict (a fresh copy each call)."""
    source = f"data_manifests/{name}.yaml"
    manifest = parse_manifest(_read_manifest(name), source)
    if not isinstance(manifest, dict):
        raise ValueError(f"{source}: expected a YAML mapping of manifest fields, got {type(manifest).__name__}")
    validate_manifest(manifest, source=source)
    if manifest["name"] != name:
        raise ValueError(f"data_manifests/{name}.yaml declares name {manifest['name']!r}; it must equal the file name")
    return manifest


def package_dir(import_name: str) -> Path:
    """The folder that contains the installed package ``import_name`` (its site-packages)."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {import_name!r} is not installed; install the companion with `pip install -e .[book]`"
        )
    return Path(next(iter(spec.submodule_search_locations))).parent


def file_path(entry: dict[str, Any], root: Path | None = None) -> Path:
    """Where the file of a manifest ``files`` entry lives on this machine."""
    rel = Path(entry["path"])
    if entry.get("root", "data") == "package":
        return package_dir(rel.parts[0]) / rel
    return (root if root is not None else data_root()) / rel


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex MD5 of a file's bytes (some sources publish only MD5)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def missing_message(manifest: dict[str, Any], missing: list[Path], root: Path) -> str:
    """The text a user reads when files are missing: what, where, and the manifest's instructions."""
    listed = "\n".join(f"  - {p}" for p in missing)
    return (
        f"dataset {manifest['name']!r} (data_manifests/{manifest['name']}.yaml) is missing "
        f"{len(missing)} file(s) under the data root {root}:\n{listed}\n"
        f"Set {DATA_ENV} to use another data root.\nHow to get it:\n{manifest['instructions']}"
    )


def verify_files(
    name_or_manifest: str | dict[str, Any], root: Path | None = None, checksums: bool = True
) -> list[Path]:
    """Check that a dataset's required files exist and match their checksums; return their paths.

    Raises FileNotFoundError (naming the manifest and saying how to get the data)
    when a required file is missing, ValueError when a checksum differs.
    """
    manifest = get_manifest(name_or_manifest) if isinstance(name_or_manifest, str) else name_or_manifest
    root = root if root is not None else data_root()
    found, missing = [], []
    for entry in manifest["files"]:
        path = file_path(entry, root)
        if path.exists():
            found.append(path)
        elif entry.get("required", True):
            missing.append(path)
    if missing:
        raise FileNotFoundError(missing_message(manifest, missing, root))
    if checksums:
        for entry in manifest["files"]:
            path = file_path(entry, root)
            if not path.is_file():
                continue
            for algo, fn in (("sha256", sha256_file), ("md5", md5_file)):
                expected = entry.get(algo)
                if expected:
                    actual = fn(path)
                    if actual != expected:
                        raise ValueError(
                            f"{algo} mismatch for {path} (dataset {manifest['name']!r}): expected {expected}, "
                            f"actual {actual}. The file is corrupt or a different version; download it again:\n"
                            f"{manifest['instructions']}"
                        )
    return found
