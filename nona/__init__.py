"""nona: Nearness of Neighbors Attention regression heads and the companion's tools."""

__all__ = ["NONA", "NCA", "DifferentiableKNN", "NONARegressor", "SoftStep", "DenseHead", "Projector"]
__version__ = "0.1.0"

# Each public name and the module that defines it. They are imported on first use, so that
# tools that need no torch (`nona data list`, the site's configuration) start without it.
_LAZY = {
    "NONA": "nona.heads",
    "DenseHead": "nona.heads",
    "Projector": "nona.heads",
    "NCA": "nona.neighbour_heads",
    "DifferentiableKNN": "nona.neighbour_heads",
    "SoftStep": "nona.softstep",
    "NONARegressor": "nona.estimator",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nona' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
