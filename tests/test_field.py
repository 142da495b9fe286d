"""Field-dependent models (issue 33): E(R, ℰ) with μ = −∂E/∂ℰ and α = −∂²E/∂ℰ² by autograd, checked against finite
differences of the model; the PySCF labeler in a field (forces and dipole against finite differences of its own
energies); data round trips; MD in a field; clear errors."""

import numpy as np
import pytest
import torch

from ffspace.data import read_dataset
from ffspace.data.structure import Structure
from ffspace.data.writers import write_extxyz
from ffspace.errors import ConfigError, DataError
from ffspace.graph.batch import batch_structures
from ffspace.models import AtomicReference, FieldResponse, SchNet, Sum
from ffspace.potential import Potential
from ffspace.testing import physics

ELEMENTS = physics.ELEMENTS
REFERENCE = {1: -13.6, 6: -1029.0, 7: -1484.0, 8: -2041.0}


def _field_model(seed=0):
    torch.manual_seed(seed)
    field = FieldResponse(ELEMENTS, cutoff=3.5, features=16, layers=1)
    with torch.no_grad():
        field.heads.readout[-1].weight.normal_(0.0, 0.5)
    return Sum([AtomicReference(REFERENCE), SchNet(ELEMENTS, cutoff=4.0, features=16, layers=2), field])


def _compute(pot, s, **kw):
    return pot.compute(batch_structures([s], pot.cutoff, dtype=torch.float64), **kw)


def _in(s, field):
    out = s.copy()
    out.info["field"] = np.asarray(field, dtype=float)
    return out


def _field_differences(pot, s, h: float = 1e-4):
    """μ = −∂E/∂ℰ and α = ∂μ/∂ℰ of the model by central differences in the field of ``s``."""
    fd_mu, fd_alpha = np.zeros(3), np.zeros((3, 3))
    for b in range(3):
        plus, minus = (_in(s, s.info["field"] + sign * h * np.eye(3)[b]) for sign in (1, -1))
        fd_mu[b] = -(float(_compute(pot, plus, forces=False)["energy"][0])
                     - float(_compute(pot, minus, forces=False)["energy"][0])) / (2 * h)
        fd_alpha[:, b] = (_compute(pot, plus, forces=False, dipole=True)["dipole"][0].numpy()
                          - _compute(pot, minus, forces=False, dipole=True)["dipole"][0].numpy()) / (2 * h)
    return fd_mu, fd_alpha


def test_dipole_and_polarizability_equal_finite_differences_of_the_model():
    pot = Potential(_field_model(), dtype=torch.float64)
    s = _in(physics.molecule(), [0.1, -0.2, 0.3])
    out = _compute(pot, s, forces=True, dipole=True, polarizability=True)
    mu, alpha = out["dipole"][0].numpy(), out["polarizability"][0].numpy()
    fd_mu, fd_alpha = _field_differences(pot, s)
    assert np.abs(mu).max() > 1e-2 and np.abs(alpha).max() > 1e-2  # sizeable: the check means something
    assert np.abs(fd_mu - mu).max() <= 1e-5 * max(1.0, np.abs(mu).max())
    assert np.abs(fd_alpha - alpha).max() <= 1e-5 * max(1.0, np.abs(alpha).max())
    assert np.allclose(alpha, alpha.T, atol=1e-12) and np.linalg.eigvalsh(alpha).min() >= 0  # symmetric, PSD
    # forces in the same call are −∂E/∂r at this field
    assert physics.check_finite_difference_forces(pot.model, s) <= 1e-6


