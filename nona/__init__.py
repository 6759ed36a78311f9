"""nona: Nearness of Neighbors Attention regression heads and the companion's tools."""

from nona.heads import NONA, DenseHead, Projector
from nona.neighbour_heads import NCA, DifferentiableKNN
from nona.softstep import SoftStep

__all__ = ["NONA", "NCA", "DifferentiableKNN", "SoftStep", "DenseHead", "Projector"]
__version__ = "0.1.0"
