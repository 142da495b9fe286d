"""MD stability: time until failure of several seeds at several temperatures, and NVE energy drift.

Seeds run together as one batch (independent copies of the molecule in one `Batch`, each its own graph
and its own thermostat centre of mass), so a model is evaluated once per step for all of them. A copy
*fails* when any covalent bond perceived at the start (closer than 1.2 × the sum of covalent radii)
deviates from its length in the start structure by more than ``bond_tolerance`` (0.5 Å; Fu et al.,
"Forces are not enough", TMLR 2023, use the same deviation from equilibrium lengths), when its energy or
forces are not finite, or when the model refuses the geometry (e.g. an MM model seeing an atom with too
many bonds). A failed copy is taken out and the rest go on. A reaction the reference method would also
make (a proton transfer) counts as a failure too: the criterion measures staying near the start's bonding.
"""

from __future__ import annotations

import numpy as np

from .. import units
from ..data.bonds import covalent_bonds as bonds_of
from ..data.structure import Structure
from ..md.copies import MoleculeCopies
from ..md.integrators import Langevin, VelocityVerlet
from ..progress import progress as progress_bar


def covalent_bonds(structure: Structure) -> np.ndarray:
    """(B, 2) atom pairs bonded at the start (`ffspace.data.bonds`: closer than 1.2 × the covalent radii's sum)."""
    i, j, _ = bonds_of(structure.numbers, structure.positions)
    return np.stack([i, j], 1)


def _failed(copies: MoleculeCopies, bonds: np.ndarray, lengths: np.ndarray, tolerance: float) -> np.ndarray:
    """(n,) bool: bond deviation above tolerance, or non-finite energy / forces / positions."""
    pos = copies.positions()
    bad = ~np.isfinite(copies.energies) | ~np.isfinite(pos).all((1, 2))
    if len(bonds):
        d = np.linalg.norm(pos[:, bonds[:, 0]] - pos[:, bonds[:, 1]], axis=-1)
        bad |= ~(np.abs(d - lengths) <= tolerance).all(1)
    return bad


def _why(copies: MoleculeCopies, k: int, numbers: np.ndarray, bonds: np.ndarray, lengths: np.ndarray) -> dict:
    """What made copy ``k`` fail: non-finite values, or its most deviating bond (atoms, elements, lengths)."""
    from ase.data import chemical_symbols

    pos = copies.positions()[k]
    if not (np.isfinite(copies.energies[k]) and np.isfinite(pos).all()):
        return {"reason": "non-finite"}
    d = np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=-1)
    b = int(np.argmax(np.abs(d - lengths)))
    i, j = (int(a) for a in bonds[b])
    return {"reason": "stretched" if d[b] > lengths[b] else "compressed", "atoms": [i, j],
            "elements": f"{chemical_symbols[numbers[i]]}-{chemical_symbols[numbers[j]]}",
            "start_length_A": float(lengths[b]), "length_A": float(d[b])}


def survival(potential, structure: Structure, temperature: float, seeds: int = 5, time_ps: float = 20.0,
             timestep_fs: float = 0.5, friction: float = 0.01, bond_tolerance: float = 0.5, seed: int = 0,
             progress: bool = False) -> dict:
    """Langevin MD of ``seeds`` copies at ``temperature`` K; the time each copy failed (None: survived) and why
(``failure``: the bond that left the tolerance, or non-finite values)."""
    bonds = covalent_bonds(structure)
    d0 = np.linalg.norm(structure.positions[bonds[:, 0]] - structure.positions[bonds[:, 1]], axis=-1)
    start_stream, noise_stream = np.random.SeedSequence(seed).spawn(2)  # independent velocity and noise draws
    copies = MoleculeCopies.thermal(potential, structure, seeds, temperature, np.random.default_rng(start_stream))
    failure, why = [None] * seeds, [None] * seeds
    steps = int(round(time_ps * units.ps / timestep_fs))
    integrator = Langevin(timestep_fs, temperature, friction, seed=noise_stream, groups=copies.groups())
    bar = progress_bar(range(steps), desc=f"{temperature:g} K × {seeds} seeds", enabled=progress)
    for step in bar:
        integrator.step(copies.state, copies)
        bad = _failed(copies, bonds, d0, bond_tolerance)
        if bad.any():
            t = (step + 1) * timestep_fs / units.ps
            for k in np.nonzero(bad)[0]:
                failure[copies.ids[k]] = t
                why[copies.ids[k]] = _why(copies, k, structure.numbers, bonds, d0)
            if bad.all():
                break
            copies = copies.survivors(~bad, integrator)
    return {"temperature_K": temperature, "time_ps": time_ps, "timestep_fs": timestep_fs, "seeds": seeds,
            "failure_ps": failure, "failure": why, "survived": sum(f is None for f in failure),
            "bond_tolerance_A": bond_tolerance,
            "n_bonds": int(len(bonds))}


def nve_drift(potential, structure: Structure, temperature: float = 300.0, seeds: int = 5, time_ps: float = 2.0,
              timestep_fs: float = 0.5, seed: int = 0, bond_tolerance: float = 0.5) -> dict:
    """Velocity-Verlet NVE of ``seeds`` copies: the slope of each copy's total energy (meV/atom/ps).

    A copy that fails (as in `survival`) gets a status instead of a slope; the others still count.
    """
    bonds = covalent_bonds(structure)
    d0 = np.linalg.norm(structure.positions[bonds[:, 0]] - structure.positions[bonds[:, 1]], axis=-1)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    copies = MoleculeCopies.thermal(potential, structure, seeds, temperature, rng)
    integrator = VelocityVerlet(timestep_fs)
    steps = max(2, int(round(time_ps * units.ps / timestep_fs)))
    failed_at = np.full(seeds, -1)
    times, totals = [], []
    for step in range(steps):
        integrator.step(copies.state, copies)
        bad = _failed(copies, bonds, d0, bond_tolerance) & (failed_at < 0)
        failed_at[bad] = step + 1
        times.append((step + 1) * timestep_fs / units.ps)
        totals.append(copies.energies + copies.kinetic())
        if (failed_at >= 0).all():
            break
    times, totals = np.array(times), np.array(totals)
    drifts, status = [], []
    for k in range(seeds):
        if failed_at[k] >= 0:
            drifts.append(None)
            status.append(f"failed at step {failed_at[k]}")
        else:
            slope = np.polyfit(times, totals[:, k], 1)[0]  # eV/ps
            drifts.append(float(slope / structure.n_atoms / units.meV))
            status.append("ok")
    finite = [abs(d) for d in drifts if d is not None]
    return {"status": "ok" if finite else "all failed", "per_seed_status": status, "temperature_K": temperature,
            "time_ps": time_ps, "timestep_fs": timestep_fs, "drift_meV_per_atom_ps": drifts,
            "max_abs_drift_meV_per_atom_ps": max(finite) if finite else None}
