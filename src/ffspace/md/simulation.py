"""The MD loop: forces from a `Potential` through a Verlet list, the integrator, and the blow-up monitor
(files and resume: `ffspace.md.output`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from .. import units
from ..data.structure import Structure
from ..errors import ConfigError, MDBlowUpError, MDUncertaintyStop
from ..graph.batch import StructureBatcher
from ..graph.neighbors import VerletList
from ..progress import progress as progress_bar
from . import checkpoint
from .config import check_run_settings
from .integrators import Langevin, MDState, VelocityVerlet, maxwell_boltzmann
from .monitor import BlowUpMonitor
from .output import MDOutput, thermo_columns


class PotentialForces:
    """positions → (energy, forces) for one structure, reusing a Verlet neighbor list across steps. After each
    call, ``pairs`` holds the Verlet pairs (i, j, shifts) and ``distances`` their lengths (Å) at the positions of
    the call, for the blow-up monitor. With ``dipole`` (a field-dependent model), each call also leaves the dipole
    (3,) e·Å of the same model call in ``dipole``."""

    def __init__(self, potential, state: MDState, skin: float = 1.0, dipole: bool = False):
        self.potential, self.state, self.want_dipole = potential, state, dipole
        self.dipole = None
        self.verlet = VerletList(potential.cutoff, skin)
        field = state.info.get("field")  # V/Å, constant; `set_field` changes it (a time-dependent field)
        self.batcher = StructureBatcher(state.numbers, state.cell, state.pbc, state.info.get("charge", 0.0),
                                        dtype=potential.dtype, device=potential.device, field=field)
        self.pairs = self.distances = None
        # the C kernels know no field and no dipole: those runs go through the model's autograd path
        fast = getattr(potential, "fast", None) if field is None and not dipole else None
        # The C kernel straight from numpy (no torch batch), once the fast path's first call has been checked
        self._direct = (fast.direct(state.numbers, state.cell, state.pbc, charge=float(state.info.get("charge", 0.0)))
                        if fast is not None else None)

    def __call__(self, positions):
        s = self.state
        if not np.isfinite(positions).all():
            bad = np.where(~np.isfinite(positions).all(axis=1))[0]
            raise MDBlowUpError(f"MD stopped at step {s.step + 1}: non-finite positions for atoms {bad[:10].tolist()}",
                                {"step": s.step + 1, "time_fs": s.time_fs, "reason": "non-finite positions",
                                 "atoms": bad[:10].tolist()})
        self.pairs = i, j, shifts = self.verlet.update(positions, s.cell, s.pbc)
        vec = positions[j] - positions[i]
        if s.pbc.any():
            vec += shifts @ s.cell
        d2 = np.einsum("ij,ij->i", vec, vec)
        self.distances = np.sqrt(d2)
        # A Verlet list carries pairs up to cutoff + skin: the model gets those within its cutoff, the graph
        # `graph_of` would give.
        keep = d2 < self.potential.cutoff ** 2
        if self._direct is not None and self.potential.fast.state == "checked":
            energies, forces = self._direct(positions, i[keep], j[keep], shifts[keep])
            return float(energies[0]), forces
        batch = self.batcher(positions, i[keep], j[keep], shifts[keep])
        out = self.potential.compute(batch, forces=True, **({"dipole": True} if self.want_dipole else {}))
        if self.want_dipole:
            self.dipole = out["dipole"][0].double().cpu().numpy()
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
           monitor: BlowUpMonitor | None = None, progress: bool = False, checkpoint_interval: int = 500,
           max_force: float = 50.0, min_distance: float = 0.5, bond_tolerance: float | None = 0.5,
           owner: str | None = None, overwrite: bool = False, field=None) -> MDResult:
    """Run MD from ``structure``; the settings are checked as `MDRunSettings` (a `ConfigError` names a bad one).

    Velocities start from Maxwell–Boltzmann at ``init_temperature`` (default: ``temperature``). The run stops
    as ``blown_up`` when it leaves physical territory: non-finite values, a force above ``max_force`` (eV/Å), two
    atoms closer than ``min_distance`` (Å), a covalent bond of the start changed by more than ``bond_tolerance``
    (Å; None for reactive MD); a ``monitor`` given replaces these limits with its own. With ``out_dir``, writes
    ``trajectory.extxyz``, ``thermo.csv`` (and ``blowup.json`` when it blew up), checkpoints every
    ``checkpoint_interval`` steps, and a rerun with the same settings resumes from the last checkpoint. The folder
    must be new or this run's: ``owner`` names the run (default: the model's weights and the start structure),
    ``overwrite`` replaces another run's MD there.

    ``field`` (V/Å; a field-dependent model only): a constant (3,) vector, or a function of the time in fs returning
    one (a time-dependent field, evaluated at each force call's time); default: the structure's ``info["field"]``.
    """
    check_run_settings(steps=steps, timestep_fs=timestep_fs, ensemble=ensemble, temperature=temperature,
                       init_temperature=init_temperature, friction=friction, seed=seed, traj_interval=traj_interval,
                       thermo_interval=thermo_interval, checkpoint_interval=checkpoint_interval, skin=skin,
                       max_force=max_force, min_distance=min_distance, bond_tolerance=bond_tolerance)
    if not isinstance(structure, Structure):
        raise ConfigError(f"run_md needs an ffspace Structure as the start, got {type(structure).__name__} "
                          "(Structure.from_ase converts an ASE Atoms)")
    potential.check_elements([structure])
    if hasattr(potential, "check_charges"):  # (a committee or another evaluator may not record charges)
        potential.check_charges([structure])
    rng = np.random.default_rng(seed)
    if field is not None and not getattr(potential, "field_dependent", False):
        raise ConfigError("MD in an external field needs a field-dependent model (trained with model.field=true)")
    field_at = field if callable(field) else None
    if field is not None:
        structure = structure.copy()
        structure.info["field"] = np.asarray(field_at(0.0) if field_at else field, dtype=np.float64)
    state = MDState(structure)
    state.velocities = maxwell_boltzmann(state.masses, temperature if init_temperature is None else init_temperature,
                                         rng)
    integrator = VelocityVerlet(timestep_fs) if ensemble == "nve" else \
        Langevin(timestep_fs, temperature, friction, seed=seed + 1)
    forces = PotentialForces(potential, state, skin)
    monitor = monitor or BlowUpMonitor(max_force, min_distance, bond_tolerance=bond_tolerance)
    if getattr(monitor, "start", False) is None:  # the start structure, also for a run resumed from a checkpoint
        monitor.reference(state)
    output, rows = None, []
    if out_dir is not None:
        settings = dict(timestep_fs=timestep_fs, ensemble=ensemble, temperature=temperature, friction=friction,
                        seed=seed, init_temperature=init_temperature, traj_interval=traj_interval,
                        thermo_interval=thermo_interval, skin=skin, dtype=str(potential.dtype))
        if field_at is not None:
            settings["field"] = repr(field_at)  # a function: its name (a changed body is not detected)
        output = MDOutput(out_dir, checkpoint.fingerprint(structure, potential, settings),
                          owner or checkpoint.fingerprint(structure, potential, {}), traj_interval, checkpoint_interval,
                          overwrite)
        kept = output.resume(state, integrator, forces.verlet, potential)
        if kept is not None:
            forces.pairs, rows = forces.verlet.pairs, kept
        output.open(resumed=kept is not None)
    resumed = bool(rows)

    def record():
        ekin = state.kinetic_energy()
        temperature = 2.0 * ekin / (state.dof * units.kB)  # = state.temperature(), without a second kinetic energy
        row = [state.step, state.time_fs, state.energy, ekin, state.energy + ekin, temperature]
        rows.append(row)
        if output:
            output.record(state, row)

    status, report = "completed", None
    try:
        if not resumed:
            state.energy, state.forces = forces(state.positions)
            monitor.check(state, forces.pairs, forces.distances)
            record()
        bar = progress_bar(total=steps, initial=state.step, desc=f"MD {ensemble}", unit="step", enabled=progress)
        while state.step < steps:
            if field_at is not None:  # the field at the time of this step's force call
                forces.batcher.set_field(field_at(state.time_fs + timestep_fs))
            integrator.step(state, forces)
            state.step += 1
            state.time_fs += timestep_fs
            monitor.check(state, forces.pairs, forces.distances)
            if state.step % thermo_interval == 0:
                record()
            if output:
                output.step_done(state, integrator, forces.verlet, potential)
            bar.update(1)
        bar.close()
    except MDBlowUpError as exc:
        uncertain = isinstance(exc, MDUncertaintyStop)
        status, report = ("uncertain" if uncertain else "blown_up"), exc.report
        print(f"\n{exc}", file=sys.stderr)
        if output:
            output.stopped(report, uncertain)
    finally:
        if output:
            output.close()
    thermo = thermo_columns(rows)
    thermo["n_atoms"] = state.n_atoms
    final = Structure(numbers=state.numbers, positions=state.positions, cell=state.cell, pbc=state.pbc) \
        if status == "completed" else None
    return MDResult(status=status, steps=state.step, thermo=thermo, report=report, final=final)
