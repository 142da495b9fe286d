"""GFN2-xTB labels through tblite: the fast reference method for exploration and shipped defaults."""

from __future__ import annotations

import time

import numpy as np

from ..data.structure import Structure
from ..errors import DataError
from .base import LabelFailure


class XTBLabeler:
    """Label structures with energy and forces (and stress for periodic cells) from tblite.

    tblite's ASE calculator returns eV and eV/Å already, so no conversion happens here.
    """

    def __init__(self, method: str = "GFN2-xTB", charge: int = 0, multiplicity: int = 1,
                 accuracy: float = 1.0, electronic_temperature: float = 300.0, max_iterations: int = 250):
        if multiplicity < 1:
            raise ValueError(f"multiplicity must be ≥ 1 (2S + 1), got {multiplicity}")
        try:
            import tblite  # noqa: F401
        except ImportError:
            raise ImportError("GFN2-xTB labels need tblite: pip install tblite") from None
        self.method, self.charge, self.multiplicity = method, charge, multiplicity
        self.settings = dict(accuracy=accuracy, electronic_temperature=electronic_temperature,
                             max_iterations=max_iterations)

    def provenance(self) -> dict:
        from importlib.metadata import version

        return {"method": self.method, "program": "tblite", "program_version": version("tblite"),
                "charge": self.charge, "multiplicity": self.multiplicity, **self.settings}

    def calculator(self):
        from tblite.ase import TBLite

        return TBLite(method=self.method, charge=self.charge, multiplicity=self.multiplicity, verbosity=0,
                      **self.settings)

    def check(self, structure: Structure) -> None:
        """Raise a `DataError` for elements GFN2-xTB lacks (Z > 86) or an impossible charge/spin."""
        bad = sorted(set(int(z) for z in structure.numbers if z > 86))
        if bad:
            raise DataError(f"{self.method} has no parameters for atomic number(s) {bad} (H–Rn only)",
                            file=structure.source, frame=structure.frame, field="numbers")
        n_electrons = int(structure.numbers.sum()) - self.charge
        unpaired = self.multiplicity - 1
        if n_electrons < 0 or unpaired > n_electrons or (n_electrons - unpaired) % 2:
            raise DataError(f"charge {self.charge} and multiplicity {self.multiplicity} are impossible for "
                            f"{n_electrons} electrons", file=structure.source, frame=structure.frame,
                            field="charge/multiplicity")

    def label(self, structure: Structure) -> Structure:
        """Return a copy of ``structure`` with energy, forces (and stress if periodic) from xTB.

        A fresh calculator per structure: reusing one would start each SCF from the previous
        wavefunction, making labels depend (at ~1e-4 eV/Å) on the order frames were labeled in.
        """
        self.check(structure)
        atoms = structure.to_ase()
        atoms.calc = self.calculator()
        t0 = time.perf_counter()
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
            stress = atoms.get_stress(voigt=True) if structure.pbc.any() else None
        except Exception as exc:  # tblite raises a plain exception for SCF failures and bad input
            raise LabelFailure(f"{self.method} failed: {exc}", structure) from exc
        info = dict(structure.info)
        info.update({"label_method": self.method, "label_program": "tblite",
                     "label_wall_s": round(time.perf_counter() - t0, 6)})
        return structure.copy(energy=float(energy), forces=np.asarray(forces, dtype=float),
                              stress=stress, info=info)
