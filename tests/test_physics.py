"""The shared physics suite, run for every model family and a composed Sum, in float64."""

import pytest

from ffspace.models import ZBL, AtomicReference, ClassicalMM, D4Dispersion, DescriptorNet, LearnedCoulomb, PaiNN, SchNet, Sum
from ffspace.testing import physics

ELEMENTS = [1, 6, 8]


def make(name):
    # Small widths keep the suite fast; the symmetry and calculus do not depend on size.
    if name == "painn":
        return PaiNN(ELEMENTS, cutoff=4.0, features=16, layers=2)
    if name == "schnet":
        return SchNet(ELEMENTS, cutoff=4.0, features=16, layers=2)
    if name == "ani":
        return DescriptorNet(ELEMENTS, cutoff=4.0, angular_cutoff=3.0, n_radial=6, n_angular_shifts=2, hidden=(16,))
    if name == "mace":
        pytest.importorskip("e3nn")
        from ffspace.models.mace import MACE

        return MACE(ELEMENTS, cutoff=4.0, channels=8, lmax=2, layers=2, correlation=3)
    if name == "d4":
        pytest.importorskip("dftd4")
        return D4Dispersion(method="pbe")
    if name == "mm":
        return ClassicalMM(ELEMENTS, cutoff=4.0)
    if name == "coulomb":
        model = LearnedCoulomb(ELEMENTS, cutoff=3.5, features=16, layers=1)
        model.charge_net.energy_scale.fill_(1.0)  # sizeable charges, so the checks test real electrostatics
        return model
    if name == "zbl":
        # A wider switch than the default, so the prior acts on the (uncompressed) test structures.
        return ZBL(cutoff=2.5, covalent_scale=1.6)
    if name == "sum":
        return Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}),
                    PaiNN(ELEMENTS, cutoff=4.0, features=16, layers=2), ZBL(cutoff=2.0, covalent_scale=1.3)])
    raise ValueError(name)


FAMILIES = ["mm", "painn", "schnet", "ani", "mace", "coulomb", "d4", "zbl", "sum"]


def _skip_if_molecules_only(model):
    if isinstance(model, D4Dispersion):
        pytest.skip("the D4 prior refuses periodic cells (dftd4's truncated lattice sums), by design")


@pytest.fixture(params=FAMILIES)
def model(request):
    import torch

    torch.manual_seed(0)
    return make(request.param)


def test_finite_difference_forces_molecule(model):
    physics.check_finite_difference_forces(model)


def test_finite_difference_forces_periodic(model):
    _skip_if_molecules_only(model)
    physics.check_finite_difference_forces(model, physics.periodic_box())


def test_finite_difference_stress(model):
    _skip_if_molecules_only(model)
    physics.check_finite_difference_stress(model)


def test_invariances_molecule(model):
    physics.check_invariances(model)


def test_invariances_periodic(model):
    _skip_if_molecules_only(model)
    physics.check_invariances(model, physics.periodic_box(2))


def test_additivity(model):
    if getattr(model, "long_range", False):
        pytest.skip("long-range terms (Coulomb, dispersion) are not additive over far-apart molecules, by design")
    physics.check_additivity(model)


def test_batching_and_no_cross_talk(model):
    physics.check_batching(model, periodic=not isinstance(model, D4Dispersion))


def test_smooth_cutoff(model):
    if getattr(model, "long_range", False):
        pytest.skip("long-range terms (Coulomb, dispersion) have no cutoff, by design")
    physics.check_smooth_cutoff(model)


def test_short_nve_conserves_energy(model):
    physics.check_nve_conservation(model)


def test_suite_catches_a_broken_model():
    """The suite must be able to fail: a model whose energy ignores rotations' meaning fails invariance."""
    import torch

    class Broken(PaiNN):
        def forward(self, batch):
            return super().forward(batch) + batch.positions[:, 0] * 0.1  # depends on absolute x

    torch.manual_seed(0)
    with pytest.raises(AssertionError):
        physics.check_invariances(Broken(ELEMENTS, cutoff=4.0, features=8, layers=1))


def test_zbl_is_off_at_bonding_distances_and_repulsive_at_contact():
    import numpy as np
    import torch

    from ffspace.data import Structure
    from ffspace.potential import Potential

    pot = Potential(ZBL(), dtype=torch.float64)

    def energy(r):
        return float(pot([Structure(numbers=[6, 1], positions=[[0, 0, 0], [r, 0, 0]])])["energy"][0])

    assert energy(1.09) == 0.0  # C–H bond length: the learned model owns this region
    assert energy(0.4) > 10.0  # close contact: strongly repulsive (eV)
    assert np.all(np.diff([energy(r) for r in (0.3, 0.4, 0.5, 0.6, 0.7)]) < 0)


def test_mm_perceives_ethanol_topology():
    import torch

    from ffspace.graph import batch_structures

    model = ClassicalMM(ELEMENTS, cutoff=4.0).double()
    s = physics.ethanol(0, rattle=0.0)
    batch = batch_structures([s], 4.0, dtype=torch.float64)
    r = torch.linalg.norm(batch.edge_vectors(), dim=-1)
    nbr, degree, types = model.topology(batch, r)
    # CH3CH2OH: 8 bonds; C and C four-coordinated, O two, every H one.
    assert int(degree.sum()) == 16
    assert sorted(degree.tolist()) == [1] * 6 + [2, 4, 4]
