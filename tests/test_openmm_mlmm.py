"""ML/MM in OpenMM (`ffspace.interfaces.openmm_mlmm`): the ML and MM parts add up, a solvated molecule runs, and
atoms that do not fit are refused before any step."""

import numpy as np
import pytest
import torch

from ffspace import units
from ffspace.data import Structure
from ffspace.errors import ConfigError
from ffspace.models import GraphMM, PaiNN
from ffspace.potential import Potential
from ffspace.testing.physics import ethanol

from .test_physics import randomized_graph_mm

openmm = pytest.importorskip("openmm")
if not hasattr(openmm, "PythonForce"):
    pytest.skip(f"OpenMM {openmm.__version__} has no PythonForce", allow_module_level=True)
from openmm import app, unit  # noqa: E402

from ffspace.interfaces.openmm import export_openmm  # noqa: E402
from ffspace.interfaces.openmm_mlmm import mixed_system, solvated_graph_mm  # noqa: E402


def _graph_mm():
    torch.manual_seed(0)
    return Potential(randomized_graph_mm(GraphMM([1, 6, 7, 8], features=16, layers=2), seed=0), dtype=torch.float64)


def _ml(elements=(1, 6, 8)):
    torch.manual_seed(1)
    return Potential(PaiNN(list(elements), cutoff=4.0, features=16, layers=2), dtype=torch.float64)


def _topology(numbers):
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    for i, z in enumerate(numbers):
        top.addAtom(f"A{i}", app.Element.getByAtomicNumber(int(z)), res)
    return top


def _energy_forces(system, positions_A, groups=-1):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions_A * 0.1)
    state = ctx.getState(getEnergy=True, getForces=True, groups=groups)
    e = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * units.kJ_per_mol
    f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer) * units.kJ_per_mol / units.nm
    return e, f


def _pair():
    a, b = ethanol(1, rattle=0.05), ethanol(2, rattle=0.05)
    pos = np.vstack([a.positions, b.positions + [7.0, 0.5, 0.0]])
    return a, Structure(numbers=np.concatenate([a.numbers, b.numbers]), positions=pos)


def _alone(system, n):
    """The MM System's terms among its first ``n`` atoms only (the other atoms uncharged, without LJ or bonds)."""
    alone = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for force in alone.getForces():
        if isinstance(force, openmm.NonbondedForce):
            for i in range(n, force.getNumParticles()):
                force.setParticleParameters(i, 0.0, 1.0, 0.0)
            for k in range(force.getNumExceptions()):
                i, j, *_ = force.getExceptionParameters(k)
                if max(i, j) >= n:
                    force.setExceptionParameters(k, i, j, 0.0, 1.0, 0.0)
        elif isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r, _ = force.getBondParameters(k)
                if max(i, j) >= n:
                    force.setBondParameters(k, i, j, r, 0.0)
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                *ijk, a, _ = force.getAngleParameters(k)
                if max(ijk) >= n:
                    force.setAngleParameters(k, *ijk, a, 0.0)
        elif isinstance(force, openmm.PeriodicTorsionForce):
            for k in range(force.getNumTorsions()):
                *ijkl, per, phase, _ = force.getTorsionParameters(k)
                if max(ijkl) >= n:
                    force.setTorsionParameters(k, *ijkl, per, phase, 0.0)
    return alone


def test_the_ml_and_mm_parts_add_up():
    """Two ethanols in a graph-learned MM System (no cutoff); the first made ML: E_mixed = E_ML(first) +
    E_MM(both) − E_MM(first alone), and the same for forces, in float64."""
    mm, ml = _graph_mm(), _ml()
    first, pair = _pair()
    n = first.n_atoms
    mm_pair = export_openmm(mm, pair).system
    mixed = mixed_system(mm_pair, _topology(pair.numbers), range(n), ml)
    e_mixed, f_mixed = _energy_forces(mixed, pair.positions)
    e_pair, f_pair = _energy_forces(mm_pair, pair.positions)
    e_first, f_first = _energy_forces(_alone(mm_pair, n), pair.positions)
    f_first = f_first[:n]
    ours = ml.compute(ml.batch([first]), forces=True)
    e_ml, f_ml = float(ours["energy"][0]), ours["forces"].numpy()
    expected_e = e_ml + e_pair - e_first
    assert abs(e_mixed - expected_e) <= 1e-5 * max(1.0, abs(expected_e))
    expected_f = f_pair.copy()
    expected_f[:n] += f_ml - f_first
    assert np.abs(f_mixed - expected_f).max() <= 1e-6
    # the MM terms inside the ML part are gone, those across the boundary stay
    assert abs(e_pair - e_first) > 1e-3


def test_a_solvated_molecule_runs_ml_mm_and_the_ml_group_is_the_model():
    """Ethanol from the graph-learned MM in TIP3P water (PME), made ML: the ML force group is the model's energy of
    the molecule, 50 Langevin steps stay finite, and the water is still MM."""
    mm, ml = _graph_mm(), _ml()
    mol = ethanol(1, rattle=0.02)
    solvated = solvated_graph_mm(mm, mol, padding_nm=0.9, cutoff_nm=0.8)
    n_water = (solvated.system.getNumParticles() - mol.n_atoms) // 3
    assert n_water > 50 and solvated.solute_atoms == list(range(mol.n_atoms))
    mixed = mixed_system(solvated.system, solvated.topology, solvated.solute_atoms, ml, ml_force_group=1)
    positions = solvated.positions.value_in_unit(unit.angstrom)
    e_ml, _ = _energy_forces(mixed, positions, groups={1})
    assert e_ml == pytest.approx(ml([Structure(numbers=mol.numbers, positions=positions[:mol.n_atoms])])["energy"][0],
                                 rel=1e-8)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
    context = openmm.Context(mixed, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(solvated.positions)
    integrator.step(50)
    assert np.isfinite(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))


def test_atoms_that_do_not_fit_are_refused_before_any_step():
    mm = _graph_mm()
    first, pair = _pair()
    system = export_openmm(mm, pair).system
    with pytest.raises(ConfigError, match=r"also have \['O'\]"):
        mixed_system(system, _topology(pair.numbers), range(first.n_atoms), _ml(elements=(1, 6)))
    with pytest.raises(ConfigError, match="topology has 9 atoms"):
        mixed_system(system, _topology(first.numbers), range(first.n_atoms), _ml())
    with pytest.raises(ConfigError, match="distinct indices"):
        mixed_system(system, _topology(pair.numbers), [0, 0, 1], _ml())


def test_a_molecule_split_across_the_box_is_made_whole():
    """In a periodic ML/MM System the model sees the molecule whole even when its atoms come wrapped one by one."""
    from ffspace.interfaces.openmm_ml import whole_molecule

    mol = ethanol(1, rattle=0.02)
    cell = np.array([[20.0, 0, 0], [3.0, 18.0, 0], [0, 2.0, 19.0]])
    shifts = np.array([[0, 0, 0], [1, 0, 0], [0, -1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0], [-1, 0, 0], [0, 2, 0],
                       [0, 0, 0]])
    wrapped = mol.positions + shifts @ cell
    np.testing.assert_allclose(whole_molecule(wrapped, cell), mol.positions, atol=1e-12)
    with pytest.raises(ConfigError, match="larger box"):
        whole_molecule(mol.positions, np.eye(3) * 5.0)