def test_the_response_turns_with_the_molecule_and_the_field():
    pot = Potential(_field_model(1), dtype=torch.float64)
    s = _in(physics.ethanol(), [0.2, 0.1, -0.3])
    rot = physics._rotation(3)
    r = s.copy(positions=s.positions @ rot.T)
    r.info["field"] = s.info["field"] @ rot.T
    a, b = (_compute(pot, x, forces=True, dipole=True, polarizability=True) for x in (s, r))
    assert abs(float(a["energy"][0] - b["energy"][0])) < 1e-9 * abs(float(a["energy"][0]))
    assert np.allclose(b["dipole"][0].numpy(), a["dipole"][0].numpy() @ rot.T, atol=1e-10)
    assert np.allclose(b["polarizability"][0].numpy(), rot @ a["polarizability"][0].numpy() @ rot.T, atol=1e-10)
    # ... while a field that does not turn changes the energy: the model does depend on its direction
    fixed = r.copy()
    fixed.info["field"] = s.info["field"]
    assert abs(float(_compute(pot, fixed, forces=False)["energy"][0] - a["energy"][0])) > 1e-5


def test_a_field_given_to_a_model_without_one_is_refused():
    plain = Potential(Sum([AtomicReference(REFERENCE), SchNet(ELEMENTS, cutoff=4.0, features=16, layers=1)]),
                      dtype=torch.float64)
    s = physics.molecule()
    _compute(plain, _in(s, [0.0, 0.0, 0.0]), forces=True)  # a zero field is no field
    with pytest.raises(DataError, match="trained without an external electric field"):
        _compute(plain, _in(s, [0.0, 0.0, 0.1]), forces=True)
    with pytest.raises(ConfigError, match="without a field response"):
        _compute(plain, s, forces=True, dipole=True)
    with pytest.raises(ConfigError, match="needs a model with a field response"):
        from ffspace.train import Trainer, TrainConfig

        rng = np.random.default_rng(0)
        data = [physics.molecule(seed=k).copy(energy=-1.0 * k, forces=rng.normal(size=(9, 3))) for k in range(3)]
        from ffspace.data import Dataset

        Trainer(plain.model, Dataset(data), Dataset(data), TrainConfig(dipole_weight=1.0, epochs=1, progress=False),
                run_dir="unused")


def test_field_and_dipole_round_trip_through_extxyz_and_bad_ones_name_the_field(tmp_path):
    s = Structure(numbers=[8, 1, 1], positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], energy=-2075.0,
                  forces=np.zeros((3, 3)), info={"field": [0.0, 0.05, -0.1], "dipole": [0.1, 0.3, 0.0]})
    write_extxyz(tmp_path / "w.extxyz", [s])
    back = read_dataset(tmp_path / "w.extxyz")[0]
    assert np.array_equal(back.info["field"], s.info["field"]) and np.array_equal(back.info["dipole"], s.info["dipole"])
    with pytest.raises(DataError, match="field") as err:
        Structure(numbers=[1, 1], positions=[[0, 0, 0], [0.74, 0, 0]], info={"field": [0.0, np.nan, 0.0]},
                  source="bad.xyz", frame=3)
    assert "bad.xyz" in str(err.value) and "frame 3" in str(err.value)
    with pytest.raises(DataError, match=r"dipole has shape \(2,\)"):
        Structure(numbers=[1, 1], positions=[[0, 0, 0], [0.74, 0, 0]], info={"dipole": [0.0, 1.0]})


def test_nve_in_a_constant_field_conserves_energy_and_feels_the_field():
    from ffspace.md import run_md

    pot = Potential(_field_model(2), dtype=torch.float64)
    s = physics.molecule(seed=5, rattle=0.02)
    runs = [run_md(pot, x, steps=300, timestep_fs=0.1, ensemble="nve", temperature=300.0, seed=0,
                   bond_tolerance=None) for x in (_in(s, [0.0, 0.0, 0.5]), s)]
    assert runs[0].status == "completed"
    etot, epot = runs[0].thermo["etot_eV"], runs[0].thermo["epot_eV"]
    assert np.ptp(etot) < 2e-3 * np.ptp(epot) + 1e-5
    assert np.abs(runs[0].final.positions - runs[1].final.positions).max() > 1e-4


