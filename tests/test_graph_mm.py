"""Graph-learned MM: topology, graph-only parameters, and OpenMM export that reproduces ffspace."""

import numpy as np
import pytest
import torch
from ase.build import molecule

from ffspace.data import Structure
from ffspace.errors import ModelPackageError
from ffspace.graph import batch_structures
from ffspace.models import GraphMM, PaiNN, Sum
from ffspace.models.topology import perceive
from ffspace.potential import Potential
from ffspace.potential.package import save_package
from ffspace.testing.physics import ethanol, periodic_box

from .test_physics import randomized_graph_mm

ELEMENTS = [1, 6, 7, 8]


def _model(seed=0):
    torch.manual_seed(seed)
    return randomized_graph_mm(GraphMM(ELEMENTS, features=16, layers=2), seed=seed)


def _rattled(name, seed, amount=0.05):
    atoms = molecule(name)
    rng = np.random.default_rng(seed)
    return Structure(numbers=atoms.numbers, positions=atoms.positions + rng.normal(0, amount, atoms.positions.shape))


def test_ethanol_topology_counts():
    batch = batch_structures([ethanol(0, rattle=0.0)], 3.0)
    topo = perceive(batch)
    # CH3CH2OH: 8 bonds; angles 6 + 6 (two carbons) + 1 (O); torsions H–C–C–H 6, H–C–C–O 3, C–C–O–H 1,
    # H–C–O–H 2; no three-coordinated centre; 36 pairs − 8 bonds − 13 angles = 15 nonbonded, 12 of them 1-4.
    assert len(topo.bonds) == 8 and len(topo.angles) == 13 and len(topo.torsions) == 12
    assert len(topo.impropers) == 0
    assert len(topo.pairs) == 15 and int(topo.pair_is_14.sum()) == 12
    assert len(topo.excluded) == 21


def _keys(pairs):
    return set(map(tuple, pairs.tolist()))


@pytest.mark.parametrize("name", ["C6H6", "C3H6_D3h", "cyclobutane", "C4H4O"])
def test_ring_topologies_are_consistent(name):
    """Rings reach a pair by several paths: each pair is excluded, 1-4 or plain exactly once."""
    s = _rattled(name, 0, 0.0)
    topo = perceive(batch_structures([s], 3.0))
    n = len(s.numbers)
    excluded, pairs = _keys(topo.excluded), _keys(topo.pairs)
    assert len(excluded) == len(topo.excluded) and len(pairs) == len(topo.pairs)
    assert not excluded & pairs and len(excluded) + len(pairs) == n * (n - 1) // 2
    one_four = _keys(topo.pairs[topo.pair_is_14])
    ends = {tuple(sorted(t)) for t in topo.torsions[:, [0, 3]].tolist()}
    assert one_four == ends - excluded  # 1-4 = torsion ends that are not also 1-2 or 1-3
    if name == "C6H6":  # para carbons are 1-4 both ways round the ring; six sp2 carbons × 6 orderings
        assert len(topo.impropers) == 36
        para = [(a, b) for a, b in one_four if s.numbers[a] == 6 and s.numbers[b] == 6]
        assert len(para) == 3
    if name == "C3H6_D3h":  # every H–H pair on different carbons is 1-4; geminal pairs are 1-3
        assert len(topo.torsions) == 24 and len(pairs) == 12 and one_four == pairs


def test_parameters_depend_on_the_graph_only():
    model = _model().double()
    a, b = ethanol(1, rattle=0.05), ethanol(2, rattle=0.08)
    _, pa = model.parameters_for(batch_structures([a], 3.0))
    _, pb = model.parameters_for(batch_structures([b], 3.0))
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], rtol=0, atol=0)


def test_periodic_cells_are_refused_clearly():
    pot = Potential(_model(), dtype=torch.float64)
    with pytest.raises(ValueError, match="molecular force field"):
        pot([periodic_box(0)])


