"""Content hashes of structure sets: what a resumable step (a training run, a committee member) was made from."""

from __future__ import annotations

import numpy as np


def update_with_structures(h, *sets) -> None:
    """Feed the atoms, exact positions and energy of every structure of each set into the hash ``h``
    (``hashlib``), the sets separated, so moving a structure from one set to another changes the hash.
    Energies stand for the labels: relabeling the same frames with another method changes the hash too."""
    for k, structures in enumerate(sets):
        if k:
            h.update(b"|")
        for s in structures:
            h.update(s.numbers.tobytes())
            h.update(s.positions.tobytes())
            h.update(np.float64(s.energy if s.energy is not None else np.nan).tobytes())
