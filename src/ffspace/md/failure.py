"""When an MD run has failed, and why: one set of rules for the stability benchmark and the active-learning
exploration.

A run fails when a covalent bond perceived at the start (closer than 1.2 × the sum of covalent radii) deviates from
its start length by more than ``tolerance`` (0.5 Å; Fu et al., "Forces are not enough", TMLR 2023, use the same
deviation from equilibrium lengths), when two atoms come closer than ``min_distance`` (0.6 Å), or when its energy
or positions are not finite. A reaction the reference method would also make (a proton transfer) counts as a
failure too: the rules measure staying near the start's bonding. In reactive mode (``tolerance`` None) bonds may
break and form: only collisions and non-finite values fail a run.
"""

from __future__ import annotations

import numpy as np

from ..data.bonds import covalent_bonds as bonds_of
from ..data.structure import Structure

MIN_DISTANCE = 0.6  # Å: two atoms closer than this have collided
BOND_TOLERANCE = 0.5  # Å: a bond this far from its start length has broken (or been crushed)


def start_bonds(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """(B, 2) atom pairs bonded at the start (`ffspace.data.bonds`) and (B,) their lengths in Å."""
    i, j, _ = bonds_of(structure.numbers, structure.positions)
    bonds = np.stack([i, j], 1)
    return bonds, np.linalg.norm(structure.positions[j] - structure.positions[i], axis=-1)


def closest_pairs(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) the smallest interatomic distance of each copy (n, N, 3) and (n, 2) the pair that has it."""
    i, j = np.triu_indices(pos.shape[1], k=1)
    if not len(i):  # a single atom
        return np.full(len(pos), np.inf), np.zeros((len(pos), 2), dtype=np.int64)
    d = np.linalg.norm(pos[:, j] - pos[:, i], axis=-1)
    k = np.argmin(np.where(np.isnan(d), -np.inf, d), axis=1)  # a NaN distance counts as closest (it has failed)
    return d[np.arange(len(pos)), k], np.stack([i[k], j[k]], 1)


def failed(pos: np.ndarray, energies: np.ndarray, bonds: np.ndarray, lengths: np.ndarray,
           tolerance: float | None = BOND_TOLERANCE, min_distance: float = MIN_DISTANCE) -> np.ndarray:
    """(n,) bool for copies at ``pos`` (n, N, 3) with ``energies`` (n,): a bond deviation above ``tolerance`` (None:
    reactive, not checked), two atoms closer than ``min_distance``, or non-finite energy / positions."""
    bad = ~np.isfinite(energies) | ~np.isfinite(pos).all((1, 2))
    if len(bonds) and tolerance is not None:
        d = np.linalg.norm(pos[:, bonds[:, 0]] - pos[:, bonds[:, 1]], axis=-1)
        bad |= ~(np.abs(d - lengths) <= tolerance).all(1)
    if min_distance > 0:
        bad |= ~(closest_pairs(pos)[0] >= min_distance)
    return bad


def why(pos: np.ndarray, energy: float, numbers: np.ndarray, bonds: np.ndarray, lengths: np.ndarray,
        tolerance: float | None = BOND_TOLERANCE) -> dict:
    """What made the copy at ``pos`` (N, 3) fail: non-finite values, its most deviating bond (atoms, elements,
    lengths) when that one left the tolerance, or else the two atoms that came closest."""
    from ase.data import chemical_symbols

    if not (np.isfinite(energy) and np.isfinite(pos).all()):
        return {"reason": "non-finite"}
    if len(bonds) and tolerance is not None:
        d = np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=-1)
        b = int(np.argmax(np.abs(d - lengths)))
        i, j = (int(a) for a in bonds[b])
        if abs(d[b] - lengths[b]) > tolerance:
            return {"reason": "stretched" if d[b] > lengths[b] else "compressed", "atoms": [i, j],
                    "elements": f"{chemical_symbols[numbers[i]]}-{chemical_symbols[numbers[j]]}",
                    "start_length_A": float(lengths[b]), "length_A": float(d[b])}
    distance, pair = closest_pairs(pos[None])
    i, j = (int(a) for a in pair[0])
    return {"reason": "too close", "atoms": [i, j],
            "elements": f"{chemical_symbols[numbers[i]]}-{chemical_symbols[numbers[j]]}",
            "distance_A": float(distance[0])}


def describe_failure(f: dict) -> str:
    """One failure in words: "O-H 8–15 stretched to 1.52 Å at 1.25 ps". ``f`` is a record of `why` (with
    ``time_ps`` when known), or an exploration's record, whose ``stopped`` says why it ended when no bond did."""
    at = f" at {f['time_ps']:.2f} ps" if f.get("time_ps") is not None else ""
    if "length_A" in f:
        return f"{f['elements']} {f['atoms'][0]}–{f['atoms'][1]} {f['reason']} to {f['length_A']:.2f} Å{at}"
    if "distance_A" in f:
        return f"{f['elements']} {f['atoms'][0]}–{f['atoms'][1]} too close ({f['distance_A']:.2f} Å){at}"
    error = f" ({f['error']})" if f.get("error") else ""  # what the model raised on the copy's geometry
    return f"{f.get('stopped') or f.get('reason', 'failed')}{error}{at}"
