"""MD stability: time until failure of several seeds at several temperatures, what the surviving runs sample, and
NVE energy drift.

Seeds run together as one batch (independent copies of the molecule in one `Batch`, each its own graph
and its own thermostat centre of mass), so a model is evaluated once per step for all of them. A copy
*fails* when any covalent bond perceived at the start (closer than 1.2 × the sum of covalent radii)
deviates from its length in the start structure by more than ``bond_tolerance`` (0.5 Å; Fu et al.,
"Forces are not enough", TMLR 2023, use the same deviation from equilibrium lengths), when two atoms come closer
than ``min_distance`` (0.6 Å), when its energy or forces are not finite, or when the model refuses the geometry
(e.g. an MM model seeing an atom with too many bonds). A failed copy is taken out and the rest go on. A reaction
the reference method would also make (a proton transfer) counts as a failure too: the criterion measures staying
near the start's bonding.

Surviving is not enough: a run may stay bonded and still sample the wrong structure. So every ``sample_fs`` the
covalent bond lengths and one dihedral of the live copies are recorded, and the runs that survived to the end are
summarised as histograms next to the same histograms of the training frames (`distributions`), with their overlap
Σ min(p, q) (1: the same distribution, 0: disjoint). The dihedral is the proper torsion about a bond between two
heavy atoms that varies most in the training frames (the molecule's most flexible one), unless one is given.
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


MIN_DISTANCE = 0.6  # Å: two atoms closer than this have collided (issue 30's rule)
BOND_BINS = np.linspace(0.6, 2.2, 161)  # Å, 0.01 Å bins
DIHEDRAL_BINS = np.linspace(-180.0, 180.0, 73)  # degrees, 5° bins


def _closest_pairs(pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) the smallest interatomic distance of each copy (n, N, 3) and (n, 2) the pair that has it."""
    i, j = np.triu_indices(pos.shape[1], k=1)
    if not len(i):  # a single atom
        return np.full(len(pos), np.inf), np.zeros((len(pos), 2), dtype=np.int64)
    d = np.linalg.norm(pos[:, j] - pos[:, i], axis=-1)
    k = np.argmin(np.where(np.isnan(d), -np.inf, d), axis=1)  # a NaN distance counts as closest (it has failed)
    return d[np.arange(len(pos)), k], np.stack([i[k], j[k]], 1)


def _failed(copies: MoleculeCopies, bonds: np.ndarray, lengths: np.ndarray, tolerance: float,
            min_distance: float = MIN_DISTANCE) -> np.ndarray:
    """(n,) bool: bond deviation above tolerance, two atoms closer than ``min_distance``, or non-finite energy /
    forces / positions."""
    pos = copies.positions()
    bad = ~np.isfinite(copies.energies) | ~np.isfinite(pos).all((1, 2))
    if len(bonds):
        d = np.linalg.norm(pos[:, bonds[:, 0]] - pos[:, bonds[:, 1]], axis=-1)
        bad |= ~(np.abs(d - lengths) <= tolerance).all(1)
    if min_distance > 0:
        bad |= ~(_closest_pairs(pos)[0] >= min_distance)
    return bad


def _why(copies: MoleculeCopies, k: int, numbers: np.ndarray, bonds: np.ndarray, lengths: np.ndarray,
         tolerance: float = 0.5) -> dict:
    """What made copy ``k`` fail: non-finite values, its most deviating bond (atoms, elements, lengths) when that one
    left the tolerance, or else the two atoms that came too close."""
    from ase.data import chemical_symbols

    pos = copies.positions()[k]
    if not (np.isfinite(copies.energies[k]) and np.isfinite(pos).all()):
        return {"reason": "non-finite"}
    if len(bonds):
        d = np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=-1)
        b = int(np.argmax(np.abs(d - lengths)))
        i, j = (int(a) for a in bonds[b])
        if abs(d[b] - lengths[b]) > tolerance:
            return {"reason": "stretched" if d[b] > lengths[b] else "compressed", "atoms": [i, j],
                    "elements": f"{chemical_symbols[numbers[i]]}-{chemical_symbols[numbers[j]]}",
                    "start_length_A": float(lengths[b]), "length_A": float(d[b])}
    distance, pair = _closest_pairs(pos[None])
    i, j = (int(a) for a in pair[0])
    return {"reason": "too close", "atoms": [i, j],
            "elements": f"{chemical_symbols[numbers[i]]}-{chemical_symbols[numbers[j]]}",
            "distance_A": float(distance[0])}


