"""Writers: extxyz with explicit label keys (eV, Å)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .structure import matrix_to_voigt


def write_extxyz(path, structures, energy_key: str = "REF_energy", forces_key: str = "REF_forces",
                 stress_key: str = "REF_stress", append: bool = False) -> None:
    """Write structures with labels under explicit keys (never ASE's ambiguous calculator fields)."""
    import ase.io

    frames = []
    for s in structures:
        atoms = s.to_ase()
        for k, v in s.info.items():
            if isinstance(v, (str, int, float, bool, np.integer, np.floating)):
                atoms.info[k] = v
        if s.energy is not None:
            atoms.info[energy_key] = float(s.energy)
        if s.forces is not None:
            atoms.arrays[forces_key] = np.asarray(s.forces, dtype=float)
        if s.stress is not None:
            atoms.info[stress_key] = matrix_to_voigt(s.stress)
        frames.append(atoms)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz", append=append)
