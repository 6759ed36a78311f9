"""The package's layers: the head stands alone, and no module imports from a layer above its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nona"
# Bottom to top. The core is every module directly under nona/ (the head, its training loop,
# baselines, estimator); each subpackage may import the core and the layers below it.
LAYERS = ["core", "io", "data", "backbones", "paper", "pipeline"]
# What the core needs: `pip install .` installs these and nothing else.
CORE_DEPENDENCIES = {"torch", "numpy", "scipy", "sklearn", "tqdm"}
# (sympy is not listed: torch itself depends on it.)
COMPANION_ONLY = ["pandas", "matplotlib", "yaml", "scikit_posthocs", "torchvision", "timm", "snakemake", "papermill"]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LAYERS else "core"


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``nona.*`` module that ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "nona" or name.startswith("nona.")}


def third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return {name for name in found if name != "nona" and name not in sys.stdlib_module_names}


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_from_a_layer_above(path):
    own = LAYERS.index(layer_of(module_name(path)))
    above = {m for m in imported_modules(path) if LAYERS.index(layer_of(m)) > own}
    assert not above, f"{module_name(path)} ({LAYERS[own]}) imports from a layer above: {sorted(above)}"


def test_the_core_imports_only_its_own_dependencies():
    core = [p for p in MODULES if layer_of(module_name(p)) == "core"]
    assert {module_name(p) for p in core} >= {"nona", "nona.heads", "nona.train", "nona.baselines", "nona.estimator"}
    used = set().union(*(third_party_imports(p) for p in core))
    assert used <= CORE_DEPENDENCIES, f"the core imports {sorted(used - CORE_DEPENDENCIES)} beyond its dependencies"


def test_the_core_works_without_the_companions_dependencies():
    # As after `pip install .`: the companion's packages cannot be imported (scikit-learn
    # imports pandas when it is installed, so absence is what proves the core needs none).
    code = (
        "import sys\n"
        f"for name in {COMPANION_ONLY!r}: sys.modules[name] = None\n"
        "import numpy as np, torch\n"
        "import nona, nona.train, nona.baselines, nona.estimator\n"
        "x = np.random.default_rng(0).normal(size=(40, 3)); y = x[:, 0]\n"
        "model = nona.NONARegressor(max_epochs=2, random_state=0).fit(x, y)\n"
        "assert model.predict(x).shape == (40,)\n"
        "z = torch.randn(8, 4); print(nona.NONA()(z, z, torch.randn(8), exclude_self=True).shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "torch.Size([8])"


def test_the_declared_core_dependencies_are_exactly_those():
    import tomllib

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    names = {d.split("=")[0].split(">")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert names == {"torch", "numpy", "scipy", "scikit-learn", "tqdm"}
