"""Every model on the MM↔ML spectrum as `forward(batch) -> per-atom energies` (eV)."""

from . import peers
from .base import MODEL_REGISTRY, FFModel, build_model, scatter_sum
from .composite import AtomicReference, Sum
from .deep_potential import DeepPotential
from .descriptor import DescriptorNet
from .dimenet import DimeNet
from .dispersion import D4Dispersion
from .electrostatics import LearnedCoulomb
from .field import FieldResponse
from .graph_mm import GraphMM
from .mm import ClassicalMM
from .morse import MorsePairs
from .painn import PaiNN
from .schnet import SchNet
from .zbl import ZBL

try:  # e3nn is an optional dependency: the MACE-style and linear ACE families register only when it is installed
    from .ace import LinearACE  # noqa: F401
    from .mace import MACE  # noqa: F401
except ImportError:  # pragma: no cover
    pass
# The peers (other projects' models) are optional extras, registered only when installed. mace-torch takes
# seconds to import, so its module imports it only when such a model is built.
if peers.installed("mace_torch"):
    from .mace_torch import MACETorch  # noqa: F401
if peers.installed("torchani"):
    try:  # installed with --no-deps: a broken install must not break ffspace
        from .torchani_peer import TorchANI  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        peers.broken["torchani"] = f"{type(exc).__name__}: {exc}"

__all__ = ["MODEL_REGISTRY", "AtomicReference", "ClassicalMM", "D4Dispersion", "DeepPotential", "DescriptorNet", "DimeNet", "FFModel", "FieldResponse", "GraphMM", "LearnedCoulomb", "MorsePairs", "PaiNN", "SchNet", "Sum", "ZBL", "build_model",
           "scatter_sum"]
