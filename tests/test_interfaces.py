"""ASE calculator: same numbers as the Potential, ASE's stress convention, and ASE MD runs."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from ffspace.interfaces import FFSpaceCalculator
from ffspace.models import PaiNN
from ffspace.potential import Potential
from ffspace.testing.physics import periodic_box


def test_ase_calculator_matches_potential(trained_package, ethanol_data):
    calc = FFSpaceCalculator(trained_package, dtype="float64")
    s = ethanol_data[3]
    atoms = s.to_ase()
    atoms.calc = calc
    pot = Potential.load(trained_package, dtype=torch.float64)
    ref = pot([s])
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"][0], abs=1e-10)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(ref["energy"][0], abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"][0], atol=1e-10)
    np.testing.assert_allclose(atoms.get_potential_energies().sum(), ref["energy"][0], atol=1e-8)


def test_ase_stress_sign_and_voigt_order():
    torch.manual_seed(0)
    calc = FFSpaceCalculator(potential=Potential(PaiNN([1, 8], cutoff=3.5, features=16, layers=2),
                                                 dtype=torch.float64))
    atoms = periodic_box(4).to_ase()
    atoms.calc = calc
    stress = atoms.get_stress()  # Voigt, ASE sign: σ = (1/V) dE/dε
    h = 1e-6
    e = []
    for sign in (1, -1):
        a = atoms.copy()
        a.calc = calc
        a.set_cell(atoms.cell * (1 + sign * h), scale_atoms=True)
        e.append(a.get_potential_energy())
    # Isotropic strain: dE/dε_iso = V (σ_xx + σ_yy + σ_zz)
    trace = (e[0] - e[1]) / (2 * h) / atoms.get_volume()
    assert stress[:3].sum() == pytest.approx(trace, rel=1e-5, abs=1e-9)


def test_ase_md_runs():
    from ase import units
    from ase.md.verlet import VelocityVerlet

    torch.manual_seed(0)
    atoms = molecule("CH3CH2OH")
    atoms.calc = FFSpaceCalculator(potential=Potential(PaiNN([1, 6, 8], cutoff=4.0, features=16, layers=2),
                                                       dtype=torch.float64))
    dyn = VelocityVerlet(atoms, 0.25 * units.fs)
    e0 = atoms.get_total_energy()
    dyn.run(20)
    assert abs(atoms.get_total_energy() - e0) < 1e-3


def test_a_trained_package_runs_md_in_openmm_and_bad_topologies_are_refused(trained_package, ethanol_data):
    """`openmm_system` from a package file: 200 Langevin steps (0.5 fs, 300 K) in OpenMM stay finite and bonded;
    atoms the model does not know are refused before any step."""
    openmm = pytest.importorskip("openmm")
    if not hasattr(openmm, "PythonForce"):
        pytest.skip(f"OpenMM {openmm.__version__} has no PythonForce")
    from openmm import unit

    from ffspace.errors import ConfigError
    from ffspace.interfaces.openmm_ml import openmm_force, openmm_positions, openmm_system

    s = ethanol_data[0]
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(openmm_system(trained_package, s), integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(openmm_positions(s))
    integrator.step(200)
    state = context.getState(getEnergy=True, getPositions=True)
    assert np.isfinite(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    pos = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
    assert np.linalg.norm(pos[0] - pos[1]) < 1.8  # C–C still bonded
    with pytest.raises(ConfigError, match=r"also have \['S'\]"):
        openmm_force(trained_package, [6, 16, 1])


def test_the_openmm_cost_benchmark_runs(trained_package, capsys):
    pytest.importorskip("openmm")
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("openmm_ml_cost", root / "benchmarks" / "openmm_ml_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--package", str(trained_package), "--data",
                str(root / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz"), "--steps", "20", "--rounds", "1"])
    table = capsys.readouterr().out
    assert "| OpenMM (PythonForce) |" in table and "| ffspace run_md |" in table
