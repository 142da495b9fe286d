"""Writers: extxyz with explicit label keys (eV, Å), and an exact array copy of a dataset (`write_arrays`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .structure import VECTOR_INFO, matrix_to_voigt


def write_extxyz(path, structures, energy_key: str = "REF_energy", forces_key: str = "REF_forces",
                 stress_key: str = "REF_stress", append: bool = False, dipole_key: str = "REF_dipole") -> None:
    """Write structures with labels under explicit keys (never ASE's ambiguous calculator fields: ASE would read
    a plain ``dipole`` back as a calculator result)."""
    import ase.io

    frames = []
    for s in structures:
        atoms = s.to_ase()
        for k, v in s.info.items():
            if isinstance(v, (str, int, float, bool, np.integer, np.floating)):
                atoms.info[k] = v
            elif k in VECTOR_INFO and v is not None:  # field (V/Å), dipole (e·Å): three numbers
                atoms.info[dipole_key if k == "dipole" else k] = np.asarray(v, dtype=float)
        if s.energy is not None:
            atoms.info[energy_key] = float(s.energy)
        if s.forces is not None:
            atoms.arrays[forces_key] = np.asarray(s.forces, dtype=float)
        if s.stress is not None:
            atoms.info[stress_key] = matrix_to_voigt(s.stress)
        frames.append(atoms)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz", append=append)


def _plain(value):
    """JSON for numpy values in ``Structure.info``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def write_arrays(path, dataset):
    """Every structure of ``dataset`` bit for bit in one ``.npz`` of plain arrays (`readers.read_arrays` loads
    it without pickles): positions, cells and labels as float64, ``info``, sources and frames as JSON."""
    s = list(dataset)
    meta = {"name": dataset.name, "info": [x.info for x in s], "source": [x.source for x in s],
            "frame": [x.frame for x in s]}
    np.savez(path, n_atoms=np.array([x.n_atoms for x in s], dtype=np.int64),
             numbers=np.concatenate([x.numbers for x in s]), positions=np.concatenate([x.positions for x in s]),
             cell=np.stack([x.cell for x in s]), pbc=np.stack([x.pbc for x in s]),
             energy=np.array([np.nan if x.energy is None else x.energy for x in s]),
             has_energy=np.array([x.energy is not None for x in s]),
             forces=np.concatenate([np.zeros((x.n_atoms, 3)) if x.forces is None else x.forces for x in s]),
             has_forces=np.array([x.forces is not None for x in s]),
             stress=np.stack([np.zeros((3, 3)) if x.stress is None else x.stress for x in s]),
             has_stress=np.array([x.stress is not None for x in s]),
             meta=np.array(json.dumps(meta, default=_plain)))
