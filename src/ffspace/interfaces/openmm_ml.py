"""Any ffspace model as an OpenMM force, through ``openmm.PythonForce`` (OpenMM ≥ 8.3): every family, molecules
and periodic boxes, the whole system or a subset of its particles (the ML part of an ML/MM system).

OpenMM works in nm, kJ/mol and kJ/mol/nm; the model in Å and eV. The conversion happens here and nowhere else.
Each force evaluation goes through ffspace's MD evaluator (a Verlet neighbour list kept across steps, the fast
path's kernel called from numpy where the family has one), so the cost per step is ffspace's plus OpenMM's Python
round trip. (OpenMM-Torch would keep the evaluation in C++ but
needs a TorchScript export of each family: not tried yet.)
"""

from __future__ import annotations

import numpy as np

from .. import units
from ..data.structure import Structure
from ..errors import ConfigError
from ..potential import Potential


def _openmm():
    try:
        import openmm
        from openmm import unit
    except ImportError:
        raise ImportError("the OpenMM interface needs OpenMM: pip install 'ffspace[openmm]' (or openmm)") from None
    if not hasattr(openmm, "PythonForce"):
        raise ImportError(f"OpenMM {openmm.__version__} has no PythonForce (OpenMM 8.3 or later has)")
    return openmm, unit


class ModelComputation:
    """What OpenMM calls each step: State (nm) → (energy kJ/mol, forces kJ/mol/nm) from an ffspace `Potential`.

    Picklable, because OpenMM serializes a System's PythonForce by pickling it (``XmlSerializer``, ``copy``, and
    openmmtools, which copies Systems for every thermodynamic state): the pickle holds the model as a package
    (safetensors + JSON, the bytes of `save_package`), never the torch objects, and is loaded back with
    `Potential.load`. (The serialized System is still a pickle: load such XML, or openmmtools' storage, only from
    sources you trust. The device is kept as given, e.g. ``cuda:0``.)"""

    def __init__(self, potential: Potential, numbers, periodic: bool, charge: float = 0.0,
                 molecule_in_box: bool = False):
        """``molecule_in_box``: the atoms are one molecule inside a periodic System (ML/MM): OpenMM passes the box,
        the molecule is made whole by the minimum image from its first atom (platforms may hand over wrapped
        coordinates) and evaluated as a molecule, without periodic images."""
        potential.check_total_charge(charge)
        self.potential, self.numbers, self.periodic = potential, np.asarray(numbers), periodic
        self.molecule_in_box = molecule_in_box
        self.info = {"charge": charge} if charge else {}
        self._forces, self._cell = None, None

    def __getstate__(self):
        import tempfile
        from pathlib import Path

        from ..potential.package import save_package

        with tempfile.TemporaryDirectory() as tmp:
            path = save_package(Path(tmp) / "model.safetensors", self.potential.model)
            package = path.read_bytes()
        return {"package": package, "dtype": str(self.potential.dtype).removeprefix("torch."),
                "device": str(self.potential.device), "fast": self.potential.fast is not None,
                "numbers": self.numbers, "periodic": self.periodic, "info": self.info,
                "molecule_in_box": self.molecule_in_box, "trained_charges": self.potential.trained_charges}

    def __setstate__(self, state):
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            path.write_bytes(state["package"])
            potential = Potential.load(path, dtype=state["dtype"], device=state["device"],
                                       fast="auto" if state["fast"] else False)
        # (the bytes above are the model alone: the package's record of its training charges travels beside them)
        potential.trained_charges = state.get("trained_charges")
        self.__init__(potential, state["numbers"], state["periodic"], state["info"].get("charge", 0.0),
                      state.get("molecule_in_box", False))

    def structure(self, state) -> Structure:
        _, unit = _openmm()
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer) * units.nm
        cell = np.zeros((3, 3))
        if self.periodic or self.molecule_in_box:
            cell = np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)) * units.nm
        if self.molecule_in_box:
            positions, cell = whole_molecule(positions, cell), np.zeros((3, 3))
        return Structure(numbers=self.numbers, positions=positions, cell=cell, pbc=self.periodic,
                         info=dict(self.info))

    def __call__(self, state):
        s = self.structure(state)
        # ffspace's MD evaluator: a Verlet neighbour list kept across steps and the fast path's kernel called
        # straight from numpy; made again when the box changes (a barostat).
        if self._forces is None or not np.array_equal(s.cell, self._cell):
            from ..md.integrators import MDState
            from ..md.simulation import PotentialForces

            self._forces, self._cell = PotentialForces(self.potential, MDState(s)), s.cell.copy()
        energy, forces = self._forces(s.positions)
        return energy / units.kJ_per_mol, np.asarray(forces, dtype=np.float64) / units.kJ_per_mol * units.nm


