"""MD stability: time until failure of several seeds at several temperatures, what the surviving runs sample, and
NVE energy drift.

Seeds run together as one batch (independent copies of the molecule in one `Batch`, each its own graph
and its own thermostat centre of mass), so a model is evaluated once per step for all of them. A copy
*fails* by the rules of `ffspace.md.failure` (a start bond 0.5 Å off its length, two atoms closer than 0.6 Å,
non-finite values), or when the model refuses the geometry (e.g. an MM model seeing an atom with too many bonds).
A failed copy is taken out and the rest go on.

Surviving is not enough: a run may stay bonded and still sample the wrong structure. So every ``sample_fs`` the
covalent bond lengths and one dihedral of the live copies are recorded, and the runs that survived to the end are
summarised as histograms next to the same histograms of the training frames (`distributions`), with their overlap
Σ min(p, q) (1: the same distribution, 0: disjoint). The dihedral is the proper torsion about a bond between two
heavy atoms that varies most in the training frames (the molecule's most flexible one), unless one is given.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from .. import units
from ..data.structure import Structure
from ..md import failure as rules
from ..md.checkpoint import add_weights
from ..md.copies import MoleculeCopies
from ..md.failure import MIN_DISTANCE
from ..md.held_bonds import held_arrays, restore_held
from ..md.integrators import Langevin, VelocityVerlet
from ..outputs import atomic_path
from ..progress import progress as progress_bar


def covalent_bonds(structure: Structure) -> np.ndarray:
    """(B, 2) atom pairs bonded at the start (`ffspace.data.bonds`: closer than 1.2 × the covalent radii's sum)."""
    return rules.start_bonds(structure)[0]


BOND_BINS = np.linspace(0.6, 2.2, 161)  # Å, 0.01 Å bins
DIHEDRAL_BINS = np.linspace(-180.0, 180.0, 73)  # degrees, 5° bins


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
             reference: dict | None = None, checkpoint=None, checkpoint_ps: float = 1.0,
             remove_checkpoint: bool = True, identity: str | None = None) -> dict:
    """Langevin MD of ``seeds`` copies at ``temperature`` K; the time each copy failed (None: survived) and why
    (``failure``: the bond that left the tolerance, the pair that came closer than ``min_distance``, or non-finite
    values); ``sampled``: histograms of bond lengths and of the ``dihedral`` (atom indices) over the copies that
    survived, every ``sample_fs``, and with ``reference`` (`reference_distributions`) their overlaps with it.

    With ``checkpoint`` (a file path) the run's state is saved every ``checkpoint_ps`` and a killed run resumes from
    it, losing at most that much MD; the file also records the settings and the weights, and one written for others
    is not used (``identity`` stands for the weights of a potential that has none, e.g. a labeler's provenance).
    ``remove_checkpoint=False`` leaves the file for the caller to remove once it has kept the result
    (a kill between the two then loses nothing)."""
    bonds, d0 = rules.start_bonds(structure)
    start_stream, noise_stream = np.random.SeedSequence(seed).spawn(2)  # independent velocity and noise draws
    copies = MoleculeCopies.thermal(potential, structure, seeds, temperature, np.random.default_rng(start_stream))
    failure, why = [None] * seeds, [None] * seeds
    steps = int(round(time_ps * units.ps / timestep_fs))
    every = max(1, int(round(sample_fs / timestep_fs)))
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (copy ids, bond lengths, dihedral angles)
    integrator = Langevin(timestep_fs, temperature, friction, seed=noise_stream, groups=copies.groups())
    settings = json.dumps([structure.positions.tolist(), temperature, seeds, time_ps, timestep_fs, friction,
                           bond_tolerance, seed, min_distance, dihedral and list(dihedral), sample_fs])
    done = 0
    weights = "" if checkpoint is None else identity if identity is not None else weights_key(potential)
    if checkpoint is not None:
        resumed = _resume(checkpoint, settings, potential, structure, integrator, weights)
        if resumed is not None:
            done, copies, failure, why, samples = resumed
            print(f"[stability] {temperature:g} K: resumed at {done * timestep_fs / units.ps:g} ps from {checkpoint}",
                  file=sys.stderr)
    save_every = max(1, int(round(checkpoint_ps * units.ps / timestep_fs)))
    bar = progress_bar(range(done, steps), desc=f"{temperature:g} K × {seeds} seeds", enabled=progress,
                       log_every_s=300.0)
    bar.set_postfix(running=f"{len(copies.ids)}/{seeds}")
    for step in bar:
        if checkpoint is not None and step > done and step % save_every == 0:
            _save(checkpoint, settings, step, copies, integrator, failure, why, samples, weights)
        integrator.step(copies.state, copies)
        bad = rules.failed(copies.positions(), copies.energies, bonds, d0, bond_tolerance, min_distance)
        if bad.any():
            t = (step + 1) * timestep_fs / units.ps
            for k in np.nonzero(bad)[0]:
                failure[copies.ids[k]] = t
                pos_k, energy_k = copies.positions()[k], copies.energies[k]
                why[copies.ids[k]] = rules.why(pos_k, energy_k, structure.numbers, bonds, d0, bond_tolerance)
                if copies.errors[k]:  # what the model raised on this copy's geometry
                    why[copies.ids[k]]["error"] = copies.errors[k]
            if bad.all():
                break
            copies = copies.survivors(~bad, integrator)
            bar.set_postfix(running=f"{len(copies.ids)}/{seeds}")
        if (step + 1) % every == 0:
            pos = copies.positions()
            samples.append((np.asarray(copies.ids), np.linalg.norm(pos[:, bonds[:, 0]] - pos[:, bonds[:, 1]], axis=-1),
                            dihedral_angles(pos, dihedral) if dihedral is not None else np.zeros(len(pos))))
    bar.close()  # (a run where every copy failed left the loop early)
    if checkpoint is not None and remove_checkpoint:  # finished
        Path(checkpoint).unlink(missing_ok=True)
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


