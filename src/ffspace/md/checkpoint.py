"""MD checkpoints: the whole integrator state every N steps, so a killed run resumes where it was.

The Verlet list is saved too, so the resumed run sums the same pairs in the same order and follows the
uninterrupted trajectory to the last bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..outputs import atomic_path
from .held_bonds import held_arrays, restore_held


def fingerprint(structure, potential, settings: dict) -> str:
    """What a checkpoint must match to be resumed: the settings, the start structure (with its box, charge and
    constant field, which the forces depend on) and the weights."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(structure.numbers.tobytes())
    h.update(structure.positions.tobytes())
    # Only where they are set, so that a molecule's key is what it was before they were added.
    if np.asarray(structure.pbc).any():
        h.update(np.asarray(structure.pbc, dtype=bool).tobytes() + np.asarray(structure.cell, dtype=float).tobytes())
    for name in ("charge", "field"):
        if structure.info.get(name) is not None:
            h.update(name.encode() + np.asarray(structure.info[name], dtype=float).tobytes())
    add_weights(h, potential)
    return h.hexdigest()


def add_weights(h, potential) -> None:
    """Feed the model's weights (every member's, for a committee) into the hash ``h``."""
    for member in getattr(potential, "members", [potential]):
        for name, t in sorted(member.model.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())


def save(path: Path, key: str, state, integrator, verlet, potential=None) -> None:
    """The run's state; with ``potential``, also the bonds its MM terms hold (`ffspace.md.held_bonds`)."""
    rng_state = json.dumps(integrator.rng.bit_generator.state) if hasattr(integrator, "rng") else ""
    i, j, shifts = verlet.pairs
    ref_pos, ref_cell = verlet._ref
    sizes = np.array([state.n_atoms])
    held = {} if potential is None else held_arrays(potential, state.numbers, state.positions, sizes)
    with atomic_path(path) as tmp:
        np.savez(tmp, key=key, positions=state.positions, velocities=state.velocities, forces=state.forces,
                 energy=state.energy, step=state.step, time_fs=state.time_fs, rng=rng_state, pair_i=i, pair_j=j,
                 pair_shifts=shifts, verlet_positions=ref_pos, verlet_cell=ref_cell, verlet_builds=verlet.n_builds,
                 **held)


def load(path: Path, key: str, state, integrator, verlet, potential=None) -> bool:
    """Restore ``state``, the integrator's random stream, the Verlet list and (with ``potential``) the bonds its
    MM terms held; False if none fits ``key``."""
    if not path.exists():
        return False
    with np.load(path) as data:
        if str(data["key"]) != key:
            return False
        if potential is not None and "held_counts" in data:  # (checkpoints from before: perceived afresh)
            restore_held(potential, state.numbers, data["positions"], np.array([state.n_atoms]), data["held_counts"],
                         data["held_keys"])
        state.positions, state.velocities = data["positions"].copy(), data["velocities"].copy()
        state.forces, state.energy = data["forces"].copy(), float(data["energy"])
        state.step, state.time_fs = int(data["step"]), float(data["time_fs"])
        if hasattr(integrator, "rng") and str(data["rng"]):
            integrator.rng.bit_generator.state = json.loads(str(data["rng"]))
        verlet.pairs = (data["pair_i"].copy(), data["pair_j"].copy(), data["pair_shifts"].copy())
        verlet._ref = (data["verlet_positions"].copy(), data["verlet_cell"].copy())
        verlet.n_builds = int(data["verlet_builds"])
    return True