def whole_molecule(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """``positions`` (Å) of one molecule in a periodic ``cell`` (rows), each atom moved to its image nearest the
    first atom. Refused when the molecule spans half the box (the nearest image would then be ambiguous)."""
    frac = np.linalg.solve(cell.T, (positions - positions[0]).T).T
    frac -= np.round(frac)
    whole = positions[0] + frac @ cell
    heights = np.abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    if np.ptp(whole, axis=0).max() >= 0.5 * heights.min():
        raise ConfigError(f"the ML molecule spans {np.ptp(whole, axis=0).max():.1f} Å, half the box's "
                          f"{heights.min():.1f} Å or more: use a larger box")
    return whole


def openmm_force(model, numbers, periodic: bool = False, particles=None, dtype: str = "float64",
                 device: str = "cpu", charge: float = 0.0, molecule_in_box: bool = False):
    """An ``openmm.PythonForce`` holding ``model`` (a package path, ``builtin:NAME`` or a `Potential`) for atoms of
    atomic ``numbers``; ``particles``: their indices in the System when the model covers only part of it (ML/MM).
    A model that does not know an element of ``numbers`` is refused here, before any step."""
    openmm, _ = _openmm()
    potential = model if isinstance(model, Potential) else Potential.load(model, dtype=dtype, device=device)
    numbers = np.asarray(numbers, dtype=np.int64)
    known = set(potential.model.elements)  # (none: a universal term such as ZBL takes every element)
    unknown = sorted(set(numbers.tolist()) - known) if known else []
    if unknown:
        from ase.data import chemical_symbols

        raise ConfigError(f"the model knows elements {[chemical_symbols[z] for z in potential.model.elements]}; "
                          f"the OpenMM atoms also have {[chemical_symbols[z] for z in unknown]}")
    if particles is not None and len(particles) != len(numbers):
        raise ConfigError(f"{len(particles)} particle indices for {len(numbers)} atoms")
    if periodic and molecule_in_box:
        raise ConfigError("periodic (a periodic model input) and molecule_in_box (a molecule in a periodic System) "
                          "exclude each other")
    force = openmm.PythonForce(ModelComputation(potential, numbers, periodic, charge, molecule_in_box))
    force.setUsesPeriodicBoundaryConditions(bool(periodic or molecule_in_box))
    force.setName("ffspace")
    if particles is not None:
        force.setParticles([int(i) for i in particles])
    return force


def openmm_system(model, structure: Structure, dtype: str = "float64", device: str = "cpu"):
    """An ``openmm.System`` of ``structure``'s atoms (masses from ASE), its periodic box if it has one, and the
    model as its only force."""
    openmm, unit = _openmm()
    from ase.data import atomic_masses

    system = openmm.System()
    for z in structure.numbers:
        system.addParticle(float(atomic_masses[z]) * unit.amu)
    periodic = bool(structure.pbc.any())
    if periodic:
        if not structure.pbc.all():
            raise ConfigError("OpenMM needs periodic boundaries in all three directions or none")
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*(row / units.nm)) * unit.nanometer
                                              for row in structure.cell])
    system.addForce(openmm_force(model, structure.numbers, periodic, dtype=dtype, device=device,
                                 charge=float(structure.info.get("charge", 0.0))))
    return system


def openmm_positions(structure: Structure):
    """``structure``'s positions as OpenMM wants them (nm)."""
    _, unit = _openmm()
    return structure.positions / units.nm * unit.nanometer
