"""The MD loop: forces from a `Potential` through a Verlet list, reporters, and the blow-up monitor."""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.structure import Structure
from ..data.writers import write_extxyz
from ..errors import MDBlowUpError, MDUncertaintyStop
from ..graph.batch import collate, graph_of
from ..graph.neighbors import VerletList
from . import checkpoint
from .integrators import Langevin, MDState, VelocityVerlet, maxwell_boltzmann
from .monitor import BlowUpMonitor


class PotentialForces:
    """positions → (energy, forces) for one structure, reusing a Verlet neighbor list across steps."""

    def __init__(self, potential, state: MDState, skin: float = 1.0):
        self.potential, self.state = potential, state
        self.verlet = VerletList(potential.cutoff, skin)
        self.pairs = None

    def __call__(self, positions):
        s = self.state
        if not np.isfinite(positions).all():
            bad = np.where(~np.isfinite(positions).all(axis=1))[0]
            raise MDBlowUpError(f"MD stopped at step {s.step + 1}: non-finite positions for atoms {bad[:10].tolist()}",
                                {"step": s.step + 1, "time_fs": s.time_fs, "reason": "non-finite positions",
                                 "atoms": bad[:10].tolist()})
        self.pairs = self.verlet.update(positions, s.cell, s.pbc)
        frame = Structure.__new__(Structure)  # skip validation: positions are checked by the monitor
        frame.numbers, frame.positions, frame.cell, frame.pbc = s.numbers, positions, s.cell, s.pbc
        frame.energy = frame.forces = frame.stress = None
        frame.info = s.info  # e.g. the total charge
        graph = graph_of(frame, self.potential.cutoff, pairs=self.pairs)
        batch = collate([graph], dtype=self.potential.dtype, device=self.potential.device, labels=False)
        out = self.potential.compute(batch, forces=True)
        return float(out["energy"][0]), out["forces"].double().cpu().numpy()


@dataclass
class MDResult:
    status: str  # "completed", "blown_up", or "uncertain" (stopped by an `UncertaintyMonitor`)
    steps: int
    thermo: dict = field(default_factory=dict)  # columns of the thermo log as numpy arrays
    report: dict | None = None
    final: Structure | None = None

    def energy_drift(self) -> float:
        """Slope of total energy vs time by least squares, eV/atom/ps (NVE conservation)."""
        t, e = self.thermo["time_fs"], self.thermo["etot_eV"]
        slope = np.polyfit(t, e, 1)[0]  # eV/fs
        return float(slope * 1000.0 / self.thermo["n_atoms"])


