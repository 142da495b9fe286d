"""Trained packages of every family kept in the repository (bench_aspirin's families and peers, the MM-prior
hybrid, Deep Potential, linear ACE) give ffspace's energy and forces in OpenMM, TorchSim and LAMMPS (float64: 1e-5
relative energy, 1e-6 eV/Å forces) on a molecule they know the elements of. The physics suite checks the same on
random weights, molecule and box; this checks real fitted weights, per engine, in one pass."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ffspace.data import read_dataset
from ffspace.datasets import builtin_path
from ffspace.potential import Potential

ROOT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
PACKAGES = sorted(ROOT.glob("bench_aspirin/aspirin/*/train/model.safetensors")) + [
    ROOT / "bench_stability_priors/aspirin/mace_mm/train/model.safetensors",
    ROOT / "deep_potential/aspirin_dp.safetensors", ROOT / "linear_ace/aspirin_ace_v2.safetensors"]
PEERS = {"mace_torch": "mace", "torchani": "torchani"}


def _engines(pot, s):
    """(engine, energy eV, forces eV/Å) for each engine that is installed."""
    out = []
    try:
        import openmm
        from openmm import unit

        from ffspace import units
        from ffspace.interfaces.openmm_ml import openmm_positions, openmm_system

        context = openmm.Context(openmm_system(pot, s), openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(openmm_positions(s))
        state = context.getState(getEnergy=True, getForces=True)
        out.append(("OpenMM", state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * units.kJ_per_mol,
                    state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
                    * units.kJ_per_mol / units.nm))
    except ImportError:
        pass
    try:
        import torch_sim as ts

        from ffspace.interfaces.torchsim import TorchSimModel

        result = TorchSimModel(pot)(ts.initialize_state([s.to_ase()], torch.device("cpu"), torch.float64))
        out.append(("TorchSim", float(result["energy"][0]), result["forces"].detach().numpy()))
    except ImportError:
        pass
    try:
        from ffspace.interfaces.lammps import attach, energy_forces, lammps_from_structure

        lmp, types = lammps_from_structure(s)
        try:
            fix = attach(lmp, pot, types)
            lmp.command("run 0")
            out.append(("LAMMPS", *energy_forces(lmp, fix=fix)))
        finally:
            lmp.close()
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.parent.parent.name if p.name == "model.safetensors"
                         else p.stem)
def test_a_trained_package_is_the_same_in_every_engine(package):
    if not package.exists():
        pytest.skip(f"{package} is not in this checkout")
    peer = PEERS.get(package.parent.parent.name)
    if peer:
        pytest.importorskip(peer, reason=f"{peer} (optional peer) is not installed")
    s = read_dataset(builtin_path("ethanol_gfn2xtb"))[0]
    pot = Potential.load(package, dtype=torch.float64)
    ours = pot.compute(pot.batch([s]), forces=True)
    e, f = float(ours["energy"][0]), ours["forces"].numpy()
    engines = _engines(pot, s)
    if not engines:
        pytest.skip("none of OpenMM, torch-sim, LAMMPS is installed")
    for name, energy, forces in engines:
        assert abs(energy - e) <= 1e-5 * max(1.0, abs(e)), name
        assert np.abs(np.asarray(forces) - f).max() <= 1e-6, name
