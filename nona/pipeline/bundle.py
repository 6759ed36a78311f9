"""The release bundle: one archive with everything a build published, its environment and checksums.

``make bundle`` (``python -m nona.pipeline.bundle --profile quick``) writes
``dist/nona-companion-<version>-<profile>.tar.gz`` with, under one folder:

- ``site/``: the built website (``_build/html``)
- ``executed/``: the executed notebooks (``build/executed``)
- ``figures/``: every figure as SVG, PDF and PNG with its JSON sidecar (``build/site/figures``)
- ``runs/``, ``ablation/``, ``results/``: the profile's run records and result tables
- ``environment/``: ``constraints.txt`` (the pins) and ``pip-freeze.txt`` (the exact venv)
- ``CITATION.cff``, ``CITATION.bib`` (the paper's and this version's BibTeX) and ``BUNDLE.json``
- ``SHA256SUMS``: the SHA-256 of every other file, as ``sha256sum -c`` reads it

It refuses to run when the site is not built.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from nona.io.atomic import atomic_path
from nona.io.paths import BUILD_DIR, REPO_ROOT
from nona.io.provenance import git_commit, now
from nona.io.site import companion_version, site_url

CHECKSUMS = "SHA256SUMS"


def bundle_name(profile: str, version: str | None = None) -> str:
    """The archive's folder name: ``nona-companion-<version>-<profile>``."""
    return f"nona-companion-{version or companion_version()}-{profile}"


