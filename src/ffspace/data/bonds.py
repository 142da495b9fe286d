"""Covalent bonds: the one rule ffspace perceives them by.

Two atoms are bonded when they are closer than ``scale`` × (R_i + R_j), the sum of their covalent radii (ASE's
table, Cordero et al. 2008), with ``scale`` = `BOND_SCALE` = 1.2 unless a caller says otherwise. The MM
topologies, the MD stability rule (bench and the default MD monitor), the torsion-scan sampler and the unit check
of training labels all use this rule, through `bond_reach` (torch or numpy, for code that already has its pair
distances) or `covalent_bonds` (a structure's bonds, periodic images included).
"""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii

BOND_SCALE = 1.2


def bond_reach(zi, zj, scale: float = BOND_SCALE):
    """``scale`` × (R_i + R_j) in Å for atomic numbers ``zi``, ``zj`` (numpy arrays or torch tensors alike)."""
    if hasattr(zi, "new_tensor"):  # torch: stay on the tensors' device, in their float dtype where possible
        import torch

        radii = torch.as_tensor(covalent_radii, dtype=torch.float64, device=zi.device)
        return scale * (radii[zi] + radii[zj])
    return scale * (covalent_radii[np.asarray(zi)] + covalent_radii[np.asarray(zj)])


def covalent_bonds(numbers, positions, cell=None, pbc=None, scale: float = BOND_SCALE):
    """Bonded pairs of one structure as ``(i, j, shifts)``, each bond once with i ≤ j: the bond vector is
    ``positions[j] - positions[i] + shifts @ cell``. Molecules need no cell."""
    numbers = np.asarray(numbers, dtype=np.int64)
    positions = np.asarray(positions, dtype=np.float64)
    periodic = pbc is not None and bool(np.any(pbc))
    n = len(numbers)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros((0, 3), dtype=np.int64)
    if not periodic and n <= 300:
        # Small molecules: all pairs in numpy is faster than any cell list.
        i, j = np.triu_indices(n, k=1)
        d = np.linalg.norm(positions[j] - positions[i], axis=1)
        shifts = np.zeros((len(i), 3), dtype=np.int64)
    else:
        import vesin  # directly: `data` sits left of `graph`

        longest = float(scale * 2 * covalent_radii[np.unique(numbers)].max())
        nl = vesin.NeighborList(cutoff=longest, full_list=False)
        box = np.asarray(cell, dtype=np.float64) if periodic else np.zeros((3, 3))
        i, j, shifts, d = nl.compute(positions, box, np.asarray(pbc, dtype=bool) if periodic else False, "ijSd")
        i, j, shifts = i.astype(np.int64), j.astype(np.int64), shifts.astype(np.int64)
        swap = i > j  # the same bond seen from j: i ≤ j always, the shift turned around with it
        i, j, shifts = np.where(swap, j, i), np.where(swap, i, j), np.where(swap[:, None], -shifts, shifts)
    keep = d < bond_reach(numbers[i], numbers[j], scale)
    return i[keep], j[keep], shifts[keep]


def bond_lengths(positions, bonds, cell=None) -> np.ndarray:
    """Lengths (Å) of ``bonds`` = ``(i, j, shifts)`` at ``positions`` (positions continuous, never re-wrapped)."""
    i, j, shifts = bonds
    vec = positions[j] - positions[i]
    if cell is not None and len(shifts):
        vec = vec + shifts @ np.asarray(cell, dtype=np.float64)
    return np.linalg.norm(vec, axis=-1)
