"""Reference labels from real quantum-chemistry engines (GFN2-xTB via tblite, DFT via PySCF), samplers,
a crash-safe label store, and local / Dask execution."""

from .base import LabelFailure
from .sampling import md_sample, normal_mode_sample, rattle
from .store import LabelStore
from .xtb import XTBLabeler

__all__ = ["LabelFailure", "LabelStore", "XTBLabeler", "md_sample", "normal_mode_sample", "rattle"]
