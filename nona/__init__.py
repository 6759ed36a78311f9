"""nona: Nearness of Neighbors Attention regression heads and the companion's tools."""

from nona.heads import NONA, DenseHead, Projector
from nona.neighbour_heads import NCA, DifferentiableKNN
from nona.softstep import SoftStep

__all__ = ["NONA", "NCA", "DifferentiableKNN", "NONARegressor", "SoftStep", "DenseHead", "Projector"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: the estimator pulls in scikit-learn and the training loop,
    # which `import nona.heads` and friends should not pay for.
    if name == "NONARegressor":
        from nona.estimator import NONARegressor

        return NONARegressor
    raise AttributeError(f"module 'nona' has no attribute {name!r}")
