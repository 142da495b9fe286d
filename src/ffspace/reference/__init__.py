"""Reference labels from real quantum-chemistry engines, and samplers that make configurations."""

from .sampling import md_sample
from .xtb import XTBLabeler

__all__ = ["XTBLabeler", "md_sample"]
