"""Long-range electrostatics: charge conservation, Coulomb's law, Ewald against brute force."""

import numpy as np
import pytest
import torch

from ffspace import units
from ffspace.data import Structure
from ffspace.graph import batch_structures
from ffspace.models import LearnedCoulomb
from ffspace.models.electrostatics import coulomb_energies
from ffspace.testing.physics import ethanol, periodic_box

F64 = torch.float64


def test_learned_charges_conserve_total_charge_exactly():
    torch.manual_seed(0)
    model = LearnedCoulomb([1, 6, 8], cutoff=3.5, features=16, layers=1).double()
    model.charge_net.energy_scale.fill_(1.0)
    cation = ethanol(1)
    cation.info["charge"] = 1.0
    batch = batch_structures([ethanol(0), cation, periodic_box(0)], 3.5, dtype=F64)
    q = model.charges(batch)
    totals = torch.zeros(3, dtype=F64).index_add(0, batch.graph_index, q)
    assert q.abs().max() > 0.05  # the charges are not trivially zero
    torch.testing.assert_close(totals, torch.tensor([0.0, 1.0, 0.0], dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("r", [2.0, 3.5, 10.0])
def test_two_point_charges_follow_coulombs_law(r):
    ions = Structure(numbers=[11, 17], positions=[[0, 0, 0], [r, 0, 0]])
    batch = batch_structures([ions], 1.0, dtype=F64)
    e = coulomb_energies(batch, torch.tensor([1.0, -1.0], dtype=F64)).sum()
    assert float(e) == pytest.approx(-units.COULOMB_EV_A / r, rel=1e-12)
    assert units.COULOMB_EV_A == pytest.approx(14.3996, abs=1e-4)  # e²/(4π ε0) in eV·Å


def _rock_salt(a=5.64):
    frac = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                     [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
    return Structure(numbers=[11] * 4 + [17] * 4, positions=frac * a, cell=np.eye(3) * a, pbc=True), \
        np.array([1.0] * 4 + [-1.0] * 4)


def test_ewald_reproduces_the_madelung_constant_of_rock_salt():
    s, q = _rock_salt()
    e = coulomb_energies(batch_structures([s], 1.0, dtype=F64), torch.tensor(q, dtype=F64)).sum()
    madelung = -float(e) / 4 / (units.COULOMB_EV_A / (5.64 / 2))  # 4 ion pairs, nearest distance a/2
    assert madelung == pytest.approx(1.747565, abs=1e-5)


def test_ewald_matches_brute_force_sum_over_images():
    """Direct sum over ever larger cubes of whole (neutral, dipole-free) cells converges to the Ewald energy."""
    s, q = _rock_salt()
    # Displace ions symmetrically in pairs so the cell stays dipole-free but is no longer a perfect lattice.
    disp = np.zeros((8, 3))
    disp[0] = disp[4] = [0.15, -0.1, 0.05]
    s = s.copy(positions=s.positions + disp)
    ewald = float(coulomb_energies(batch_structures([s], 1.0, dtype=F64), torch.tensor(q, dtype=F64)).sum())
    pos, a = s.positions, 5.64
    n = 12
    grid = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), -1).reshape(-1, 3) * a
    total = 0.0
    for i in range(8):
        d = pos[None, :, :] + grid[:, None, :] - pos[i]
        r = np.linalg.norm(d, axis=-1)
        r[r < 1e-9] = np.inf
        total += 0.5 * q[i] * (q[None, :] / r).sum()
    brute = units.COULOMB_EV_A * total
    assert brute == pytest.approx(ewald, rel=2e-4), (brute, ewald)


def test_ewald_energy_does_not_depend_on_the_splitting():
    s, q = _rock_salt()
    s = s.copy(positions=s.positions + np.random.default_rng(0).normal(scale=0.1, size=(8, 3)))
    batch = batch_structures([s], 1.0, dtype=F64)
    qt = torch.tensor(q, dtype=F64)
    energies = [float(coulomb_energies(batch, qt, accuracy=1e-8, real_cutoff=rc).sum()) for rc in (2.0, 2.8, 4.0)]
    assert np.ptp(energies) < 1e-5, energies


def test_hybrid_with_long_range_electrostatics_trains(tmp_path, ethanol_data):
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    train, val = ethanol_data[:40], ethanol_data[40:50]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 16, "layers": 1,
                                  "coulomb": True}, train)
    assert [t.family for t in model.terms] == ["reference", "schnet", "coulomb"]
    summary = Trainer(model, train, val, TrainConfig(epochs=2, progress=False), run_dir=tmp_path).fit()
    assert np.isfinite(summary["best"]["val_forces_mae_meV_A"])
    from ffspace.potential import load_package

    loaded, meta = load_package(tmp_path / "model.safetensors")
    assert loaded.long_range and meta["model"]["terms"][2]["family"] == "coulomb"
