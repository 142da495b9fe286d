"""DFT labels through PySCF: any functional and basis, density fitting, D3/D4 dispersion, charge and spin.

Energies come out of PySCF in Hartree and gradients in Hartree/bohr; they are converted to eV and
eV/Å here, through `ffspace.units`. An SCF that does not converge is a `LabelFailure` carrying the
reason, never a label.
"""

from __future__ import annotations

import time

import numpy as np

from .. import units
from ..data.structure import Structure
from ..errors import DataError
from .base import LabelFailure


class PySCFLabeler:
    """Kohn–Sham DFT (RKS/UKS) energies and analytic forces for molecules.

    ``dispersion``: None, ``"d3bj"``, ``"d3zero"`` or ``"d4"`` (through PySCF's dispersion interface,
    package pyscf-dispersion). ``multiplicity`` = 2S + 1; open shells use UKS.
    """

    def __init__(self, functional: str = "PBE", basis: str = "def2-SVP", density_fit: bool = True,
                 dispersion: str | None = None, charge: int = 0, multiplicity: int = 1, conv_tol: float = 1e-10,
                 conv_tol_grad: float | None = None, max_cycle: int = 100, grid_level: int = 3,
                 max_memory_mb: int = 4000):
        try:
            import pyscf  # noqa: F401
        except ImportError:
            raise ImportError("DFT labels need PySCF: pip install pyscf") from None
        self.functional, self.basis, self.density_fit = functional, basis, density_fit
        self.dispersion, self.charge, self.multiplicity = dispersion, int(charge), int(multiplicity)
        self.conv_tol, self.conv_tol_grad, self.max_cycle = conv_tol, conv_tol_grad, max_cycle
        self.grid_level, self.max_memory_mb = grid_level, max_memory_mb
        if self.multiplicity < 1:
            raise ValueError(f"multiplicity must be ≥ 1 (2S + 1), got {multiplicity}")

    @property
    def method(self) -> str:
        disp = f"-{self.dispersion.upper()}" if self.dispersion else ""
        return f"{self.functional}{disp}/{self.basis}"

    def provenance(self) -> dict:
        import pyscf

        return {"method": self.method, "program": "pyscf", "program_version": pyscf.__version__,
                "functional": self.functional, "basis": self.basis, "density_fit": self.density_fit,
                "dispersion": self.dispersion, "charge": self.charge, "multiplicity": self.multiplicity,
                "conv_tol": self.conv_tol, "grid_level": self.grid_level}

    def _molecule(self, structure: Structure):
        from pyscf import gto

        if structure.pbc.any():
            raise DataError("the PySCF labeler handles molecules only (no periodic cell)",
                            file=structure.source, frame=structure.frame, field="pbc")
        n_electrons = int(structure.numbers.sum()) - self.charge
        spin = self.multiplicity - 1
        if n_electrons < 0 or (n_electrons - spin) % 2 or spin > n_electrons:
            raise DataError(f"charge {self.charge} and multiplicity {self.multiplicity} are impossible for "
                            f"{n_electrons} electrons", file=structure.source, frame=structure.frame,
                            field="charge/multiplicity")
        atom = [(int(z), tuple(p)) for z, p in zip(structure.numbers, structure.positions)]
        try:
            return gto.M(atom=atom, basis=self.basis, charge=self.charge, spin=spin, unit="Angstrom",
                         verbose=0, max_memory=self.max_memory_mb)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise DataError(f"PySCF cannot build the molecule with basis {self.basis}: {exc}",
                            file=structure.source, frame=structure.frame, field="numbers") from None

    def label(self, structure: Structure) -> Structure:
        from pyscf import dft

        mol = self._molecule(structure)
        t0 = time.perf_counter()
        mf = dft.RKS(mol) if self.multiplicity == 1 else dft.UKS(mol)
        mf.xc = self.functional
        mf.grids.level = self.grid_level
        mf.conv_tol = self.conv_tol
        if self.conv_tol_grad is not None:
            mf.conv_tol_grad = self.conv_tol_grad
        mf.max_cycle = self.max_cycle
        if self.dispersion:
            mf.disp = self.dispersion
        if self.density_fit:
            mf = mf.density_fit()
        cycles = {"n": 0}
        mf.callback = lambda env: cycles.__setitem__("n", cycles["n"] + 1)
        energy_ha = mf.kernel()
        if not mf.converged:
            raise LabelFailure(f"SCF not converged in {self.max_cycle} cycles (conv_tol {self.conv_tol})",
                               structure, {"scf_cycles": cycles["n"], "last_energy_Ha": float(energy_ha)})
        gradient = mf.nuc_grad_method().kernel()  # Hartree/bohr
        info = dict(structure.info)
        info.update({"label_method": self.method, "label_program": "pyscf",
                     "label_wall_s": round(time.perf_counter() - t0, 3), "scf_cycles": cycles["n"]})
        return structure.copy(energy=float(energy_ha) * units.hartree,
                              forces=-np.asarray(gradient) * units.hartree / units.bohr, info=info)