def dihedral_angles(pos: np.ndarray, quad) -> np.ndarray:
    """Dihedral angle (degrees, −180..180) of atoms ``quad`` = (a, b, c, d) in each frame of ``pos`` (..., N, 3)."""
    from ase.geometry import get_dihedrals

    a, b, c, d = (pos[..., q, :].reshape(-1, 3) for q in quad)
    angles = get_dihedrals(b - a, c - b, d - c)  # ASE: 0..360
    return (np.where(angles > 180.0, angles - 360.0, angles)).reshape(pos.shape[:-2])


def torsions(structure: Structure) -> list[tuple[int, int, int, int]]:
    """The proper torsions a-b-c-d about covalent bonds b-c between two heavy atoms (one per central bond: the
    first neighbours in index order)."""
    bonds = covalent_bonds(structure)
    neighbours: dict[int, list[int]] = {}
    for i, j in bonds.tolist():
        neighbours.setdefault(i, []).append(j)
        neighbours.setdefault(j, []).append(i)
    out = []
    for b, c in bonds.tolist():
        if structure.numbers[b] == 1 or structure.numbers[c] == 1:
            continue
        left = [a for a in sorted(neighbours[b]) if a != c]
        right = [d for d in sorted(neighbours[c]) if d != b and d not in left]
        if left and right:
            out.append((left[0], b, c, right[0]))
    return out


def choose_dihedral(structure: Structure, reference: list[Structure] | None) -> tuple[int, int, int, int] | None:
    """The torsion of `torsions` with the widest spread (1 − |mean e^{iφ}|) over the ``reference`` frames (the
    training data); without them, the first one; None when the molecule has none."""
    candidates = torsions(structure)
    if not candidates or not reference:
        return candidates[0] if candidates else None
    pos = np.stack([s.positions for s in reference])
    spread = [1.0 - abs(np.exp(1j * np.radians(dihedral_angles(pos, q))).mean()) for q in candidates]
    return candidates[int(np.argmax(spread))]


def _histograms(bond_lengths: np.ndarray, angles: np.ndarray, labels: list[str]) -> dict:
    """Normalised histograms of bond lengths per element pair (samples × bonds) and of one dihedral (samples,)."""
    bonds = {}
    for label in sorted(set(labels)):
        cols = [k for k, x in enumerate(labels) if x == label]
        values = bond_lengths[:, cols].ravel()
        counts = np.histogram(values, BOND_BINS)[0].astype(float)
        bonds[label] = (counts / max(counts.sum(), 1.0)).tolist()
    counts = np.histogram(angles, DIHEDRAL_BINS)[0].astype(float)
    return {"bonds": bonds, "dihedral": (counts / max(counts.sum(), 1.0)).tolist(), "samples": int(len(angles))}


def overlap(p, q) -> float:
    """Σ min(p, q) of two normalised histograms: 1 for equal distributions, 0 for disjoint ones."""
    return float(np.minimum(np.asarray(p), np.asarray(q)).sum())


def distributions(md: dict, reference: dict) -> dict:
    """The overlaps of an MD run's histograms with the reference's: per element pair and for the dihedral."""
    bonds = {k: overlap(v, reference["bonds"][k]) for k, v in md["bonds"].items() if k in reference["bonds"]}
    return {"bonds": bonds, "bonds_min": min(bonds.values()) if bonds else None,
            "dihedral": overlap(md["dihedral"], reference["dihedral"])}


def bond_labels(structure: Structure, bonds: np.ndarray) -> list[str]:
    """'C-H', 'C-O', ... of each bond, elements in alphabetical order (so C-H and H-C are one kind)."""
    from ase.data import chemical_symbols

    return ["-".join(sorted((chemical_symbols[structure.numbers[i]], chemical_symbols[structure.numbers[j]])))
            for i, j in bonds.tolist()]


