"""Temperature replica exchange for one molecule in OpenMM through openmmtools (``ReplicaExchangeSampler``), with any
OpenMM System: an ffspace model (`openmm_ml.openmm_system`; its PythonForce pickles as package bytes, which is how
openmmtools copies Systems), an exported graph-learned MM, or anything else.

Replicas run Langevin dynamics between exchange attempts (Gibbs sampling of the state permutation, openmmtools'
default); the storage file (netCDF, every iteration) is what a killed run resumes from: openmmtools reloads the
sampler from it (its stored moves and temperatures: give the same settings when resuming) and runs the remaining
iterations. The summary gives the exchange acceptance between neighbouring
temperatures and the coldest state's samples of a chosen dihedral (positions are stored every iteration).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .openmm_metad import dihedral_degrees


def _openmmtools():
    try:
        from openmmtools import mcmc, multistate, states
    except ImportError:
        raise ImportError("replica exchange needs openmmtools: pip install openmmtools") from None
    return mcmc, multistate, states


def run_temperature_replica_exchange(system, structure, temperatures, iterations: int, out_dir,
                                     steps_per_iteration: int = 500, timestep_fs: float = 0.5,
                                     collision_rate_per_ps: float = 1.0, dihedral=None) -> dict:
    """Run (or resume) replica exchange of ``structure`` (a molecule; its positions start every replica) with the
    OpenMM ``system`` at ``temperatures`` (K, ascending) for ``iterations`` exchange attempts in all, each after
    ``steps_per_iteration`` Langevin steps. Storage and ``remd.json`` go to ``out_dir``."""
    from openmm import unit

    mcmc, multistate, states = _openmmtools()
    temperatures = [float(t) for t in temperatures]
    if len(temperatures) < 2 or sorted(temperatures) != temperatures:
        raise ConfigError(f"replica exchange needs two or more ascending temperatures, got {temperatures}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = out / "remd.nc"
    if storage.exists():
        reporter = multistate.MultiStateReporter(str(storage), open_mode="a")
        sampler = multistate.ReplicaExchangeSampler.from_storage(reporter)
        stored = [float(s.temperature.value_in_unit(unit.kelvin)) for s in reporter.read_thermodynamic_states()[0]]
        if len(stored) != len(temperatures) or not np.allclose(stored, temperatures):
            reporter.close()
            raise ConfigError(f"{storage} holds a run at {stored} K, not {temperatures} K: use a new out_dir")
    else:
        thermo = [states.ThermodynamicState(system=system, temperature=t * unit.kelvin) for t in temperatures]
        start = states.SamplerState(positions=np.asarray(structure.positions) * 0.1 * unit.nanometer)
        move = mcmc.LangevinDynamicsMove(timestep=timestep_fs * unit.femtoseconds,
                                         collision_rate=collision_rate_per_ps / unit.picosecond,
                                         n_steps=steps_per_iteration)
        sampler = multistate.ReplicaExchangeSampler(mcmc_moves=move, number_of_iterations=iterations)
        reporter = multistate.MultiStateReporter(str(storage), checkpoint_interval=1)
        sampler.create(thermodynamic_states=thermo, sampler_states=[start] * len(temperatures), storage=reporter)
    try:
        remaining = iterations - sampler.iteration
        if remaining > 0:
            sampler.extend(remaining)
        summary = _summary(reporter, temperatures, structure, dihedral, steps_per_iteration * timestep_fs / 1000)
    finally:
        reporter.close()
    (out / "remd.json").write_text(json.dumps(summary, indent=2))
    return summary


def _summary(reporter, temperatures, structure, dihedral, ps_per_iteration: float) -> dict:
    from openmm import unit

    n_states = len(temperatures)
    accepted, proposed = reporter.read_mixing_statistics()
    accepted, proposed = np.asarray(accepted).sum(axis=0), np.asarray(proposed).sum(axis=0)
    neighbour = [float(accepted[k, k + 1] + accepted[k + 1, k]) / max(1.0, float(proposed[k, k + 1]
                                                                                 + proposed[k + 1, k]))
                 for k in range(n_states - 1)]
    replica_states = np.asarray(reporter.read_replica_thermodynamic_states())  # (iterations + 1, replicas)
    n_iter = replica_states.shape[0] - 1
    summary = {"temperatures_K": temperatures, "iterations": int(n_iter), "ps_per_replica": n_iter * ps_per_iteration,
               "neighbour_acceptance": neighbour,
               "replica_state_visits": [np.bincount(replica_states[1:, r], minlength=n_states).tolist()
                                        for r in range(replica_states.shape[1])]}
    if dihedral is not None:
        coldest = []
        for it in range(1, n_iter + 1):
            replica = int(np.where(replica_states[it] == 0)[0][0])
            sampler_states = reporter.read_sampler_states(it)
            pos = sampler_states[replica].positions.value_in_unit(unit.angstrom)
            coldest.append(dihedral_degrees(pos, dihedral))
        summary["dihedral"] = [int(k) for k in dihedral]
        summary["coldest_dihedral_deg"] = coldest
    return summary
