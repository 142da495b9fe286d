"""The shared physics suite, run for every model family and a composed Sum, in float64."""

import pytest

from ffspace.models import ZBL, AtomicReference, ClassicalMM, D4Dispersion, DescriptorNet, GraphMM, LearnedCoulomb, PaiNN, SchNet, Sum
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
    if name == "mace_vectors":
        pytest.importorskip("e3nn")
        from ffspace.models.mace import MACE

        return MACE(ELEMENTS, cutoff=4.0, channels=8, lmax=2, layers=3, correlation=3, hidden_lmax=1)
    if name == "mace_torch":  # the peer, when the optional mace-torch is installed
        pytest.importorskip("mace", reason="mace-torch (optional peer) is not installed")
        from ffspace.models.mace_torch import MACETorch

        return randomized_readouts(MACETorch(ELEMENTS, cutoff=4.0, channels=8, lmax=2, hidden_lmax=1))
    if name == "torchani":  # the ANI peer, when the optional torchani is installed
        pytest.importorskip("torchani", reason="torchani (optional peer) is not installed")
        from ffspace.models.torchani_peer import TorchANI

        return TorchANI(ELEMENTS, cutoff=4.0, angular_cutoff=3.0)
    if name == "d4":
        pytest.importorskip("dftd4")
        return D4Dispersion(method="pbe")
    if name == "mm":
        return ClassicalMM(ELEMENTS, cutoff=4.0)
    if name == "graph_mm":
        return randomized_graph_mm(GraphMM(ELEMENTS, features=16, layers=2))
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


FAMILIES = ["mm", "graph_mm", "painn", "schnet", "ani", "mace", "mace_vectors", "mace_torch", "torchani", "coulomb", "d4", "zbl",
            "sum"]


def randomized_readouts(model, seed: int = 0):
    """mace-torch starts its readouts near zero: O(1) weights make the energy sizeable, so the checks bite."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "readouts" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    return model


def randomized_graph_mm(model, seed: int = 0, scale: float = 0.3):
    """Give the zero-initialised readouts random weights, so every MM term (torsions, charges...) is exercised."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.bond_head, model.angle_head, model.torsion_head, model.atom_head):
            head[-1].weight.copy_(scale * torch.randn(head[-1].weight.shape, generator=gen))
            head[-1].bias.copy_(scale * torch.randn(head[-1].bias.shape, generator=gen))
    return model


MOLECULES_ONLY = (D4Dispersion, GraphMM)


def _skip_if_molecules_only(model):
    if isinstance(model, D4Dispersion):
        pytest.skip("the D4 prior refuses periodic cells (dftd4's truncated lattice sums), by design")
    if isinstance(model, GraphMM):
        pytest.skip("graph-learned MM is a molecular force field (all-pairs nonbonded, no cutoff), by design")


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
    physics.check_batching(model, periodic=not isinstance(model, MOLECULES_ONLY))


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


def test_equivariant_vectors_keep_the_energy_a_true_scalar():
    """A mirror image has the same energy: the l = 1 hidden features must couple with parity-allowed paths only.

    (Models built from distances and angles cannot fail this; MACE's vector paths can: a forbidden path,
    e.g. the cross product 1 ⊗ 1 → 1, changes the mirror image's energy. The vector weights are enlarged so
    that such a path would show far above rounding, relative to the energy change of a small distortion.)
    """
    import numpy as np
    import torch

    from ffspace.potential import Potential

    torch.manual_seed(0)
    model = make("mace_vectors")
    with torch.no_grad():
        for w in list(model.vec_contraction) + list(model.vec_mix) + list(model.up_vec):
            w.mul_(10.0)
    pot = Potential(model, dtype=torch.float64)
    s = physics.ethanol(2, rattle=0.1)
    mirrored = s.copy(positions=s.positions * np.array([-1.0, 1.0, 1.0]))
    distorted = s.copy(positions=s.positions + 1e-3)
    distorted.positions[0, 0] += 1e-3
    e = pot([s, mirrored, distorted])["energy"]
    assert abs(e[0] - e[1]) < 1e-7 * abs(e[0] - e[2])
