"""The bonds an MM prior holds along a trajectory (`ffspace.models.topology.HeldBonds`) as checkpoint arrays.

They are state of the run, not of the model: a run resumed without them perceives its bonds afresh at the resumed
geometry, so a bond stretched past the perception rule but not yet broken vanishes and a close contact becomes a
bond. `ffspace md` checkpoints and the stability protocol's batched copies both carry them.
"""

from __future__ import annotations

import numpy as np


def held_terms(potential) -> list:
    """The MM terms of ``potential`` (every member of a committee) that hold bonds along a trajectory."""
    from ..models.mm import ClassicalMM

    models = [getattr(member, "model", None) for member in getattr(potential, "members", [potential])]
    return [m for model in models if model is not None for m in model.modules() if isinstance(m, ClassicalMM)]


def held_arrays(potential, numbers: np.ndarray, positions: np.ndarray, sizes: np.ndarray) -> dict:
    """Each MM term's held bonds of each structure (atoms ``numbers``/``positions``, structures of ``sizes`` atoms
    in order): counts (terms, structures; −1: none held) and the bond keys, concatenated in order."""
    terms = held_terms(potential)
    counts, keys = np.full((len(terms), len(sizes)), -1, dtype=np.int64), []
    for t, term in enumerate(terms):
        for c, held in enumerate(term.held_bonds().lookup(numbers, positions, sizes)):
            if held is not None:
                counts[t, c] = len(held)
                keys.append(np.asarray(held, dtype=np.int64))
    return {"held_counts": counts, "held_keys": np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)}


def restore_held(potential, numbers: np.ndarray, positions: np.ndarray, sizes: np.ndarray, counts: np.ndarray,
                 keys: np.ndarray) -> None:
    """Give ``potential``'s MM terms back the bonds `held_arrays` saved for these structures."""
    terms = held_terms(potential)
    if len(counts) != len(terms):
        raise ValueError(f"the checkpoint holds bonds for {len(counts)} MM term(s), the model has {len(terms)}")
    start = 0
    for term, row in zip(terms, counts):
        held = []
        for n in row.tolist():
            held.append(None if n < 0 else keys[start:start + n])
            start += max(n, 0)
        term.held_bonds().remember(numbers, positions, sizes, held)
