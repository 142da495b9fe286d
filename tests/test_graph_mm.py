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


def test_benzene_ring_pairs_counted_once():
    topo = perceive(batch_structures([_rattled("C6H6", 0, 0.0)], 3.0))
    # Para carbons are 1-4 along both ways round the ring: still one pair. Six sp2 carbons × 6 orderings.
    assert len(topo.impropers) == 36
    keys = topo.pairs[:, 0] * 100 + topo.pairs[:, 1]
    assert len(torch.unique(keys)) == len(keys)


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


def test_parameter_cache_matches_fresh_assignment_and_follows_weights_and_topology():
    pot = Potential(_model(3), dtype=torch.float64)
    a, b = ethanol(1, rattle=0.05), _rattled("CH3CONH2", 1)

    def fresh(s):  # training mode assigns parameters anew on every call
        return pot.compute(pot.batch([s]), training=True)

    for s in (a, a, b, a):  # eval calls: cache hit, hit, miss (new topology), miss
        cached, ref = pot.compute(pot.batch([s])), fresh(s)
        torch.testing.assert_close(cached["energy"], ref["energy"].detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(cached["forces"], ref["forces"].detach(), rtol=1e-12, atol=1e-12)
    before = pot.compute(pot.batch([a]))["energy"]
    with torch.no_grad():  # an optimizer-like in-place update must invalidate the cached parameters
        pot.model.bond_head[-1].bias.add_(0.5)
    after = pot.compute(pot.batch([a]))["energy"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, fresh(a)["energy"].detach(), rtol=1e-12, atol=1e-12)
