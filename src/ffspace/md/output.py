"""What an MD run writes to its folder, and how a killed run resumes from it.

``thermo.csv`` (a row every ``thermo_interval`` steps), ``trajectory.extxyz`` (a frame every ``traj_interval``
steps), ``md_checkpoint.npz`` (the whole integrator state every ``checkpoint_interval`` steps) and
``blowup.json`` / ``uncertain.json`` when a monitor stopped the run. The folder is claimed for the run before
anything is written (`ffspace.outputs.claim_folder`), so an MD run never writes over another run's files.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import numpy as np

from ..data.structure import Structure
from ..data.writers import write_extxyz
from ..errors import ConfigError
from ..outputs import atomic_path, claim_folder, write_json
from . import checkpoint

MAX_PENDING_FRAMES = 100  # trajectory frames held before they are written (also written at every checkpoint)
THERMO_COLUMNS = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]


class MDOutput:
    """The files of one MD run in ``out_dir``; ``owner`` identifies the run that may write there (see
    `ffspace.outputs.claim_folder`), ``key`` the exact settings a checkpoint must match to be resumed."""

    def __init__(self, out_dir, key: str, owner: str, traj_interval: int, checkpoint_interval: int,
                 overwrite: bool = False):
        self.dir = claim_folder(out_dir, owner, what="MD output folder", overwrite=overwrite)
        self.key, self.traj_interval, self.checkpoint_interval = key, traj_interval, checkpoint_interval
        self.traj = self.dir / "trajectory.extxyz"
        self.ckpt = self.dir / "md_checkpoint.npz"
        self.thermo = self.dir / "thermo.csv"
        self._file = self._writer = None
        self._frames = []  # trajectory frames not yet written: written in one go at each checkpoint and at the end

    def resume(self, state, integrator, verlet, potential=None) -> list | None:
        """Restore the last checkpoint of this run's settings into ``state``, ``integrator`` and ``verlet``; the
        thermo rows kept (what the killed run wrote after its checkpoint is dropped), or None to start afresh."""
        if self.checkpoint_interval <= 0:
            return None
        try:
            found = checkpoint.load(self.ckpt, self.key, state, integrator, verlet, potential)
        except Exception as exc:  # noqa: BLE001 - any unreadable content: np.load raises many types
            raise ConfigError(f"MD checkpoint {self.ckpt} cannot be read ({type(exc).__name__}: {exc}); delete it "
                              "to start this MD run over from step 0") from None
        if not found:
            return None
        print(f"resuming MD in {self.dir} from step {state.step}", file=sys.stderr)
        return _truncate_outputs(self.dir, state.step)

    def open(self, resumed: bool) -> None:
        if not resumed:  # a fresh start: nothing of an earlier run of other settings stays behind
            for name in ("trajectory.extxyz", "blowup.json", "uncertain.json", "md_checkpoint.npz"):
                (self.dir / name).unlink(missing_ok=True)
        self._file = open(self.thermo, "a" if resumed else "w", newline="")
        self._writer = csv.writer(self._file)
        if not resumed:
            self._writer.writerow(THERMO_COLUMNS)

    def record(self, state, row) -> None:
        self._writer.writerow([f"{x:.10g}" for x in row])
        if state.step % self.traj_interval == 0:
            # (a Structure copies its arrays: the integrator changes them in place)
            self._frames.append(Structure(numbers=state.numbers, positions=state.positions, cell=state.cell,
                                          pbc=state.pbc, energy=state.energy, forces=state.forces,
                                          info={"step": state.step, "time_fs": state.time_fs}))
            if len(self._frames) >= MAX_PENDING_FRAMES:
                self._write_frames()

    def _write_frames(self) -> None:
        """The pending frames in one write (ASE's per-call cost was ~15 % of a small molecule's fast MD step when
        each frame was written on its own). A killed run loses only frames after its last checkpoint, which a
        resume drops anyway."""
        if self._frames:
            write_extxyz(self.traj, self._frames, energy_key="ffspace_energy", forces_key="ffspace_forces",
                         append=True)
            self._frames = []

    def step_done(self, state, integrator, verlet, potential=None) -> None:
        """Checkpoint when the step count says so (the thermo log and the trajectory first, so that neither
        trails the checkpoint)."""
        if self.checkpoint_interval > 0 and state.step % self.checkpoint_interval == 0:
            self._write_frames()
            self._file.flush()
            os.fsync(self._file.fileno())
            checkpoint.save(self.ckpt, self.key, state, integrator, verlet, potential)

    def stopped(self, report: dict, uncertain: bool) -> None:
        self._write_frames()
        write_json(self.dir / ("uncertain.json" if uncertain else "blowup.json"), report)

    def close(self) -> None:
        self._write_frames()
        if self._file:
            self._file.close()


def _truncate_outputs(out_dir: Path, step: int) -> list:
    """Drop what a killed run wrote after its last checkpoint; return the thermo rows kept."""
    thermo = out_dir / "thermo.csv"
    rows = []
    if thermo.exists():
        with open(thermo, newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            for r in reader:
                if len(r) == 6 and int(float(r[0])) <= step:
                    rows.append([float(x) for x in r])
    # Both files are rewritten through a temporary file: a kill while rewriting keeps the old, longer one (cut
    # again at the next resume), never a truncated one.
    with atomic_path(thermo) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(THERMO_COLUMNS)
        for r in rows:
            w.writerow([f"{x:.10g}" for x in r])
    traj = out_dir / "trajectory.extxyz"
    if traj.exists():
        import ase.io

        frames = []
        try:
            for a in ase.io.iread(traj, format="extxyz"):
                if int(a.info.get("step", -1)) > step:
                    break
                frames.append(a)
        except Exception:  # noqa: BLE001 - a frame torn by the kill ends the readable part
            pass
        with atomic_path(traj) as tmp:
            ase.io.write(tmp, frames, format="extxyz")
    return rows


def thermo_columns(rows: list) -> dict:
    cols = np.array(rows, dtype=float).reshape(-1, len(THERMO_COLUMNS))
    return {name: cols[:, k] for k, name in enumerate(THERMO_COLUMNS)}
