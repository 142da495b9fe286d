"""Every model on the MM↔ML spectrum as `forward(batch) -> per-atom energies` (eV)."""

from .base import MODEL_REGISTRY, FFModel, build_model, scatter_sum
from .composite import AtomicReference, Sum
from .descriptor import DescriptorNet
from .dispersion import D4Dispersion
from .electrostatics import LearnedCoulomb
from .graph_mm import GraphMM
from .mm import ClassicalMM
from .painn import PaiNN
from .schnet import SchNet
from .zbl import ZBL

try:  # e3nn is an optional dependency: the MACE-style family registers only when it is installed
    from .mace import MACE  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["MODEL_REGISTRY", "AtomicReference", "ClassicalMM", "D4Dispersion", "DescriptorNet", "FFModel", "GraphMM", "LearnedCoulomb", "PaiNN", "SchNet", "Sum", "ZBL", "build_model",
           "scatter_sum"]
