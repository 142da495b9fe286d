"""Well-tempered metadynamics on one dihedral in OpenMM (``openmm.app.Metadynamics``), for any OpenMM System: an
ffspace model (`openmm_ml.openmm_system`), an exported graph-learned MM, or a reference method behind a PythonForce.

The run goes in chunks; after each one the bias (OpenMM's ``biasDir`` files), the integrator's state, the free
energy estimate and the sampled dihedrals are written, so a killed run resumes from its last chunk: OpenMM's
Metadynamics loads every bias file it finds in ``biasDir`` (it treats them as other walkers' hills), which is the
bias deposited so far. A chunk also checks the molecule: a covalent bond more than ``bond_tolerance`` (0.5 Å) off
its start length, or a non-finite energy, ends the run as failed (the stability benchmark's rule), with the bond.

Free energy F(φ) = −(T + ΔT)/ΔT · V(φ) (well-tempered estimate from the bias V), on OpenMM's grid, in kcal/mol with
its minimum at 0. Convergence: the estimate at the half of the run against the one at the end, largest and RMS
difference over the whole profile.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .openmm_ml import _openmm

KCAL_PER_KJ = 1.0 / 4.184


@dataclass
class MetaDSettings:
    """Well-tempered metadynamics and the Langevin integrator under it."""

    temperature: float = 300.0  # K
    bias_factor: float = 10.0
    height_kj_mol: float = 1.0  # initial Gaussian height
    width_deg: float = 15.0  # Gaussian width (σ) on the dihedral
    pace: int = 500  # steps between Gaussians
    timestep_fs: float = 1.0
    hydrogen_mass: float = 3.0  # amu; hydrogen mass repartitioning (taken from the bonded heavy atom); 0: off
    friction_per_ps: float = 1.0
    chunk_steps: int = 10_000  # steps between checkpoints (and bond checks)
    bond_tolerance: float = 0.5  # Å
    grid: int = 181
    seed: int = 1


def repartition_hydrogen_mass(system, numbers, bonds, mass: float) -> None:
    """Give every hydrogen ``mass`` amu, taken from the heavy atom it is bonded to (the total mass is kept)."""
    _, unit = _openmm()
    for i, j in bonds:
        for h, heavy in ((i, j), (j, i)):
            if numbers[h] == 1 and numbers[heavy] != 1:
                dm = mass - system.getParticleMass(int(h)).value_in_unit(unit.dalton)
                system.setParticleMass(int(h), mass * unit.dalton)
                heavy_mass = system.getParticleMass(int(heavy)).value_in_unit(unit.dalton) - dm
                if heavy_mass <= 1.0:
                    raise ConfigError(f"hydrogen mass repartitioning leaves atom {heavy} with {heavy_mass:.2f} Da")
                system.setParticleMass(int(heavy), heavy_mass * unit.dalton)


def dihedral_degrees(positions, dihedral) -> float:
    a, b, c, d = (np.asarray(positions[k], dtype=np.float64) for k in dihedral)
    b0, b1, b2 = a - b, c - b, d - c
    b1n = b1 / np.linalg.norm(b1)
    v, w = b0 - np.dot(b0, b1n) * b1n, b2 - np.dot(b2, b1n) * b1n
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1n, v), w), np.dot(v, w))))


def run_dihedral_metadynamics(system, structure, dihedral, steps: int, out_dir, settings: MetaDSettings | None = None,
                              platform: str = "CPU", progress: bool = True) -> dict:
    """Run (or resume) well-tempered metadynamics on ``dihedral`` (four atom indices) of ``structure`` (a molecule,
    its start) with ``system`` (an OpenMM System of its atoms; changed in place: masses repartitioned and the bias
    force added) for ``steps`` steps in all; results in ``out_dir``. Returns the summary also written to
    ``metad.json``."""
    openmm, unit = _openmm()
    from openmm import app

    from ..data.bonds import covalent_bonds

    s = settings or MetaDSettings()
    out = Path(out_dir)
    (out / "bias").mkdir(parents=True, exist_ok=True)
    dihedral = [int(k) for k in dihedral]
    if len(set(dihedral)) != 4 or max(dihedral) >= len(structure.numbers):
        raise ConfigError(f"a dihedral is four distinct atoms of the molecule, got {dihedral}")
    if steps % s.chunk_steps or s.chunk_steps % s.pace:
        raise ConfigError(f"steps ({steps}) must be a multiple of chunk_steps ({s.chunk_steps}), itself a multiple "
                          f"of pace ({s.pace})")
    progress_file, history_file = out / "progress.json", out / "history.npz"
    previous = json.loads(progress_file.read_text()) if progress_file.exists() else None
    if previous is not None and (previous["settings"] != asdict(s) or previous["dihedral"] != dihedral):
        # (checked before OpenMM's Metadynamics reads the bias files of that other run)
        raise ConfigError(f"{out} holds a run with other settings or another dihedral; use a new out_dir")
    stray = sorted(p.name for p in (out / "bias").glob("bias_*.npy"))
    if previous is None and stray:
        raise ConfigError(f"{out / 'bias'} holds bias files ({stray[:3]}) but no finished chunk of a run: they are "
                          "from a run killed before its first checkpoint, or from elsewhere; remove them")
    if previous is not None and (previous.get("failure") or previous["steps"] >= steps):
        # a failed run stays failed (never resumed from wreckage); a finished one is only summarized
        history = dict(np.load(history_file))
        summary = summarize({k: list(v) for k, v in history.items()}, s)
        summary.update({"steps": previous["steps"], "failure": previous["failure"], "dihedral": dihedral,
                        "settings": asdict(s), "wall_s_this_call": 0.0})
        return summary
    i, j, _ = covalent_bonds(structure.numbers, structure.positions)
    bonds = np.stack([i, j], axis=1)
    start_lengths = np.linalg.norm(structure.positions[j] - structure.positions[i], axis=1)
    if s.hydrogen_mass:
        repartition_hydrogen_mass(system, structure.numbers, bonds, s.hydrogen_mass)
    cv = openmm.CustomTorsionForce("theta")
    cv.addTorsion(*dihedral, [])
    variable = app.BiasVariable(cv, -math.pi, math.pi, math.radians(s.width_deg), periodic=True, gridWidth=s.grid)
    meta = app.Metadynamics(system, [variable], s.temperature * unit.kelvin, s.bias_factor,
                            s.height_kj_mol * unit.kilojoules_per_mole, s.pace, saveFrequency=s.chunk_steps,
                            biasDir=str(out / "bias"))
    # OpenMM draws each Metadynamics' file id from numpy's global generator: an id equal to the earlier run's would
    # make it ignore (and later overwrite) that run's bias, so check that the bias on disk was loaded.
    if previous is not None and not np.any(meta._totalBias):
        raise ConfigError(f"the bias of the earlier run in {out / 'bias'} was not loaded (file id clash: "
                          f"{meta._id}); rerun to draw another id")
    integrator = openmm.LangevinMiddleIntegrator(s.temperature * unit.kelvin, s.friction_per_ps / unit.picosecond,
                                                 s.timestep_fs * 1e-3 * unit.picoseconds)
    # a resumed run draws new noise (the same seed would replay the noise of the run's start)
    integrator.setRandomNumberSeed(s.seed + (previous["steps"] if previous else 0))
    topology = app.Topology()
    residue = topology.addResidue("MOL", topology.addChain())
    for k, z in enumerate(structure.numbers):
        topology.addAtom(f"A{k}", app.Element.getByAtomicNumber(int(z)), residue)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(platform))
    done, history = 0, {"time_ps": [], "fes": [], "dihedral_deg": []}
    if previous is not None:  # resume: state and history of the last finished chunk (bias files: see docstring)
        done = previous["steps"]
        simulation.loadState(str(out / "state.xml"))
        simulation.currentStep = done
        with np.load(history_file) as h:
            history = {k: list(h[k]) for k in history}
    else:
        simulation.context.setPositions(structure.positions * 0.1)
        simulation.context.setVelocitiesToTemperature(s.temperature * unit.kelvin, s.seed)
    failure, t0, first = None, time.perf_counter(), done
    while done < steps and failure is None:
        meta.step(simulation, s.chunk_steps)
        done += s.chunk_steps
        state = simulation.context.getState(getPositions=True, getEnergy=True)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        lengths = np.linalg.norm(pos[bonds[:, 1]] - pos[bonds[:, 0]], axis=1)
        worst = int(np.argmax(np.abs(lengths - start_lengths)))
        if not np.isfinite(energy) or abs(lengths[worst] - start_lengths[worst]) > s.bond_tolerance:
            failure = {"time_ps": done * s.timestep_fs / 1000, "bond": bonds[worst].tolist(),
                       "start_length": float(start_lengths[worst]), "length": float(lengths[worst]),
                       "energy_finite": bool(np.isfinite(energy))}
        fes = meta.getFreeEnergy().value_in_unit(unit.kilojoules_per_mole) * KCAL_PER_KJ
        history["time_ps"].append(done * s.timestep_fs / 1000)
        history["fes"].append(np.asarray(fes, dtype=np.float64).ravel() - np.min(fes))
        history["dihedral_deg"].append(dihedral_degrees(pos, dihedral))
        # the chunk's files, then progress.json last, each replaced atomically: a kill leaves the last chunk's
        # checkpoint (OpenMM has already saved that chunk's hills, so at most chunk_steps / pace hills are kept
        # twice when the kill falls between its bias file and progress.json)
        np.savez(out / "history.tmp.npz", **{k: np.asarray(v) for k, v in history.items()})
        simulation.saveState(str(out / "state.tmp.xml"))
        os.replace(out / "history.tmp.npz", history_file)
        os.replace(out / "state.tmp.xml", out / "state.xml")
        (out / "progress.tmp.json").write_text(json.dumps({"steps": done, "settings": asdict(s),
                                                           "dihedral": dihedral, "failure": failure}))
        os.replace(out / "progress.tmp.json", progress_file)
        if progress:
            rate = (time.perf_counter() - t0) / (done - first)
            print(f"  metadynamics: {done * s.timestep_fs / 1000:.0f} / {steps * s.timestep_fs / 1000:.0f} ps, "
                  f"φ = {history['dihedral_deg'][-1]:.0f}°, {rate * 1000:.2f} ms/step", flush=True)
    summary = summarize(history, s)
    summary.update({"steps": done, "failure": failure, "dihedral": dihedral, "settings": asdict(s),
                    "wall_s_this_call": time.perf_counter() - t0})
    (out / "metad.json").write_text(json.dumps(summary, indent=2))
    return summary


def summarize(history: dict, settings: MetaDSettings) -> dict:
    """The final profile and the half-run convergence check from a run's history."""
    fes = np.asarray(history["fes"])
    grid = np.linspace(-180.0, 180.0, fes.shape[1]) if len(fes) else np.zeros(0)
    if len(fes) < 2:
        return {"grid_deg": grid.tolist(), "fes_kcal_mol": fes[-1].tolist() if len(fes) else [],
                "half_vs_end_max_kcal_mol": None, "half_vs_end_rms_kcal_mol": None}
    half = fes[len(fes) // 2 - 1]
    end = fes[-1]
    diff = (end - end.min()) - (half - half.min())
    return {"grid_deg": grid.tolist(), "fes_kcal_mol": end.tolist(), "fes_half_kcal_mol": half.tolist(),
            "time_ps": float(history["time_ps"][-1]), "half_time_ps": float(history["time_ps"][len(fes) // 2 - 1]),
            "half_vs_end_max_kcal_mol": float(np.abs(diff).max()),
            "half_vs_end_rms_kcal_mol": float(np.sqrt(np.mean(diff ** 2))),
            "barrier_kcal_mol": float(end.max() - end.min())}

