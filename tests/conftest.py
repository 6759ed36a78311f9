"""Shared pytest configuration: deterministic, CPU-only, headless."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smoke_pipeline_build(tmp_path_factory):
    """A build of the smoke profile (every notebook, tiny settings), made once for the tests that read it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    build = tmp_path_factory.mktemp("smoke-build")
    env = {
        **os.environ,
        "NONA_BUILD": str(build),
        "MPLBACKEND": "Agg",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/smoke", "--nolock", "--cores", "2"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return build
