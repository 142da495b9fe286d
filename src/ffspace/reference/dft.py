"""DFT labels through PySCF: any functional and basis, density fitting, D3/D4 dispersion, charge and spin, and a
uniform external electric field.

Energies come out of PySCF in Hartree and gradients in Hartree/bohr; they are converted to eV and
eV/Å here, through `ffspace.units`. An SCF that does not converge is a `LabelFailure` carrying the
reason, never a label.

A structure with ``info["field"]`` ℰ (V/Å) is labelled in that field: −μ̂·ℰ is added to the Hamiltonian (electrons
+ℰ·r in the core Hamiltonian, nuclei −Σ Z_A ℰ·R_A), the forces carry the field's terms (the moving basis functions'
⟨∇μ|r|ν⟩ and the nuclei's Z_A ℰ), and the dipole of the polarized density is written to ``info["dipole"]`` (e·Å).
The origin of r is the molecule's centre of geometry, where `ffspace.models.field` puts it too (only a charged
molecule's energy depends on it). Every label carries the dipole, with or without a field.
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
                 max_memory_mb: int = 4000, unrestricted: bool = False, broken_symmetry: bool = False):
        try:
            import pyscf  # noqa: F401
        except ImportError:
            raise ImportError("DFT labels need PySCF: pip install pyscf") from None
        self.functional, self.basis, self.density_fit = functional, basis, density_fit
        self.dispersion, self.charge, self.multiplicity = dispersion, int(charge), int(multiplicity)
        self.conv_tol, self.conv_tol_grad, self.max_cycle = conv_tol, conv_tol_grad, max_cycle
        self.grid_level, self.max_memory_mb = grid_level, max_memory_mb
        # A bond that breaks homolytically needs UKS from a guess whose α and β HOMOs lean to different atoms (a
        # restricted singlet dissociates to ions, eV too high); near equilibrium the SCF falls back to the closed
        # shell, so one recipe labels a whole dissociation curve.
        self.broken_symmetry = bool(broken_symmetry)
        self.unrestricted = bool(unrestricted) or self.broken_symmetry or self.multiplicity > 1
        if self.multiplicity < 1:
            raise ValueError(f"multiplicity must be ≥ 1 (2S + 1), got {multiplicity}")

    @property
    def method(self) -> str:
        disp = f"-{self.dispersion.upper()}" if self.dispersion else ""
        spin = "U" if self.unrestricted and self.multiplicity == 1 else ""  # open shells are UKS anyway
        return f"{spin}{self.functional}{disp}/{self.basis}" + (" (broken symmetry)" if self.broken_symmetry else "")

    def provenance(self) -> dict:
        import pyscf

        return {"method": self.method, "program": "pyscf", "program_version": pyscf.__version__,
                "functional": self.functional, "basis": self.basis, "density_fit": self.density_fit,
                "dispersion": self.dispersion, "charge": self.charge, "multiplicity": self.multiplicity,
                "conv_tol": self.conv_tol, "grid_level": self.grid_level,
                # only where set, so the label stores' keys of every closed-shell recipe stay what they were
                **({"unrestricted": True} if self.unrestricted and self.multiplicity == 1 else {}),
                # (the recipe's name: labels of the first, HOMO/LUMO-mix-only recipe, wrong in ~5 % of water's
                # far-stretched frames, are never reused)
                **({"broken_symmetry": "lowest of HOMO/LUMO mix and triplet flip"} if self.broken_symmetry else {})}

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

    def _scf(self, mol, cycles: dict, field, origin):
        """A configured (not yet run) SCF object for ``mol``; its cycles are counted in ``cycles["n"]``."""
        from pyscf import dft

        mf = dft.UKS(mol) if self.unrestricted else dft.RKS(mol)
        if self.unrestricted and self.multiplicity == 1:
            # PySCF's UKS guess breaks the spin symmetry of its own accord (init_guess_breaksym): a closed shell
            # starts symmetric here, and only the broken-symmetry guesses break it, the same way every time.
            mf.init_guess_breaksym = 0
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
        if field is not None:  # before `newton()`: its solver builds the core Hamiltonian from the inner object
            _apply_field(mf, mol, field, origin)
        if self.broken_symmetry:
            # second-order SCF: near a bond's Coulson–Fischer point DIIS wanders between the near-degenerate
            # states and may not converge in 100 cycles; Newton steps do
            mf = mf.newton()
        mf.callback = lambda env: cycles.__setitem__("n", cycles["n"] + 1)
        return mf

    def _triplet_flip_guess(self, mf):
        """(α, β) densities of the converged triplet (no field: it is only a start) with its highest α electron
        moved to β: the two unpaired electrons of a broken bond, one of each spin."""
        from pyscf import dft

        triplet = mf.mol.copy()
        triplet.spin = 2
        triplet.build()
        scf = dft.UKS(triplet)
        scf.xc, scf.grids.level, scf.max_cycle = self.functional, self.grid_level, self.max_cycle
        if self.dispersion:
            scf.disp = self.dispersion
        scf = scf.density_fit() if self.density_fit else scf
        scf.kernel()
        (ca, cb), (n_alpha, n_beta) = scf.mo_coeff, scf.nelec
        alpha = ca[:, :n_alpha - 1]
        beta = np.hstack([cb[:, :n_beta], ca[:, n_alpha - 1:n_alpha]])
        return np.stack([alpha @ alpha.T, beta @ beta.T])

    def label(self, structure: Structure) -> Structure:
        mol = self._molecule(structure)
        t0 = time.perf_counter()
        origin = mol.atom_coords().mean(0)  # bohr: the centre of geometry
        field = _field_au(structure)
        if self.broken_symmetry:
            # Two starting points, the lower solution kept (the variational principle: both are S_z = 0 UKS
            # states, and the ground state is the lowest). The HOMO/LUMO mix breaks the right pair near a bond's
            # Coulson–Fischer point; far out (water's O–H beyond ~3.3 Å) the closed-shell HOMO is a lone pair and
            # the mix settled on the ionic OH⁺ + H⁻ state, 8–11 eV too high and internally stable, in 12 of 240
            # frames. One spin flipped in the converged triplet starts from the two radicals and finds the
            # neutral asymptote.
            runs = []
            two_spins = self.multiplicity == 1 and mol.nelectron >= 2  # a triplet needs two electrons
            guesses = (_broken_symmetry_guess,) + ((self._triplet_flip_guess,) if two_spins else ())
            for guess in guesses:
                cycles = {"n": 0}
                mf = self._scf(mol, cycles, field, origin)
                energy_ha = mf.kernel(guess(mf))
                if mf.converged:
                    energy_ha = _follow_instabilities(mf, energy_ha)
                runs.append((not mf.converged, energy_ha, len(runs), mf, cycles))
            _, energy_ha, _, mf, cycles = min(runs)  # a converged run first, then the lowest energy
        else:
            cycles = {"n": 0}
            mf = self._scf(mol, cycles, field, origin)
            energy_ha = mf.kernel()
        if not mf.converged:
            strength = "" if field is None else f", in a field of {np.linalg.norm(structure.info['field']):.3g} V/Å"
            raise LabelFailure(f"SCF not converged in {self.max_cycle} cycles (conv_tol {self.conv_tol}){strength}",
                               structure, {"scf_cycles": cycles["n"], "last_energy_Ha": float(energy_ha)})
        grad = mf.nuc_grad_method()
        if field is not None:
            _field_gradient_hcore(grad, mol, field, origin)
        gradient = np.asarray(grad.kernel())  # Hartree/bohr
        if field is not None:  # the nuclei's energy −Z_A ℰ·(R_A − origin)
            gradient = gradient - mol.atom_charges()[:, None] * field[None, :]
        dipole = np.asarray(mf.dip_moment(unit="AU", origin=origin, verbose=0)) * units.bohr  # e·Å
        info = dict(structure.info)
        info.update({"label_method": self.method, "label_program": "pyscf",
                     "label_wall_s": round(time.perf_counter() - t0, 3), "scf_cycles": cycles["n"], "dipole": dipole})
        return structure.copy(energy=float(energy_ha) * units.hartree,
                              forces=-gradient * units.hartree / units.bohr, info=info)


def _broken_symmetry_guess(mf):
    """(α, β) starting densities with the HOMO and LUMO of the first Fock matrix mixed at 45°, one way for α and
    the other for β (Gaussian's guess=mix): a singlet may then polarize its spins where that lowers the energy."""
    dm = mf.init_guess_by_minao(breaksym=0)  # spin-symmetric (α = β): the closed shell's first Fock matrix
    energies, coeffs = mf.eig(mf.get_fock(dm=dm), mf.get_ovlp())
    c = np.asarray(coeffs[0])
    n_alpha, n_beta = mf.nelec
    if n_alpha != n_beta or n_alpha >= c.shape[1]:
        return dm
    homo, lumo = c[:, n_alpha - 1].copy(), c[:, n_alpha].copy()
    ca, cb = c.copy(), c.copy()
    ca[:, n_alpha - 1], cb[:, n_alpha - 1] = (homo + lumo) / np.sqrt(2), (homo - lumo) / np.sqrt(2)
    return np.stack([ca[:, :n_alpha] @ ca[:, :n_alpha].T, cb[:, :n_beta] @ cb[:, :n_beta].T])


def _follow_instabilities(mf, energy_ha: float, rounds: int = 4) -> float:
    """Restart the SCF along its internal instabilities until the solution is stable (PySCF's stability analysis):
    near a bond's Coulson–Fischer point the mixed guess may still settle on the higher, symmetric state, and two
    geometries 0.001 Å apart then land on states 1 eV apart. Returns the final energy (Hartree)."""
    for _ in range(rounds):
        mo, _, stable, _ = mf.stability(return_status=True)
        if stable:
            break
        energy_ha = mf.kernel(mf.make_rdm1(mo, mf.mo_occ))
        if not mf.converged:
            break
    return energy_ha


def _field_au(structure: Structure):
    """The structure's external field in atomic units (Hartree/(e·bohr)), None when it has none or it is zero."""
    field = structure.info.get("field")
    if field is None or not np.any(field):
        return None
    return np.asarray(field, dtype=np.float64) / units.FIELD_AU_V_A


def _apply_field(mf, mol, field, origin) -> None:
    """+ℰ·(r − origin) for the electrons in the core Hamiltonian, −Σ Z_A ℰ·(R_A − origin) for the nuclei."""
    with mol.with_common_orig(origin):
        h_field = np.einsum("x,xij->ij", field, mol.intor("int1e_r", comp=3))
    core, nuclear = mf.get_hcore, mf.energy_nuc
    e_nuc = -float(field @ (mol.atom_charges() @ (mol.atom_coords() - origin)))
    mf.get_hcore = lambda *args, **kwargs: core(*args, **kwargs) + h_field
    mf.energy_nuc = lambda *args, **kwargs: nuclear(*args, **kwargs) + e_nuc


def _field_gradient_hcore(grad, mol, field, origin) -> None:
    """The core Hamiltonian's derivative in the gradient gets the field's ⟨∇_x μ|ℰ·(r − origin)|ν⟩ (PySCF's
    gradient objects return −⟨∇μ|h|ν⟩; int1e_irp is ⟨μ|r_k ∇_x|ν⟩, component 3k + x, so the bra derivative is its
    transpose)."""
    nao = mol.nao_nr()
    with mol.with_common_orig(origin):
        irp = mol.intor("int1e_irp", comp=9, hermi=0).reshape(3, 3, nao, nao)
    ip_field = np.einsum("k,kxij->xji", field, irp)
    core = grad.get_hcore
    grad.get_hcore = lambda *args, **kwargs: core(*args, **kwargs) - ip_field