def _held_arrays(potential, copies) -> dict:
    """Each MM term's held bonds of each live copy (`ffspace.md.held_bonds`)."""
    return held_arrays(potential, copies.state.numbers, copies.state.positions,
                       np.full(len(copies.ids), copies.atoms))


def _restore_held(potential, copies, counts: np.ndarray, keys: np.ndarray) -> None:
    restore_held(potential, copies.state.numbers, copies.state.positions, np.full(len(copies.ids), copies.atoms),
                 counts, keys)


def weights_key(potential) -> str:
    """A digest of the model's weights (every member's, for a committee): a checkpoint made by another model is
    not resumed, whoever calls `survival` (the bench also puts a key in the file name). A potential without torch
    weights (a QM calculator) gives its class name: its caller passes ``identity`` to `survival` instead."""
    if not all(hasattr(m, "model") for m in getattr(potential, "members", [potential])):
        return type(potential).__name__
    h = hashlib.sha256()
    add_weights(h, potential)
    return h.hexdigest()


def _save(path, settings: str, step: int, copies, integrator, failure, why, samples, weights: str) -> None:
    """The run's state after ``step`` steps, written atomically (a kill while writing keeps the previous one)."""
    counts = np.array([len(ids) for ids, _, _ in samples], dtype=np.int64)
    flat = (lambda k, empty: np.concatenate([x[k] for x in samples]) if samples else empty)
    state = copies.state
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(  # (compressed: the samples grow with the run, and the lists are many pairs)
                fh, **_held_arrays(copies.potential, copies), **copies.verlet_arrays(), settings=settings,
                weights=weights, step=step, ids=np.asarray(copies.ids, dtype=np.int64),
                positions=copies.positions(), velocities=copies.velocities(), forces=state.forces,
                energy=state.energy, energies=copies.energies, rng=json.dumps(integrator.rng.bit_generator.state),
                failure=json.dumps(failure), why=json.dumps(why), sample_counts=counts,
                sample_ids=flat(0, np.zeros(0, dtype=np.int64)), sample_bonds=flat(1, np.zeros((0, 0))),
                sample_angles=flat(2, np.zeros(0)))