def test_training_on_dipoles_fits_them(tmp_path):
    """A field model trained with a dipole weight on molecules of known dipole gets the dipoles closer."""
    from ffspace.data import Dataset
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    teacher = Potential(_field_model(3), dtype=torch.float64)
    rng = np.random.default_rng(0)
    frames = []
    for k in range(24):
        s = _in(physics.molecule(seed=k, rattle=0.08), rng.normal(scale=0.1, size=3))
        out = _compute(teacher, s, forces=True, dipole=True)
        s = s.copy(energy=float(out["energy"][0]), forces=out["forces"].numpy())
        s.info["dipole"] = out["dipole"][0].numpy()
        frames.append(s)
    train, val = Dataset(frames[:20]), Dataset(frames[20:])
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 16, "layers": 1, "field": True},
                                 train, seed=0)
    start = Potential(model, dtype=torch.float64).predict(val)["dipole"]
    ref = np.stack([s.info["dipole"] for s in val])
    trainer = Trainer(model, train, val, TrainConfig(epochs=25, batch_size=4, lr=5e-3, dipole_weight=100.0,
                                                     progress=False, dtype="float64"), run_dir=tmp_path / "run")
    trainer.fit()
    end = trainer.validate()
    assert end["dipole_mae_e_A"] < 0.5 * np.abs(start - ref).mean()


def _input_model(family: str, seed: int = 0):
    """A model that takes the field only as an equivariant input of the family (no response term), with
    sizeable field weights."""
    from ffspace.models import MACE, PaiNN

    torch.manual_seed(seed)
    net = (MACE(ELEMENTS, cutoff=4.0, channels=8, lmax=2, layers=2, hidden_lmax=1, field_input=True)
           if family == "mace" else PaiNN(ELEMENTS, cutoff=4.0, features=16, layers=2, field_input=True))
    weights = net.field_weights if isinstance(net.field_weights, torch.nn.ParameterList) else [net.field_weights]
    with torch.no_grad():
        for w in weights:
            w.normal_(0.0, 0.3)
    return Sum([AtomicReference(REFERENCE), net])


@pytest.mark.parametrize("family", ["mace", "painn"])
def test_the_field_as_an_equivariant_input_has_mu_and_alpha_and_turns_with_the_molecule(family):
    pytest.importorskip("e3nn")
    # eager throughout (fast=False): without a field the MACE-style model would take its C kernel, and the check
    # below is that the input adds exactly nothing to the same computation
    pot = Potential(_input_model(family), dtype=torch.float64, fast=False)
    assert pot.field_dependent
    s = _in(physics.ethanol(), [0.1, -0.2, 0.15])
    out = _compute(pot, s, forces=True, dipole=True, polarizability=True)
    mu, alpha = out["dipole"][0].numpy(), out["polarizability"][0].numpy()
    fd_mu, fd_alpha = _field_differences(pot, s)
    assert np.abs(mu).max() > 1e-2 and np.abs(alpha).max() > 1e-3  # the input alone makes a response
    assert np.abs(fd_mu - mu).max() <= 1e-5 * max(1.0, np.abs(mu).max())
    assert np.abs(fd_alpha - alpha).max() <= 1e-5 * max(1.0, np.abs(alpha).max())
    assert physics.check_finite_difference_forces(pot.model, s) <= 1e-6
    rot = physics._rotation(4)
    r = s.copy(positions=s.positions @ rot.T)
    r.info["field"] = s.info["field"] @ rot.T
    b = _compute(pot, r, forces=True, dipole=True, polarizability=True)
    assert abs(float(out["energy"][0] - b["energy"][0])) < 1e-9 * abs(float(out["energy"][0]))
    assert np.allclose(b["dipole"][0].numpy(), mu @ rot.T, atol=1e-9)
    assert np.allclose(b["polarizability"][0].numpy(), rot @ alpha @ rot.T, atol=1e-9)
    # without a field the input adds exactly nothing: the field-free surface (and the fast paths) stay as they were
    zero = _compute(pot, _in(s, [0.0, 0.0, 0.0]), forces=True)
    none = _compute(pot, s.copy(info={}), forces=True)
    assert float(zero["energy"][0]) == float(none["energy"][0])


