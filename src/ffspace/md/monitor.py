"""Blow-up monitor: stops a run the moment it leaves physical territory, and says where and when."""

from __future__ import annotations

import numpy as np

from ..errors import MDBlowUpError


class BlowUpMonitor:
    """Checks every step: finite energy and forces, |F| below ``max_force`` (eV/Å), no pair closer
    than ``min_distance`` (Å), and no atom farther than ``max_displacement`` (Å) from where it started
    (for isolated molecules: a fragment flying off)."""

    def __init__(self, max_force: float = 50.0, min_distance: float = 0.5, max_displacement: float | None = None):
        self.max_force, self.min_distance, self.max_displacement = max_force, min_distance, max_displacement
        self.start = None

    def check(self, state, pairs=None) -> None:
        def fail(reason, atoms, **extra):
            report = {"step": state.step, "time_fs": state.time_fs, "reason": reason,
                      "atoms": [int(a) for a in atoms],
                      "elements": [int(state.numbers[a]) for a in atoms],
                      "positions_A": [state.positions[a].tolist() for a in atoms], **extra}
            raise MDBlowUpError(f"MD stopped at step {state.step} (t = {state.time_fs:.1f} fs): {reason}; "
                                f"atoms {report['atoms']}", report)

        if self.start is None:
            self.start = state.positions.copy()
        if state.energy is None or not np.isfinite(state.energy):
            fail(f"non-finite potential energy ({state.energy})", [])
        finite = np.isfinite(state.forces).all(axis=1) & np.isfinite(state.positions).all(axis=1)
        if not finite.all():
            fail("non-finite forces or positions", np.where(~finite)[0][:10])
        fmag = np.linalg.norm(state.forces, axis=1)
        if fmag.max() > self.max_force:
            worst = np.argsort(-fmag)[:3]
            fail(f"force {fmag.max():.1f} eV/Å above the limit {self.max_force} eV/Å", worst,
                 max_force_eV_A=float(fmag.max()))
        if pairs is not None and len(pairs[0]):
            i, j, shifts = pairs
            vec = state.positions[j] - state.positions[i] + shifts @ state.cell
            d = np.sqrt((vec**2).sum(axis=1))
            k = int(np.argmin(d))
            if d[k] < self.min_distance:
                fail(f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart (< {self.min_distance} Å)",
                     [i[k], j[k]], distance_A=float(d[k]))
        if self.max_displacement is not None:
            disp = np.linalg.norm(state.positions - self.start, axis=1)
            if disp.max() > self.max_displacement:
                fail(f"atom moved {disp.max():.1f} Å from its start (> {self.max_displacement} Å)",
                     [int(np.argmax(disp))])