def reference_distributions(structure: Structure, frames: list[Structure], dihedral) -> dict:
    """The histograms `survival` records, over ``frames`` (the training data) with ``structure``'s bonds."""
    bonds = covalent_bonds(structure)
    pos = np.stack([s.positions for s in frames])
    lengths = np.linalg.norm(pos[:, bonds[:, 0]] - pos[:, bonds[:, 1]], axis=-1)
    angles = dihedral_angles(pos, dihedral) if dihedral is not None else np.zeros(0)
    return _histograms(lengths, angles, bond_labels(structure, bonds))


def survival(potential, structure: Structure, temperature: float, seeds: int = 5, time_ps: float = 20.0,
             timestep_fs: float = 0.5, friction: float = 0.01, bond_tolerance: float = 0.5, seed: int = 0,
             progress: bool = False, min_distance: float = MIN_DISTANCE, dihedral=None, sample_fs: float = 20.0,
             reference: dict | None = None) -> dict:
    """Langevin MD of ``seeds`` copies at ``temperature`` K; the time each copy failed (None: survived) and why
    (``failure``: the bond that left the tolerance, the pair that came closer than ``min_distance``, or non-finite
    values); ``sampled``: histograms of bond lengths and of the ``dihedral`` (atom indices) over the copies that
    survived, every ``sample_fs``, and with ``reference`` (`reference_distributions`) their overlaps with it."""
    bonds = covalent_bonds(structure)
    d0 = np.linalg.norm(structure.positions[bonds[:, 0]] - structure.positions[bonds[:, 1]], axis=-1)
    start_stream, noise_stream = np.random.SeedSequence(seed).spawn(2)  # independent velocity and noise draws
    copies = MoleculeCopies.thermal(potential, structure, seeds, temperature, np.random.default_rng(start_stream))
    failure, why = [None] * seeds, [None] * seeds
    steps = int(round(time_ps * units.ps / timestep_fs))
    every = max(1, int(round(sample_fs / timestep_fs)))
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (copy ids, bond lengths, dihedral angles)
    integrator = Langevin(timestep_fs, temperature, friction, seed=noise_stream, groups=copies.groups())
    bar = progress_bar(range(steps), desc=f"{temperature:g} K × {seeds} seeds", enabled=progress)
    for step in bar:
        integrator.step(copies.state, copies)
        bad = _failed(copies, bonds, d0, bond_tolerance, min_distance)
        if bad.any():
            t = (step + 1) * timestep_fs / units.ps
            for k in np.nonzero(bad)[0]:
                failure[copies.ids[k]] = t
                why[copies.ids[k]] = _why(copies, k, structure.numbers, bonds, d0, bond_tolerance)
            if bad.all():
                break
            copies = copies.survivors(~bad, integrator)
        if (step + 1) % every == 0:
            pos = copies.positions()
            samples.append((np.asarray(copies.ids), np.linalg.norm(pos[:, bonds[:, 0]] - pos[:, bonds[:, 1]], axis=-1),
                            dihedral_angles(pos, dihedral) if dihedral is not None else np.zeros(len(pos))))
    result = {"temperature_K": temperature, "time_ps": time_ps, "timestep_fs": timestep_fs, "seeds": seeds,
              "failure_ps": failure, "failure": why, "survived": sum(f is None for f in failure),
              "bond_tolerance_A": bond_tolerance, "min_distance_A": min_distance, "n_bonds": int(len(bonds))}
    alive = [k for k in range(seeds) if failure[k] is None]
    if samples and alive:  # only the runs that survived to the end: what a stable run samples
        keep = [np.isin(ids, alive) for ids, _, _ in samples]
        lengths = np.concatenate([b[m] for (_, b, _), m in zip(samples, keep)])
        angles = np.concatenate([a[m] for (_, _, a), m in zip(samples, keep)])
        sampled = _histograms(lengths, angles if dihedral is not None else np.zeros(0), bond_labels(structure, bonds))
        sampled["dihedral_atoms"] = list(dihedral) if dihedral is not None else None
        sampled["sample_fs"] = every * timestep_fs
        if reference is not None:
            sampled["overlap"] = distributions(sampled, reference)
        result["sampled"] = sampled
    return result


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