@pytest.mark.parametrize("name", ["CH3CH2OH", "C6H6", "CH3CONH2", "C4H4O"])
def test_openmm_export_reproduces_ffspace(name):
    """OpenMM (Reference platform, double precision) gives ffspace's energy (rel 1e-5) and forces (1e-3 eV/Å)."""
    pytest.importorskip("openmm")
    from ffspace.interfaces.openmm import export_openmm

    pot = Potential(_model(), dtype=torch.float64)
    frames = [_rattled(name, seed) for seed in range(4)]
    export = export_openmm(pot, frames[0])
    ctx = export.context()
    ref = pot(frames)
    assert all(v > 0 for k, v in export.n_terms.items() if k in ("bonds", "angles", "nonbonded_pairs"))
    for k, s in enumerate(frames):
        e, f = export.energy_forces(s.positions, ctx)
        assert e == pytest.approx(ref["energy"][k], rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(f, ref["forces"][k], atol=1e-3)


def test_openmm_export_of_a_package_with_reference_energies(tmp_path):
    pytest.importorskip("openmm")
    from ffspace.interfaces.openmm import export_openmm
    from ffspace.models import AtomicReference

    model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 7: -1485.0, 8: -2041.0}), _model(1)])
    path = save_package(tmp_path / "gmm.safetensors", model)
    s = _rattled("CH3CONH2", 7)
    export = export_openmm(path, s)
    ref = Potential.load(path, dtype=torch.float64)([s])
    e, f = export.energy_forces(s.positions)
    assert e == pytest.approx(ref["energy"][0], rel=1e-8)  # the constant reference energies are the offset
    np.testing.assert_allclose(f, ref["forces"][0], atol=1e-3)
    xml = export.save(tmp_path / "system.xml")
    import openmm

    system = openmm.XmlSerializer.deserialize(xml.read_text())
    assert system.getNumParticles() == len(s.numbers) and system.getNumForces() == 4


def test_openmm_export_refuses_models_without_standard_forces():
    pytest.importorskip("openmm")
    from ffspace.interfaces.openmm import export_openmm

    with pytest.raises(ModelPackageError, match="graph-learned MM"):
        export_openmm(PaiNN([1, 6, 8], cutoff=4.0, features=8, layers=1), ethanol(0))


def test_graph_mm_trains_and_transfers_to_an_unseen_conformer(tmp_path, ethanol_data):
    """A short fit lowers the force error on held-out frames well below the untrained generic force field."""
    from ffspace.evaluate import error_metrics, predict
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    train, val = ethanol_data[:120], ethanol_data[300:340]
    model = build_model_for_data({"family": "graph_mm", "features": 16, "layers": 2}, train, seed=0)
    before = error_metrics(predict(Potential(model), val), val)["forces_mae_meV_A"]
    Trainer(model, train, val, TrainConfig(epochs=15, batch_size=10, lr=5e-3, progress=False),
            run_dir=tmp_path).fit()
    after = error_metrics(predict(Potential(model), val), val)["forces_mae_meV_A"]
    print(f"graph_mm ethanol val force MAE: {before:.0f} → {after:.0f} meV/Å")
    assert after < 0.6 * before, (before, after)


