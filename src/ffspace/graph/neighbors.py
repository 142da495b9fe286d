"""Neighbor lists through vesin, with periodic cells, and a Verlet list with skin for MD."""

from __future__ import annotations

import numpy as np
import vesin


def neighbor_list(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Full neighbor list: every pair (i, j) with |r_j + S·cell − r_i| < cutoff appears both ways.

    Returns ``(i, j, shifts)`` with ``shifts`` integer cell shifts (E, 3), so that the edge vector is
    ``positions[j] - positions[i] + shifts @ cell``.
    """
    pbc = np.asarray(pbc, dtype=bool)
    if cutoff <= 0:  # e.g. a model of per-element constants only: no pairs at all
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), np.zeros((0, 3), dtype=np.int64)
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    if pbc.any():
        i, j, s = nl.compute(positions, cell, pbc, "ijS")
    else:
        i, j, s = nl.compute(positions, np.zeros((3, 3)), False, "ijS")
    return i.astype(np.int64), j.astype(np.int64), s.astype(np.int64)


class VerletList:
    """A neighbor list built at ``cutoff + skin`` and reused until some atom moved more than skin/2.

    Positions handed to `update` must be continuous (not re-wrapped into the cell between calls):
    the stored integer shifts then stay valid until the next rebuild.
    """

    def __init__(self, cutoff: float, skin: float = 1.0):
        self.cutoff, self.skin = float(cutoff), float(skin)
        self._ref = None
        self.pairs = None
        self.n_builds = 0

    def needs_rebuild(self, positions: np.ndarray, cell: np.ndarray) -> bool:
        if self._ref is None:
            return True
        ref_pos, ref_cell = self._ref
        if positions.shape != ref_pos.shape or not (np.array_equal(cell, ref_cell) or np.allclose(cell, ref_cell)):
            return True  # (array_equal first: the cell of NVE/NVT MD never changes, and allclose is slow)
        disp = positions - ref_pos
        return bool(4.0 * np.einsum("ij,ij->i", disp, disp).max() > self.skin ** 2)

    @property
    def built_at(self) -> np.ndarray | None:
        """The positions the current list was built at (None before the first build)."""
        return None if self._ref is None else self._ref[0]

    def update(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray):
        """Return ``(i, j, shifts)`` valid for ``positions`` within ``cutoff`` (may hold extra pairs up to cutoff+skin)."""
        if self.needs_rebuild(positions, cell):
            self.pairs = neighbor_list(positions, cell, pbc, self.cutoff + self.skin)
            self._ref = (positions.copy(), np.array(cell, copy=True))
            self.n_builds += 1
        return self.pairs