def pip_freeze() -> str:
    """``pip freeze`` of the running interpreter's environment (the companion itself as a name and version)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout + f"# this checkout, installed editable:\nnona=={companion_version()}\n"


def bundle_contents(profile: str, build: Path, site: Path) -> tuple[dict[str, Path], list[str]]:
    """What goes into the archive (name inside -> file here) and the optional parts that were absent.

    Raises FileNotFoundError, saying what to run, when the site, the executed
    notebooks or the figures are missing.
    """
    required = {
        "site": (site, "the site is not built"),
        "executed": (build / "executed", "no executed notebooks"),
        "figures": (build / "site" / "figures", "no published figures"),
    }
    for part, (folder, what) in required.items():
        if (
            not folder.is_dir()
            or not any(folder.iterdir())
            or (part == "site" and not (folder / "index.html").is_file())
        ):
            raise FileNotFoundError(
                f"{what} ({folder} is missing or empty): build it first with `make book PROFILE={profile}` "
                f"(or `make site PROFILE={profile}` when the notebooks were already executed), "
                "then run `make bundle` again"
            )
    optional = {
        "runs": build / "runs" / profile,
        "ablation": build / "ablation" / profile,
        "results": build / "results" / profile,
    }
    folders = {**{k: v for k, (v, _) in required.items()}, **{k: v for k, v in optional.items() if v.is_dir()}}
    files: dict[str, Path] = {}
    for part, folder in folders.items():
        for path in sorted(folder.rglob("*")):
            # Temporaries of an interrupted write (nona.io.atomic) are never part of a release.
            if path.is_file() and ".part." not in path.name:
                files[f"{part}/{path.relative_to(folder).as_posix()}"] = path
    absent = sorted(k for k, v in optional.items() if not v.is_dir())
    return files, absent


def make_bundle(
    profile: str,
    out_dir: str | Path = REPO_ROOT / "dist",
    build: str | Path = BUILD_DIR,
    site: str | Path = REPO_ROOT / "_build" / "html",
    freeze: str | None = None,
) -> Path:
    """Write the release archive of ``profile``'s build and return its path.

    ``freeze`` replaces ``pip freeze``, for tests.
    """
    from nona.paper.citation import cff_bibtex

    build, site = Path(build), Path(site)
    files, absent = bundle_contents(profile, build, site)
    version = companion_version()
    name = bundle_name(profile, version)
    generated = {
        "environment/constraints.txt": (REPO_ROOT / "requirements" / "constraints.txt").read_bytes(),
        "environment/pip-freeze.txt": (freeze if freeze is not None else pip_freeze()).encode(),
        "CITATION.cff": (REPO_ROOT / "CITATION.cff").read_bytes(),
        "CITATION.bib": cff_bibtex().encode(),
        "BUNDLE.json": (
            json.dumps(
                {
                    "name": name,
                    "version": version,
                    "profile": profile,
                    "commit": git_commit(),
                    "created": now(),
                    "site_url": site_url(),
                    "python": sys.version.split()[0],
                    "absent": absent,
                },
                indent=2,
            )
            + "\n"
        ).encode(),
    }
    digests = {arcname: _sha256(path.read_bytes()) for arcname, path in files.items()}
    digests.update({arcname: _sha256(data) for arcname, data in generated.items()})
    checksums = "".join(f"{digests[k]}  {k}\n" for k in sorted(digests)).encode()

    archive = Path(out_dir) / f"{name}.tar.gz"
    with atomic_path(archive) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for arcname, data in sorted({**generated, CHECKSUMS: checksums}.items()):
            _add_bytes(tar, f"{name}/{arcname}", data)
        for arcname, path in sorted(files.items()):
            tar.add(path, arcname=f"{name}/{arcname}", recursive=False)
    return archive


def verify_bundle(archive: str | Path) -> int:
    """Check every file of an archive against its ``SHA256SUMS``; return the number of files checked.

    Raises ValueError naming the files that are missing, extra or altered.
    """
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        roots = {n.split("/", 1)[0] for n in members}
        if len(roots) != 1:
            raise ValueError(f"{archive}: expected one top folder, found {sorted(roots)}")
        root = roots.pop()
        listed = {}
        for line in tar.extractfile(members[f"{root}/{CHECKSUMS}"]).read().decode().splitlines():
            digest, arcname = line.split("  ", 1)
            listed[arcname] = digest
        present = {n.split("/", 1)[1] for n in members} - {CHECKSUMS}
        problems = [f"missing: {n}" for n in sorted(set(listed) - present)]
        problems += [f"not in {CHECKSUMS}: {n}" for n in sorted(present - set(listed))]
        problems += [
            f"altered: {n}"
            for n in sorted(set(listed) & present)
            if _sha256(tar.extractfile(members[f"{root}/{n}"]).read()) != listed[n]
        ]
    if problems:
        raise ValueError(f"{archive} does not match its {CHECKSUMS}:\n  " + "\n  ".join(problems))
    return len(listed)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Write the release bundle of a built profile.")
    parser.add_argument("--profile", default="quick", help="the built profile (default: quick)")
    parser.add_argument("--out", default=str(REPO_ROOT / "dist"), help="folder of the archive (default: dist/)")
    parser.add_argument("--build", default=str(BUILD_DIR), help="the build folder (default: $NONA_BUILD or build/)")
    parser.add_argument(
        "--site", default=str(REPO_ROOT / "_build" / "html"), help="the built site (default: _build/html)"
    )
    parser.add_argument("--verify", metavar="ARCHIVE", help="only check an existing archive against its SHA256SUMS")
    args = parser.parse_args(argv)
    try:
        if args.verify:
            print(f"{args.verify}: {verify_bundle(args.verify)} files match {CHECKSUMS}")
            return 0
        archive = make_bundle(args.profile, args.out, build=args.build, site=args.site)
    except (FileNotFoundError, ValueError) as error:
        print(f"[nona.pipeline.bundle] {error}", file=sys.stderr)
        return 1
    count = verify_bundle(archive)
    print(f"{archive}: {count} files with their SHA-256 in {CHECKSUMS}")
    if git_commit().endswith("-dirty"):
        print(
            "[nona.pipeline.bundle] note: the working tree has uncommitted changes "
            "(BUNDLE.json records the commit as -dirty)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
