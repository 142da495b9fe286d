"""What every labeler shares: the failure type and the interface (``label``, ``provenance``)."""

from __future__ import annotations

from typing import Protocol

from ..data.structure import Structure
from ..errors import FFSpaceError


class LabelFailure(FFSpaceError):
    """A reference calculation that finished without a usable label (e.g. SCF not converged).

    It is recorded in the store's failures.jsonl with its reason, never stored as a label.
    """

    def __init__(self, message: str, structure: Structure | None = None, details: dict | None = None):
        self.details = details or {}
        where = structure.where() if structure is not None else ""
        super().__init__(f"{where}: {message}" if where else message)


class Labeler(Protocol):
    def label(self, structure: Structure) -> Structure: ...

    def provenance(self) -> dict: ...
