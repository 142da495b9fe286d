"""`Structure`: one atomic configuration with optional reference labels (float64 numpy, eV/Å)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import vesin
from ase.data import chemical_symbols

from ..errors import DataError


# Vectors a structure may carry in ``info``: name -> unit.
VECTOR_INFO = {"field": "V/Å, uniform external electric field", "dipole": "e·Å, reference dipole moment"}


@dataclass
class Structure:
    """One configuration.

    numbers: (N,) atomic numbers; positions: (N, 3) Å; cell: (3, 3) Å with lattice vectors as
    rows (zeros when not periodic); pbc: (3,) bools. Labels are optional: energy (eV), forces
    (N, 3) eV/Å, stress (3, 3) eV/Å³ with ASE's sign. ``source`` and ``frame`` say where the
    structure was read from, so every later error can point back at the input.

    Two optional vectors live in ``info`` (so every reader, writer and store carries them as they are):
    ``info["field"]``, a uniform external electric field (3,) in V/Å that the structure is in (an input, like
    the cell), and ``info["dipole"]``, the reference dipole moment (3,) in e·Å (a label; 1 D = 0.20819 e·Å).
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    source: str | None = None
    frame: int | None = None

    def __post_init__(self):
        # Always copy: a Structure must never alias its source (e.g. the live arrays of an ASE Atoms
        # that an MD sampler keeps moving), or every sampled frame would be the last one.
        self.numbers = np.array(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.array(self.positions, dtype=np.float64)
        self.cell = np.array(self.cell, dtype=np.float64)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        if self.energy is not None:
            self.energy = float(np.asarray(self.energy).reshape(()))
        if self.forces is not None:
            self.forces = np.array(self.forces, dtype=np.float64)
        if self.stress is not None:
            s = np.array(self.stress, dtype=np.float64)
            self.stress = voigt_to_matrix(s) if s.shape == (6,) else (s.reshape(3, 3) if s.shape == (9,) else s)
        for key in VECTOR_INFO:
            if key in self.info and self.info[key] is not None:
                try:
                    self.info[key] = np.array(self.info[key], dtype=np.float64)
                except (TypeError, ValueError):
                    raise self._error(f"{key} {self.info[key]!r} is not a vector of numbers "
                                      f"({VECTOR_INFO[key]})", key) from None
        self.validate()

    # ------------------------------------------------------------------------------------
    def _error(self, message: str, fieldname: str) -> DataError:
        return DataError(message, file=self.source, frame=self.frame, field=fieldname)

    def validate(self, min_distance: float = 0.1) -> None:
        """Check shapes, finiteness, elements and overlapping atoms; raise `DataError` naming the field."""
        n = len(self.numbers)
        if n == 0:
            raise self._error("structure has no atoms", "numbers")
        if self.positions.shape != (n, 3):
            raise self._error(f"positions have shape {self.positions.shape}, expected ({n}, 3)", "positions")
        bad = (self.numbers < 1) | (self.numbers >= len(chemical_symbols))
        if bad.any():
            raise self._error(f"unknown atomic number(s) {sorted(set(self.numbers[bad].tolist()))}", "numbers")
        if not np.isfinite(self.positions).all():
            atoms = np.where(~np.isfinite(self.positions).all(axis=1))[0]
            raise self._error(f"non-finite positions for atoms {atoms[:10].tolist()}", "positions")
        if self.cell.shape != (3, 3):
            raise self._error(f"cell has shape {self.cell.shape}, expected (3, 3)", "cell")
        if not np.isfinite(self.cell).all():
            raise self._error("non-finite cell", "cell")
        if self.pbc.any() and abs(np.linalg.det(self.cell)) < 1e-6:
            raise self._error("periodic structure with a singular (zero-volume) cell", "cell")
        if self.energy is not None and not np.isfinite(self.energy):
            raise self._error(f"energy is {self.energy}", "energy")
        if self.forces is not None:
            if self.forces.shape != (n, 3):
                raise self._error(f"forces have shape {self.forces.shape}, expected ({n}, 3)", "forces")
            if not np.isfinite(self.forces).all():
                atoms = np.where(~np.isfinite(self.forces).all(axis=1))[0]
                raise self._error(f"non-finite forces on atoms {atoms[:10].tolist()}", "forces")
        if self.stress is not None:
            if self.stress.shape != (3, 3):
                raise self._error(f"stress has shape {self.stress.shape}, expected (3, 3) or Voigt (6,)", "stress")
            if not np.isfinite(self.stress).all():
                raise self._error("non-finite stress", "stress")
        for key, unit in VECTOR_INFO.items():
            value = self.info.get(key)
            if value is None:
                continue
            if np.shape(value) != (3,):
                raise self._error(f"{key} has shape {np.shape(value)}, expected (3,) ({unit})", key)
            if not np.isfinite(value).all():
                raise self._error(f"{key} {np.asarray(value).tolist()} is not finite ({unit})", key)
        if "charge" in self.info:
            charge = self.info["charge"]
            if isinstance(charge, bool) or not isinstance(charge, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(charge):
                raise self._error(f"total charge {charge!r} is not a finite number (elementary charges)", "charge")
        self._check_overlaps(min_distance)

    def _check_overlaps(self, min_distance: float) -> None:
        if len(self.numbers) < 2:
            return
        if not self.pbc.any() and len(self.numbers) <= 300:
            # Small molecules: all pairs in numpy is faster than building any cell list.
            iu, ju = np.triu_indices(len(self.numbers), k=1)
            d = np.linalg.norm(self.positions[iu] - self.positions[ju], axis=1)
        else:
            # vesin directly (`data` sits left of `graph`); a 1 Å grid keeps the cell list small.
            nl = vesin.NeighborList(cutoff=max(1.0, min_distance), full_list=False)
            box = self.cell if self.pbc.any() else np.zeros((3, 3))
            iu, ju, d = nl.compute(self.positions, box, self.pbc if self.pbc.any() else False, "ijd")
        close = d < min_distance
        i, j, d = iu[close], ju[close], d[close]
        if len(i):
            k = int(np.argmin(d))
            raise self._error(
                f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3g} Å apart (on top of each other; "
                f"{len(i)} pair(s) closer than {min_distance} Å)", "positions")

    # ------------------------------------------------------------------------------------
    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))

    @property
    def formula(self) -> str:
        return self.to_ase().get_chemical_formula()

    def where(self) -> str:
        """Human-readable origin for messages: ``file.xyz, frame 12``."""
        parts = [self.source or "<memory>"]
        if self.frame is not None:
            parts.append(f"frame {self.frame}")
        return ", ".join(parts)

    def to_ase(self):
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)

    @classmethod
    def from_ase(cls, atoms, *, energy=None, forces=None, stress=None, info=None, source=None, frame=None):
        """A `Structure` of an ASE ``Atoms``. ``info`` defaults to a copy of ``atoms.info``; the total charge is
        ``atoms.info["charge"]`` or, when that is absent, the sum of the atoms' initial charges (ASE's two
        conventions), so charge-aware models see a charged molecule as charged."""
        info = dict(atoms.info if info is None else info)
        if "charge" not in info:
            charge = total_charge(atoms)
            if charge:
                info["charge"] = charge
        return cls(numbers=atoms.numbers, positions=atoms.positions, cell=np.array(atoms.cell),
                   pbc=atoms.pbc, energy=energy, forces=forces, stress=stress,
                   info=info, source=source, frame=frame)

    def copy(self, **changes) -> "Structure":
        values = dict(numbers=self.numbers.copy(), positions=self.positions.copy(), cell=self.cell.copy(),
                      pbc=self.pbc.copy(), energy=self.energy,
                      forces=None if self.forces is None else self.forces.copy(),
                      stress=None if self.stress is None else self.stress.copy(),
                      info={k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.info.items()},
                      source=self.source, frame=self.frame)
        values.update(changes)
        return Structure(**values)


def total_charge(atoms) -> float:
    """An ASE ``Atoms``' total charge: ``info["charge"]``, else the sum of its initial charges (0 when neither)."""
    if "charge" in atoms.info:
        return atoms.info["charge"]
    if atoms.has("initial_charges"):
        return float(np.round(atoms.get_initial_charges().sum(), 9))
    return 0.0


def voigt_to_matrix(s: np.ndarray) -> np.ndarray:
    """ASE Voigt order (xx, yy, zz, yz, xz, xy) to a symmetric 3×3 matrix."""
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]], dtype=np.float64)


def matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]], dtype=np.float64)