def _resume(path, settings: str, potential, structure: Structure, integrator, weights: str):
    """(step, copies, failure, why, samples) from a checkpoint of the same run, or None (none, or other settings or
    weights)."""
    if not Path(path).is_file():
        return None
    with np.load(path) as z:
        if str(z["settings"]) != settings:
            print(f"[stability] {path} was written for other settings: starting over", file=sys.stderr)
            return None
        if "weights" in z and str(z["weights"]) != weights:  # (checkpoints from before the key: the bench's own
            # file names carry one)
            print(f"[stability] {path} was written by another model: starting over", file=sys.stderr)
            return None
        copies = MoleculeCopies(potential, structure, z["positions"], z["velocities"])
        copies.ids = z["ids"].tolist()
        copies.restore_verlet(z)  # the lists of the killed run (older checkpoints: built at the resumed geometry)
        # the forces of the step that was saved, not recomputed: the run goes on from exactly where it was
        copies.state.forces, copies.state.energy, copies.energies = z["forces"], float(z["energy"]), z["energies"]
        if "held_counts" in z:  # (checkpoints from before held bonds were kept: perceived afresh)
            _restore_held(potential, copies, z["held_counts"], z["held_keys"])
        integrator.groups = copies.groups()
        integrator.rng.bit_generator.state = json.loads(str(z["rng"]))
        bounds = np.cumsum(z["sample_counts"])[:-1]
        samples = list(zip(np.split(z["sample_ids"], bounds), np.split(z["sample_bonds"], bounds),
                           np.split(z["sample_angles"], bounds))) if len(z["sample_counts"]) else []
        return int(z["step"]), copies, json.loads(str(z["failure"])), json.loads(str(z["why"])), samples


def verdict(result: dict) -> str:
    """A survival result in one line: "6/10 survived 20 ps; lost: O-C 5–13 stretched to 1.94 Å at 6.21 ps, ..."
    (in order of failure)."""
    line = f"{result['survived']}/{result['seeds']} survived {result['time_ps']:g} ps"
    lost = sorted(((t, f) for t, f in zip(result["failure_ps"], result["failure"]) if t is not None),
                  key=lambda tf: tf[0])
    if lost:
        line += "; lost: " + ", ".join(rules.describe_failure({**(f or {}), "time_ps": t}) for t, f in lost)
    return line