def test_field_input_is_refused_for_a_family_without_vector_features():
    from ffspace.data import Dataset
    from ffspace.train import build_model_for_data

    rng = np.random.default_rng(0)
    data = Dataset([physics.molecule(seed=k).copy(energy=-1.0 * k, forces=rng.normal(size=(9, 3))) for k in range(3)])
    with pytest.raises(ConfigError, match="equivariant family"):
        build_model_for_data({"family": "schnet", "cutoff": 4.0, "field": "input"}, data)
    with pytest.raises(ConfigError, match="model.field must be"):
        build_model_for_data({"family": "painn", "cutoff": 4.0, "field": "yes"}, data)
    model = build_model_for_data({"family": "painn", "cutoff": 4.0, "features": 8, "layers": 1, "field": "input"}, data)
    assert model.field_dependent and model.terms[1].field_input and isinstance(model.terms[-1], FieldResponse)


pyscf = pytest.importorskip("pyscf", reason="PySCF (the DFT labeler) is not installed")


def test_pyscf_labels_in_a_field_forces_and_dipole_equal_finite_differences():
    from ffspace.reference.dft import PySCFLabeler

    lab = PySCFLabeler(functional="PBE", basis="sto-3g", density_fit=True)
    s = Structure(numbers=[8, 1, 1], positions=[[0, 0, 0.1], [0.96, 0.05, 0], [-0.24, 0.93, 0.02]],
                  info={"field": [0.3, -0.5, 0.4]})
    out = lab.label(s)
    h = 1e-4
    for a, d in ((0, 0), (1, 1), (2, 2), (0, 2)):  # one component per atom and direction
        e = []
        for sign in (1, -1):
            p = s.positions.copy()
            p[a, d] += sign * h
            e.append(lab.label(s.copy(positions=p)).energy)
        # eV/Å; without the field's gradient terms (basis functions moving in the field, nuclei's Zℰ) it is ~1 eV/Å
        assert abs(-(e[0] - e[1]) / (2 * h) - out.forces[a, d]) < 2e-3
    hf = 1e-3
    mu = []
    for k in range(3):
        e = [lab.label(_in(s, np.asarray(s.info["field"]) + sign * hf * np.eye(3)[k])).energy for sign in (1, -1)]
        mu.append(-(e[0] - e[1]) / (2 * hf))
    assert np.allclose(mu, out.info["dipole"], atol=1e-5)
    zero = lab.label(s.copy(info={}))
    assert np.linalg.norm(out.info["dipole"] - zero.info["dipole"]) > 0.01  # the field polarizes the density


def test_md_in_a_time_dependent_field_follows_it():
    """A field switched on at 20 fs: identical to the field-free run before, different after; a model without a
    field response refuses the field."""
    from ffspace.md import run_md

    pot = Potential(_field_model(4), dtype=torch.float64)
    s = physics.molecule(seed=5, rattle=0.02)
    pulse = lambda t: np.array([0.0, 0.0, 0.5 if t > 20.0 else 0.0])  # noqa: E731
    kwargs = dict(timestep_fs=0.5, ensemble="nve", temperature=300.0, seed=0, bond_tolerance=None)
    early = [run_md(pot, s, steps=40, field=f, **kwargs).final.positions for f in (pulse, None)]
    late = [run_md(pot, s, steps=100, field=f, **kwargs).final.positions for f in (pulse, None)]
    assert np.abs(early[0] - early[1]).max() < 1e-12
    assert np.abs(late[0] - late[1]).max() > 1e-5
    plain = Potential(Sum([AtomicReference(REFERENCE), SchNet(ELEMENTS, cutoff=4.0, features=8, layers=1)]))
    with pytest.raises(ConfigError, match="field-dependent model"):
        run_md(plain, s, steps=2, field=[0.0, 0.0, 0.1])


def test_the_fields_doc_example_runs(capsys):
    """docs/fields.md runs as written."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "fields.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, "docs/fields.md lost its example"
    exec(compile("\n".join(blocks), str(doc), "exec"), {"__name__": "__fields_doc__"})
    out = capsys.readouterr().out
    assert "dipole (e·Å):" in out and "polarizability (Å³):" in out
