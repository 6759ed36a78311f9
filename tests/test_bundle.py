"""The release bundle: one archive with the site, notebooks, figures, records, environment, citation and checksums."""

from __future__ import annotations

import io
import tarfile

import pytest

from nona.io.site import companion_version
from nona.pipeline.bundle import CHECKSUMS, main, make_bundle, verify_bundle


def fake_build(root):
    """A tiny build tree: what `make book` leaves for the quick profile."""
    files = {
        "_build/html/index.html": "<html>home</html>",
        "_build/html/build/executed/results.html": "<html>results</html>",
        "build/executed/results.ipynb": "{}",
        "build/site/figures/cd-diagram.svg": "<svg/>",
        "build/site/figures/cd-diagram.pdf": "%PDF",
        "build/site/figures/cd-diagram.png": "PNG",
        "build/site/figures/cd-diagram.json": '{"id": "cd-diagram"}',
        "build/site/figures/.cd-diagram.0123456789.part.svg": "",  # left by an interrupted write: never released
        "build/runs/quick/digits-rotation/nona/seed0.json": '{"test_mse": 0.01}',
        "build/ablation/quick/digits-rotation/selected.json": "{}",
        "build/results/quick/table1.csv": "dataset,method,mean,std\n",
        "build/runs/paper/houses/nona/seed0.json": "{}",  # another profile: not in this bundle
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_bundle_holds_everything_with_checksums(tmp_path):
    fake_build(tmp_path)
    archive = make_bundle(
        "quick", tmp_path / "dist", build=tmp_path / "build", site=tmp_path / "_build" / "html", freeze="numpy==2.0.0\n"
    )
    top = f"nona-companion-{companion_version()}-quick"
    assert archive == tmp_path / "dist" / f"{top}.tar.gz"
    with tarfile.open(archive) as tar:
        names = {m.name.removeprefix(top + "/") for m in tar.getmembers()}
        freeze = tar.extractfile(f"{top}/environment/pip-freeze.txt").read().decode()
        bib = tar.extractfile(f"{top}/CITATION.bib").read().decode()
    assert names == {
        "site/index.html",
        "site/build/executed/results.html",
        "executed/results.ipynb",
        *(f"figures/cd-diagram.{ext}" for ext in ("svg", "pdf", "png", "json")),
        "runs/digits-rotation/nona/seed0.json",
        "ablation/digits-rotation/selected.json",
        "results/table1.csv",
        "environment/constraints.txt",
        "environment/pip-freeze.txt",
        "CITATION.cff",
        "CITATION.bib",
        "BUNDLE.json",
        CHECKSUMS,
    }
    assert "numpy==2.0.0" in freeze and "@misc{nonacompanion" in bib
    assert verify_bundle(archive) == len(names) - 1
    assert [p.name for p in (tmp_path / "dist").iterdir()] == [archive.name]  # no temporary left


def test_verify_names_altered_and_extra_files(tmp_path):
    fake_build(tmp_path)
    archive = make_bundle(
        "quick", tmp_path / "dist", build=tmp_path / "build", site=tmp_path / "_build" / "html", freeze=""
    )
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("results/table1.csv"):
                data = b"forged\n"
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(ValueError, match="altered: results/table1.csv"):
        verify_bundle(tampered)


def test_bundle_refuses_without_a_built_site(tmp_path, capsys):
    fake_build(tmp_path)
    (tmp_path / "_build" / "html" / "index.html").unlink()
    with pytest.raises(FileNotFoundError, match="the site is not built .*make book PROFILE=quick"):
        make_bundle("quick", tmp_path / "dist", build=tmp_path / "build", site=tmp_path / "_build" / "html", freeze="")
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
    args = [
        "--out",
        str(tmp_path / "dist"),
        "--build",
        str(tmp_path / "build"),
        "--site",
        str(tmp_path / "_build" / "html"),
    ]
    assert main(["--profile", "no-such-build", *args]) == 1
    assert "make book PROFILE=no-such-build" in capsys.readouterr().err