def run_md(potential, structure: Structure, steps: int, timestep_fs: float = 0.5, ensemble: str = "nve",
           temperature: float = 300.0, friction: float = 0.01, seed: int = 0, init_temperature: float | None = None,
           out_dir=None, traj_interval: int = 10, thermo_interval: int = 1, skin: float = 1.0,
           monitor: BlowUpMonitor | None = None, progress: bool = False, checkpoint_interval: int = 500) -> MDResult:
    """Run MD from ``structure``. Writes ``trajectory.extxyz``, ``thermo.csv`` (and ``blowup.json`` if it
    blows up) to ``out_dir`` when given. Velocities start from Maxwell–Boltzmann at ``init_temperature``
    (default: ``temperature``). With ``out_dir``, the state is checkpointed every ``checkpoint_interval``
    steps and a rerun with the same settings resumes from the last checkpoint."""
    rng = np.random.default_rng(seed)
    state = MDState(structure)
    t0 = temperature if init_temperature is None else init_temperature
    state.velocities = maxwell_boltzmann(state.masses, t0, rng)
    if ensemble == "nve":
        integrator = VelocityVerlet(timestep_fs)
    elif ensemble == "nvt":
        integrator = Langevin(timestep_fs, temperature, friction, seed=seed + 1)
    else:
        raise ValueError(f"ensemble must be 'nve' or 'nvt', not {ensemble!r}")
    potential.check_elements([structure])
    forces = PotentialForces(potential, state, skin)
    monitor = monitor or BlowUpMonitor()
    out_dir = Path(out_dir) if out_dir is not None else None
    traj_path = thermo_file = writer = ckpt_path = None
    rows = []
    resumed = False
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        traj_path, ckpt_path = out_dir / "trajectory.extxyz", out_dir / "md_checkpoint.npz"
        key = checkpoint.fingerprint(structure, potential, dict(
            timestep_fs=timestep_fs, ensemble=ensemble, temperature=temperature, friction=friction, seed=seed,
            init_temperature=init_temperature, traj_interval=traj_interval, thermo_interval=thermo_interval,
            skin=skin, dtype=str(potential.dtype)))
        resumed = checkpoint_interval > 0 and checkpoint.load(ckpt_path, key, state, integrator, forces.verlet)
        if resumed:
            forces.pairs = forces.verlet.pairs
            rows = _truncate_outputs(out_dir, state.step)
            print(f"resuming MD in {out_dir} from step {state.step}", file=sys.stderr)
        else:
            traj_path.unlink(missing_ok=True)
        thermo_file = open(out_dir / "thermo.csv", "a" if resumed else "w", newline="")
        writer = csv.writer(thermo_file)
        if not resumed:
            writer.writerow(THERMO_COLUMNS)

    def record():
        ekin = state.kinetic_energy()
        row = [state.step, state.time_fs, state.energy, ekin, state.energy + ekin, state.temperature()]
        rows.append(row)
        if writer:
            writer.writerow([f"{x:.10g}" for x in row])
        if traj_path is not None and state.step % traj_interval == 0:
            frame = Structure(numbers=state.numbers, positions=state.positions, cell=state.cell, pbc=state.pbc,
                              energy=state.energy, forces=state.forces, info={"step": state.step,
                                                                              "time_fs": state.time_fs})
            write_extxyz(traj_path, [frame], energy_key="ffspace_energy", forces_key="ffspace_forces", append=True)

    status, report = "completed", None
    try:
        if not resumed:
            state.energy, state.forces = forces(state.positions)
            monitor.check(state, forces.pairs)
            record()
        bar = tqdm(total=steps, initial=state.step, desc=f"MD {ensemble}", disable=not progress, file=sys.stderr,
                   leave=False)
        while state.step < steps:
            integrator.step(state, forces)
            state.step += 1
            state.time_fs += timestep_fs
            monitor.check(state, forces.pairs)
            if state.step % thermo_interval == 0:
                record()
            if ckpt_path is not None and checkpoint_interval > 0 and state.step % checkpoint_interval == 0:
                thermo_file.flush()
                os.fsync(thermo_file.fileno())
                checkpoint.save(ckpt_path, key, state, integrator, forces.verlet)
            bar.update(1)
        bar.close()
    except MDBlowUpError as exc:
        uncertain = isinstance(exc, MDUncertaintyStop)
        status, report = ("uncertain" if uncertain else "blown_up"), exc.report
        print(f"\n{exc}", file=sys.stderr)
        if out_dir is not None:
            (out_dir / ("uncertain.json" if uncertain else "blowup.json")).write_text(json.dumps(report, indent=2))
    finally:
        if thermo_file:
            thermo_file.close()
    cols = np.array(rows, dtype=float).reshape(-1, 6)
    thermo = {name: cols[:, k] for k, name in enumerate(THERMO_COLUMNS)}
    thermo["n_atoms"] = state.n_atoms
    final = Structure(numbers=state.numbers, positions=state.positions, cell=state.cell, pbc=state.pbc) \
        if status == "completed" else None
    return MDResult(status=status, steps=state.step, thermo=thermo, report=report, final=final)


THERMO_COLUMNS = ["step", "time_fs", "epot_eV", "ekin_eV", "etot_eV", "temperature_K"]


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
    with open(thermo, "w", newline="") as f:
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
        ase.io.write(traj, frames, format="extxyz")
    return rows
