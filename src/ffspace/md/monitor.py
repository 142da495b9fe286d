"""Blow-up monitor: stops a run the moment it leaves physical territory, and says where and when."""

from __future__ import annotations

import numpy as np

from ..data.bonds import bond_lengths, covalent_bonds
from ..errors import MDBlowUpError, MDUncertaintyStop


class BlowUpMonitor:
    """Checks every step: finite energy and forces, |F| below ``max_force`` (eV/Å), no pair closer
    than ``min_distance`` (Å), no covalent bond of the start structure stretched or compressed by more than
    ``bond_tolerance`` (Å; the bench's stability rule: a molecule that flew apart or a broken bond is not a
    completed run; None switches it off, e.g. for reactive MD), and no atom farther than ``max_displacement``
    (Å) from where it started."""

    def __init__(self, max_force: float = 50.0, min_distance: float = 0.5, max_displacement: float | None = None,
                 bond_tolerance: float | None = 0.5):
        self.max_force, self.min_distance, self.max_displacement = max_force, min_distance, max_displacement
        self.bond_tolerance = bond_tolerance
        self.start = None
        self.bonds = self.bond_start = None

    def reference(self, state) -> None:
        """Measure displacements and bond changes from ``state`` (positions, numbers, cell, pbc). Without a call,
        the first checked step is the reference; a resumed run sets it to its true start, so that a bond already
        stretched at the checkpoint is not taken as its starting length."""
        self.start = state.positions.copy()
        self.bonds = self.bond_start = None
        if self.bond_tolerance is not None:
            cell = state.cell if state.pbc.any() else None
            self.bonds = covalent_bonds(state.numbers, state.positions, cell, state.pbc)
            self.bond_start = bond_lengths(state.positions, self.bonds, cell)

    def check(self, state, pairs=None, distances=None) -> None:
        """Raise `MDBlowUpError` when ``state`` left physics. ``pairs`` (i, j, shifts): the neighbour pairs to
        check for atoms too close; ``distances``: their lengths (Å) when the caller has them already."""
        def fail(reason, atoms, **extra):
            report = {"step": state.step, "time_fs": state.time_fs, "reason": reason,
                      "atoms": [int(a) for a in atoms],
                      "elements": [int(state.numbers[a]) for a in atoms],
                      "positions_A": [state.positions[a].tolist() for a in atoms], **extra}
            raise MDBlowUpError(f"MD stopped at step {state.step} (t = {state.time_fs:.1f} fs): {reason}; "
                                f"atoms {report['atoms']}", report)

        if self.start is None:
            self.reference(state)
        if state.energy is None or not np.isfinite(state.energy):
            fail(f"non-finite potential energy ({state.energy})", [])
        if not (np.isfinite(state.forces).all() and np.isfinite(state.positions).all()):
            finite = np.isfinite(state.forces).all(axis=1) & np.isfinite(state.positions).all(axis=1)
            fail("non-finite forces or positions", np.where(~finite)[0][:10])
        fmag = np.sqrt(np.einsum("ij,ij->i", state.forces, state.forces))
        if fmag.max() > self.max_force:
            worst = np.argsort(-fmag)[:3]
            fail(f"force {fmag.max():.1f} eV/Å above the limit {self.max_force} eV/Å", worst,
                 max_force_eV_A=float(fmag.max()))
        if pairs is not None and len(pairs[0]):
            i, j, shifts = pairs
            d = distances
            if d is None:
                vec = state.positions[j] - state.positions[i] + shifts @ state.cell
                d = np.sqrt((vec**2).sum(axis=1))
            k = int(np.argmin(d))
            if d[k] < self.min_distance:
                fail(f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} Å apart (< {self.min_distance} Å)",
                     [i[k], j[k]], distance_A=float(d[k]))
        if self.bonds is not None and len(self.bonds[0]):
            d = bond_lengths(state.positions, self.bonds, state.cell if state.pbc.any() else None)
            change = np.abs(d - self.bond_start)
            b = int(np.argmax(change))
            if change[b] > self.bond_tolerance:
                i, j = int(self.bonds[0][b]), int(self.bonds[1][b])
                kind = "stretched" if d[b] > self.bond_start[b] else "compressed"
                fail(f"bond {i}-{j} {kind} from {self.bond_start[b]:.2f} to {d[b]:.2f} Å (more than "
                     f"{self.bond_tolerance} Å: the molecule is flying apart or reacting; set bond_tolerance=None "
                     "(md.bond_tolerance=null) for reactive MD)", [i, j], start_length_A=float(self.bond_start[b]),
                     length_A=float(d[b]))
        if self.max_displacement is not None:
            disp = np.linalg.norm(state.positions - self.start, axis=1)
            if disp.max() > self.max_displacement:
                fail(f"atom moved {disp.max():.1f} Å from its start (> {self.max_displacement} Å)",
                     [int(np.argmax(disp))])


class UncertaintyMonitor(BlowUpMonitor):
    """The blow-up checks plus a committee's uncertainty: after each step, the largest atomic force deviation
    (eV/Å, ``potential.last_max_deviation``, set by `ffspace.active.Committee`) is compared with ``flag`` (the
    step is recorded in ``flagged``, and the run goes on) and ``stop`` (the run stops: the model is
    extrapolating and what follows would be its invention, not physics).
    """

    def __init__(self, potential, stop: float | None = None, flag: float | None = None, **blowup):
        super().__init__(**blowup)
        if not hasattr(potential, "last_max_deviation"):
            raise TypeError("the uncertainty monitor needs a committee (a potential that reports its force "
                            "deviation, ffspace.active.Committee)")
        if stop is not None and flag is not None and flag > stop:
            raise ValueError(f"flag threshold {flag} eV/Å is above the stop threshold {stop} eV/Å")
        self.potential, self.stop, self.flag = potential, stop, flag
        self.flagged: list[tuple[int, float]] = []  # (step, largest force deviation in eV/Å)
        self.deviations: list[float] = []  # every checked step's largest deviation

    def check(self, state, pairs=None, distances=None) -> None:
        # Uncertainty first: when the committee is lost and the geometry breaks at the same step, the
        # extrapolation is the cause worth reporting.
        dev = self.potential.last_max_deviation
        if dev is None:
            super().check(state, pairs, distances)
            return
        self.deviations.append(dev)
        if self.flag is not None and dev > self.flag:
            self.flagged.append((state.step, dev))
        if self.stop is not None and dev > self.stop:
            report = {"step": state.step, "time_fs": state.time_fs, "reason": "uncertain",
                      "max_force_deviation_eV_A": dev, "stop_threshold_eV_A": self.stop}
            raise MDUncertaintyStop(f"MD stopped at step {state.step} (t = {state.time_fs:.1f} fs): committee force "
                                    f"deviation {dev:.3f} eV/Å above the stop threshold {self.stop} eV/Å: the "
                                    "model is extrapolating", report)
        super().check(state, pairs, distances)
