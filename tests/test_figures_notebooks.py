"""The figure notebooks execute in a smoke setting and publish their figures.

The notebooks: method, synthetic surfaces, SoftStep shapes, FLOPs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nona.pipeline.config import load_profile, notebook_parameters, profile_names
from nona.pipeline.runner import check_parameters, run_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# name -> (smoke parameters from profiles/smoke/pipeline.yaml, figure ids it publishes);
# each run takes 10-15 s on a laptop CPU, mostly kernel start-up.
FIGURE_IDS = {
    "method": ["nona-block-diagram"],
    "softstep_shapes": ["softstep-shapes", "softstep-row-effect", "softstep-kept-neighbours"],
    "flops": ["flops-scaling", "flops-wall-time"],
    "synthetic_surfaces": ["synthetic-surfaces"],
    "diabetes": ["diabetes-cv"],
}
FIGURE_NOTEBOOKS = {name: (notebook_parameters("smoke", name), ids) for name, ids in FIGURE_IDS.items()}


@pytest.mark.parametrize("name", sorted(FIGURE_NOTEBOOKS))
def test_smoke_parameters_are_declared(name):
    parameters, _ = FIGURE_NOTEBOOKS[name]
    check_parameters(NOTEBOOKS / f"{name}.md", parameters)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FIGURE_NOTEBOOKS))
def test_notebook_executes_and_publishes_its_figures(name, tmp_path, monkeypatch):
    parameters, figure_ids = FIGURE_NOTEBOOKS[name]
    # The kernel inherits the environment: figures go to the temporary build tree, not build/.
    monkeypatch.setenv("NONA_BUILD", str(tmp_path))
    out = run_notebook(NOTEBOOKS / f"{name}.md", tmp_path / "executed" / f"{name}.ipynb", parameters, timeout=120)
    executed = json.loads(out.read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for fig_id in figure_ids:
        sidecar = json.loads((tmp_path / "site" / "figures" / f"{fig_id}.json").read_text())
        assert sidecar["parameters"] == parameters
        assert sidecar["caption"]
        for ext in ("svg", "pdf", "png"):
            assert (tmp_path / "site" / "figures" / f"{fig_id}.{ext}").stat().st_size > 0


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("softstep_shapes", {"a": 0.8, "b": 0.7}, "need 0 < a < b < 1"),
        ("flops", {"max_log2_n_timed": 13}, "max_log2_n_timed must lie in"),
        ("synthetic_surfaces", {"targets": ["linear", "sine"]}, "targets must be distinct names among"),
    ],
)
@pytest.mark.slow
def test_invalid_parameter_values_fail_with_the_valid_ones(name, bad, message, tmp_path, monkeypatch):
    monkeypatch.setenv("NONA_BUILD", str(tmp_path))
    out = tmp_path / "executed" / f"{name}.ipynb"
    with pytest.raises(Exception, match=message):
        run_notebook(NOTEBOOKS / f"{name}.md", out, bad, timeout=60)
    assert not out.exists()


@pytest.mark.parametrize("profile", profile_names())
def test_every_profile_passes_only_declared_parameters(profile):
    for name in load_profile(profile)["notebooks"]:
        check_parameters(NOTEBOOKS / f"{name}.md", notebook_parameters(profile, name))


def test_profiles_are_written_once():
    # The Snakefile and the notebooks read the profiles; none lists them again.
    assert profile_names() == ["paper", "quick", "smoke"]
    sources = [NOTEBOOKS.parent / "Snakefile", *NOTEBOOKS.glob("*.md")]
    for source in sources:
        text = source.read_text()
        assert '"quick", "paper", "smoke"' not in text and "PROFILES" not in text, source