def test_cli_export_openmm(tmp_path):
    pytest.importorskip("openmm")
    import ase.io
    from typer.testing import CliRunner

    from ffspace.cli.main import app

    path = save_package(tmp_path / "gmm.safetensors", _model(2))
    xyz = tmp_path / "acetamide.xyz"
    ase.io.write(xyz, _rattled("CH3CONH2", 3).to_ase())
    result = CliRunner().invoke(app, ["export-openmm", str(path), str(xyz), "--out", str(tmp_path / "sys.xml")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sys.xml").is_file() and (tmp_path / "sys.json").is_file()
    assert "max force difference" in result.output
    bad = CliRunner().invoke(app, ["export-openmm", str(path), str(xyz), "--frame", "5"])
    assert bad.exit_code == 2 and "no frame 5" in bad.output


def test_parameter_cache_hits_in_md_and_follows_weights_and_topology(monkeypatch):
    import copy

    pot = Potential(_model(3), dtype=torch.float64)
    calls = []
    original = GraphMM._assign
    monkeypatch.setattr(GraphMM, "_assign", lambda self, *a: calls.append(1) or original(self, *a))
    a, b = ethanol(1, rattle=0.05), _rattled("CH3CONH2", 1)
    a2 = ethanol(1, rattle=0.06)  # another geometry of the same molecule: a cache hit

    def fresh(s):  # training mode assigns parameters anew on every call
        return pot.compute(pot.batch([s]), training=True)

    def check(s, hit: bool):
        before = len(calls)
        cached = pot.compute(pot.batch([s]))
        assert len(calls) == before + (0 if hit else 1)
        ref = fresh(s)
        torch.testing.assert_close(cached["energy"], ref["energy"].detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cached["forces"], ref["forces"].detach(), rtol=1e-12, atol=1e-12)

    check(a, hit=False)
    check(a2, hit=True)
    check(b, hit=False)  # another molecule
    check(a, hit=False)
    model = pot.model
    with torch.no_grad():
        model.bond_head[-1].bias.add_(0.5)  # in-place update
    check(a, hit=False)
    model.atom_head[-1].bias.data.copy_(torch.full_like(model.atom_head[-1].bias, 0.1))  # .data swap (torch_ema)
    check(a, hit=False)
    state = {k: v + 0.01 for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    check(a, hit=False)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.angle_head[-1].bias.add_(0.3)
    e_clone = Potential(clone, dtype=torch.float64)([a])["energy"][0]
    assert e_clone != pytest.approx(pot([a])["energy"][0], abs=1e-6)


def test_a_bond_holds_while_stretched_in_md():
    """A held bond: perceived below 1.3 (R_i + R_j), it stays bonded up to 1.5× along a trajectory, so the energy
    is continuous."""
    pot = Potential(_model(4), dtype=torch.float64)
    atoms = molecule("CH4")
    s = Structure(numbers=atoms.numbers, positions=atoms.positions)
    direction = s.positions[1] / np.linalg.norm(s.positions[1])

    def energy(r):
        pos = s.positions.copy()
        pos[1] = direction * r
        return float(pot([s.copy(positions=pos)])["energy"][0])

    energies = [energy(r) for r in np.linspace(1.09, 1.55, 47)]  # crosses 1.3 × (0.76 + 0.31) = 1.39 Å
    assert np.all(np.isfinite(energies)) and np.max(np.abs(np.diff(energies))) < 0.5


@pytest.mark.parametrize("name", ["C2H2", "CH3CN"])
def test_linear_groups_give_finite_energy_and_forces(name):
    pot = Potential(_model(5), dtype=torch.float64)
    atoms = molecule(name)
    out = pot([Structure(numbers=atoms.numbers, positions=atoms.positions)])
    assert np.isfinite(out["energy"]).all() and np.isfinite(out["forces"]).all()


def test_inference_mode_does_not_poison_later_force_calls():
    pot = Potential(_model(6), dtype=torch.float64)
    s = ethanol(0)
    with torch.inference_mode():
        pot.model(pot.batch([s]).to(dtype=torch.float64))
    assert np.isfinite(pot([s])["forces"]).all()


def test_no_bond_forms_along_a_trajectory_but_another_frame_gets_its_own_topology():
    """Along a trajectory the cached topology holds (as in an MM engine): two hydrogens of CH4 squeezed past
    bond_scale · (R_H + R_H) = 0.81 Å in small steps stay unbonded, so the energy changes smoothly; evaluated as frames
    on their own, the H–H bond forms and the energy jumps (so the first check can fail)."""
    atoms = molecule("CH4")
    s = Structure(numbers=atoms.numbers, positions=atoms.positions)
    mid, axis = (s.positions[1] + s.positions[2]) / 2, s.positions[1] - s.positions[2]
    axis /= np.linalg.norm(axis)

    def scan(fresh):
        pot, out = Potential(_model(), dtype=torch.float64), []
        for d in np.linspace(1.78, 0.7, 60):
            pos = s.positions.copy()
            pos[1], pos[2] = mid + axis * d / 2, mid - axis * d / 2
            call = Potential(_model(), dtype=torch.float64) if fresh else pot
            out.append(float(call([s.copy(positions=pos)])["energy"][0]))
        return np.abs(np.diff(out))

    held, fresh = scan(False), scan(True)
    assert held.max() < 0.5 and fresh.max() > 3 * held.max(), (held.max(), fresh.max())
