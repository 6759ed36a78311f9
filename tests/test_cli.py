"""The ``nona data`` command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nona.data import list_datasets
from nona.io.paths import REPO_ROOT
from nona.pipeline.cli import main


def test_data_list_shows_every_dataset(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    for name in list_datasets():
        assert name in out
    assert "synthetic" in out and "download" in out and "NONA_DATA" in out


def test_data_describe(capsys):
    assert main(["data", "describe", "houses"]) == 0
    out = capsys.readouterr().out
    assert "github.com/emanhamed/Houses-dataset" in out and "ahmed2016houses" in out
    assert "houses/HousesInfo.txt" in out and "303 +- 81.3" in out and "ResNet-34" in out
    assert main(["data", "describe", "heart-rate-audio", "--yaml"]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "name: heart-rate-audio" in out


def test_data_check_missing_prints_instructions_and_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NONA_DATA", str(tmp_path))
    assert main(["data", "check", "books"]) == 1
    err = capsys.readouterr().err
    assert "NOT READY" in err and str(tmp_path / "books" / "Data_Train.csv") in err
    assert "machinehack.com" in err and "Data_Train.xlsx" in err


def test_data_check_present(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NONA_DATA", str(tmp_path))
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "Data_Train.csv").write_text("Synopsis,Price\nA tale,250\nAnother,90\n")
    assert main(["data", "check", "books", "vader-valence", "synthetic-2d", "--load"]) == 0
    out = capsys.readouterr().out
    assert "books: OK" in out and "loaded 2 samples" in out
    assert "vader-valence: OK (1 file(s) present, checksums match" in out
    assert "synthetic-2d: OK (generated" in out
    (tmp_path / "books" / "Data_Train.csv").write_text("Synopsis,Price\nA tale,-5\n")
    assert main(["data", "check", "books", "--load"]) == 1
    assert "positive" in capsys.readouterr().err


def test_usage_errors(capsys):
    assert main(["data", "describe", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["data", "check"]) == 2
    with pytest.raises(SystemExit):
        main(["data"])


def test_python_dash_m_runs_the_cli(tmp_path):
    env = {**os.environ, "NONA_DATA": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "nona.pipeline.cli", "data", "check", "udacity"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "udacity/interpolated.csv" in done.stderr and "github.com/udacity/self-driving-car" in done.stderr


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_can_be_described(name, capsys):
    assert main(["data", "describe", name]) == 0
    assert "instructions:" in capsys.readouterr().out


def test_data_list_does_not_import_torch():
    code = (
        "import sys\nfrom nona.pipeline.cli import main\n"
        "assert main(['data', 'list']) == 0\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