class EnergyTrace:
    """Per copy, what an NVE run needs from its total energy, in memory that does not grow with the run: the
    least-squares slope against time (from running sums) and the largest one-step change with when it came. A
    100 ps run at 0.5 fs has 200 001 totals per copy; keeping them all made a checkpoint of 16 MB.

    The totals are taken relative to each copy's first one, so the sums stay small and the slope keeps its digits
    (a total near -2·10⁴ eV drifts by meV). The largest change counts only copies alive before the step (the step
    that breaks a copy counts; what it does after does not). Ties keep the earliest change, as `np.argmax` would."""

    FIELDS = ("first", "last", "n", "st", "stt", "sy", "sty", "jump", "jump_at")

    def __init__(self, total: np.ndarray, time: float = 0.0):
        k = len(total)
        self.first, self.last = np.array(total, dtype=float), np.array(total, dtype=float)
        self.n, self.st, self.stt = 0, 0.0, 0.0
        self.sy, self.sty = np.zeros(k), np.zeros(k)
        self.jump, self.jump_at = np.full(k, np.nan), np.full(k, np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            self._add_sums(time, np.asarray(total, dtype=float))

    def _add_sums(self, time: float, total: np.ndarray):
        y = total - self.first
        self.n, self.st, self.stt = self.n + 1, self.st + time, self.stt + time * time
        self.sy, self.sty = self.sy + y, self.sty + time * y

    def add(self, time: float, total: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """One step's totals; ``alive``: the copies alive before it. Returns the copies whose change is now their
        largest."""
        with np.errstate(invalid="ignore", over="ignore"):  # a failed copy's energy may be inf or NaN
            change = total - self.last
            finite = np.isfinite(change)
            larger = alive & finite & (np.isnan(self.jump) | (np.abs(change) > np.abs(np.nan_to_num(self.jump))))
            self.jump = np.where(larger, change, self.jump)
            self.jump_at = np.where(larger, time, self.jump_at)
            self.last = np.array(total, dtype=float)
            self._add_sums(time, self.last)
        return larger

    def slope(self) -> np.ndarray:
        """The least-squares slope of each copy's total against time (energy per time unit of ``time``)."""
        with np.errstate(invalid="ignore", over="ignore"):
            return (self.n * self.sty - self.st * self.sy) / (self.n * self.stt - self.st ** 2)

    def state(self) -> dict:
        return {f"trace_{f}": getattr(self, f) for f in self.FIELDS}

    @classmethod
    def from_state(cls, z) -> "EnergyTrace":
        trace = cls.__new__(cls)
        for f in cls.FIELDS:
            value = np.array(z[f"trace_{f}"])
            setattr(trace, f, value if value.ndim else value.item())
        return trace


def nve_drift(potential, structure: Structure, temperature: float = 300.0, seeds: int = 5, time_ps: float = 2.0,
              timestep_fs: float = 0.5, seed: int = 0, bond_tolerance: float = 0.5, checkpoint=None,
              checkpoint_ps: float = 1.0, progress: bool = False, min_distance: float = MIN_DISTANCE,
              remove_checkpoint: bool = True) -> dict:
    """Velocity-Verlet NVE of ``seeds`` copies: the slope of each copy's total energy (meV/atom/ps), and its largest
    one-step change (meV) with when it came (ps).

    A slope hides a discontinuous energy surface: a prior whose topology switches, or a cutoff without a smooth
    envelope, puts eV into the trajectory in one step at each crossing, and hot copies then fly apart a few steps
    later. The largest one-step change shows it (a smooth float64 surface at 0.5 fs moves the total by meV). It is
    taken up to the step a copy fails. A copy that fails (as in `survival`) gets a status and what failed instead of
    a slope; the others still count. With ``checkpoint`` (a file path) a killed run resumes from its last save
    (every ``checkpoint_ps``), which holds running sums (`EnergyTrace`), not every step's energy, so it stays small.
    The MM prior's held bonds come back from the checkpoint; the graph-learned MM's assignment cache does not (it
    perceives its topology afresh at the resumed geometry: the same bonds unless one was stretched past
    ``bond_scale`` · (R_i + R_j) at that instant).
    """
    bonds, d0 = rules.start_bonds(structure)
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    copies = MoleculeCopies.thermal(potential, structure, seeds, temperature, rng)
    integrator = VelocityVerlet(timestep_fs)
    steps = max(2, int(round(time_ps * units.ps / timestep_fs)))
    failed_at, why = np.full(seeds, -1), [None] * seeds
    trace = EnergyTrace(copies.energies + copies.kinetic())
    geometry_at = [None] * seeds  # the geometry of each copy's largest one-step change
    # "trace": checkpoints written before the totals were kept as running sums hold every step's total instead;
    # "survivors": before failed copies left the batch (their checkpoints hold every copy)
    settings = json.dumps([structure.positions.tolist(), temperature, seeds, time_ps, timestep_fs, seed,
                           bond_tolerance, min_distance, "trace", "survivors"])
    weights = weights_key(potential) if checkpoint is not None else ""
    done = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        with np.load(checkpoint) as z:
            if str(z["settings"]) == settings and str(z["weights"]) == weights:
                done, failed_at, why = int(z["step"]), z["failed_at"], json.loads(str(z["why"]))
                trace, geometry_at = EnergyTrace.from_state(z), json.loads(str(z["geometry_at"]))
                copies = MoleculeCopies(potential, structure, z["positions"], z["velocities"])
                copies.ids = z["ids"].tolist()
                copies.state.forces, copies.state.energy, copies.energies = (z["forces"], float(z["energy"]),
                                                                             z["energies"])
                copies.restore_verlet(z)
                if "held_counts" in z:
                    _restore_held(potential, copies, z["held_counts"], z["held_keys"])
                print(f"[stability] NVE: resumed at {done * timestep_fs / units.ps:g} ps from {checkpoint}",
                      file=sys.stderr)
            else:
                print(f"[stability] {checkpoint} was written for other settings or another model: starting over",
                      file=sys.stderr)
    save_every = max(1, int(round(checkpoint_ps * units.ps / timestep_fs)))
    for step in progress_bar(range(done, steps), desc=f"NVE {seeds} seeds", enabled=progress, log_every_s=300.0):
        if checkpoint is not None and step > done and step % save_every == 0:
            with atomic_path(checkpoint) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **_held_arrays(potential, copies), **copies.verlet_arrays(), settings=settings,
                         weights=weights, step=step, failed_at=failed_at, why=json.dumps(why),
                         geometry_at=json.dumps(geometry_at), ids=np.asarray(copies.ids, dtype=np.int64),
                         positions=copies.positions(), velocities=copies.velocities(), forces=copies.state.forces,
                         energy=copies.state.energy, energies=copies.energies, **trace.state())
        integrator.step(copies.state, copies)
        pos, ids = copies.positions(), np.asarray(copies.ids)
        # Every copy in the batch was alive before this step: the failing step counts, what a copy would do after
        # it does not (it leaves the batch, so its fate cannot slow or change the others).
        bad = rules.failed(pos, copies.energies, bonds, d0, bond_tolerance, min_distance)
        for k in np.nonzero(bad)[0]:
            failed_at[ids[k]] = step + 1
            why[ids[k]] = {**rules.why(pos[k], float(copies.energies[k]), structure.numbers, bonds, d0,
                                       bond_tolerance), "time_ps": (step + 1) * timestep_fs / units.ps}
        total = np.full(seeds, np.nan)
        total[ids] = copies.energies + copies.kinetic()
        alive = np.zeros(seeds, dtype=bool)
        alive[ids] = True
        for c in np.nonzero(trace.add((step + 1) * timestep_fs / units.ps, total, alive))[0]:
            geometry_at[c] = contacts(pos[int(np.nonzero(ids == c)[0][0])], structure.numbers, bonds)
        if bad.all():
            break
        if bad.any():
            copies = copies.survivors(~bad)
    if checkpoint is not None and remove_checkpoint:
        Path(checkpoint).unlink(missing_ok=True)
    slopes = trace.slope()  # eV/ps
    drifts, status = [], []
    for k in range(seeds):
        if failed_at[k] >= 0:
            drifts.append(None)
            status.append(f"failed at step {failed_at[k]}: {rules.describe_failure(why[k])}")
        else:
            drifts.append(float(slopes[k] / structure.n_atoms / units.meV))
            status.append("ok")
    jumps = [None if np.isnan(j) else float(j / units.meV) for j in trace.jump]
    jump_at = [None if np.isnan(t) else float(t) for t in trace.jump_at]
    finite = [abs(d) for d in drifts if d is not None]
    biggest = [abs(j) for j in jumps if j is not None]
    return {"status": "ok" if finite else "all failed", "per_seed_status": status, "temperature_K": temperature,
            "time_ps": time_ps, "timestep_fs": timestep_fs, "drift_meV_per_atom_ps": drifts,
            "max_abs_drift_meV_per_atom_ps": max(finite) if finite else None,
            "largest_step_change_meV": jumps, "largest_step_change_at_ps": jump_at,
            "max_abs_step_change_meV": max(biggest) if biggest else None, "geometry_at_largest_change": geometry_at,
            "failures": why}


def contacts(pos: np.ndarray, numbers: np.ndarray, bonds: np.ndarray) -> dict:
    """The two pairs of a geometry that a topology rule is most likely to change on: the bond of the start most
    stretched and the unbonded pair closest, each relative to its covalent reach R_i + R_j (a bond perceived below
    1.2–1.35 ×, as `ffspace.models.mm` and `ffspace.data.bonds` do)."""
    from ase.data import chemical_symbols

    from ..data.bonds import bond_reach

    def pair(i, j, d):
        return {"atoms": [int(i), int(j)], "elements": f"{chemical_symbols[numbers[i]]}-{chemical_symbols[numbers[j]]}",
                "distance_A": float(d), "of_covalent_reach": float(d / bond_reach(numbers[i], numbers[j], 1.0))}

    i, j = np.triu_indices(len(numbers), 1)
    d = np.linalg.norm(pos[j] - pos[i], axis=-1)
    ratio = d / bond_reach(numbers[i], numbers[j], 1.0)
    n = len(numbers)
    is_bond = np.isin(i * n + j, np.minimum(bonds[:, 0], bonds[:, 1]) * n + np.maximum(bonds[:, 0], bonds[:, 1])) \
        if len(bonds) else np.zeros(len(i), dtype=bool)
    out = {}
    if is_bond.any():
        b = np.nonzero(is_bond)[0][np.argmax(ratio[is_bond])]
        out["most_stretched_bond"] = pair(i[b], j[b], d[b])
    if (~is_bond).any():
        c = np.nonzero(~is_bond)[0][np.argmin(ratio[~is_bond])]
        out["closest_unbonded"] = pair(i[c], j[c], d[c])
    return out
