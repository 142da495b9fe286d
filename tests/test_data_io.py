"""Readers, writers, datasets and statistics on small inputs built in tmp_path (eV, Å throughout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ffspace import units
from ffspace.data import (Dataset, Structure, read_ase_db, read_dataset, read_deepmd, read_extxyz,
                          read_md17_npz, reference_energies, write_extxyz)
from ffspace.data.structure import matrix_to_voigt, voigt_to_matrix
from ffspace.errors import DataError

WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def water(k: int = 0, **kwargs) -> Structure:
    """A slightly different water molecule per ``k`` (numbers O, H, H)."""
    rng = np.random.default_rng(k)
    return Structure(numbers=[8, 1, 1], positions=WATER + 0.02 * rng.normal(size=(3, 3)), **kwargs)


# --------------------------------------------------------------------------------------------
# extxyz


def test_extxyz_round_trip_keeps_labels_cell_and_stress(tmp_path):
    rng = np.random.default_rng(1)
    cell = np.array([[6.0, 0.0, 0.0], [0.5, 7.0, 0.0], [0.0, 0.3, 8.0]])
    voigt = np.array([0.1, 0.2, 0.3, 0.04, 0.05, 0.06])  # ASE order: xx yy zz yz xz xy
    written = []
    for k in range(3):
        s = water(k, cell=cell, pbc=True, energy=-10.0 - 0.5 * k, forces=rng.normal(size=(3, 3)),
                  stress=voigt * (k + 1))
        written.append(s)
    path = tmp_path / "sub" / "train.extxyz"
    write_extxyz(path, written)

    text = path.read_text()
    assert "REF_energy" in text and "REF_forces" in text and "REF_stress" in text
    import ase.io

    raw = ase.io.read(path, index=":", format="extxyz")
    assert raw[1].calc is None  # labels under explicit keys, not ASE's calculator fields
    np.testing.assert_allclose(raw[1].info["REF_stress"], voigt * 2)  # written in ASE Voigt order
    ds = read_extxyz(path, energy_key="REF_energy", forces_key="REF_forces", stress_key="REF_stress",
                     required=("energy", "forces", "stress"))
    assert len(ds) == 3 and ds.name == str(path)
    for k, (a, b) in enumerate(zip(written, ds)):
        assert b.frame == k and b.source == str(path)
        np.testing.assert_array_equal(b.numbers, [8, 1, 1])
        np.testing.assert_allclose(b.positions, a.positions, atol=1e-7)
        np.testing.assert_allclose(b.cell, cell, atol=1e-7)
        assert b.pbc.all()
        assert b.energy == pytest.approx(-10.0 - 0.5 * k, abs=1e-9)
        np.testing.assert_allclose(b.forces, a.forces, atol=1e-7)
        assert b.stress.shape == (3, 3)
        s = voigt * (k + 1)
        # Voigt (xx, yy, zz, yz, xz, xy) lands in the right matrix slots, symmetric.
        np.testing.assert_allclose(np.diag(b.stress), s[:3], atol=1e-9)
        assert b.stress[1, 2] == pytest.approx(s[3]) and b.stress[2, 1] == pytest.approx(s[3])
        assert b.stress[0, 2] == pytest.approx(s[4]) and b.stress[2, 0] == pytest.approx(s[4])
        assert b.stress[0, 1] == pytest.approx(s[5]) and b.stress[1, 0] == pytest.approx(s[5])


def test_voigt_conversion_round_trips():
    v = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    m = voigt_to_matrix(v)
    np.testing.assert_array_equal(m, [[1, 6, 5], [6, 2, 4], [5, 4, 3]])
    np.testing.assert_array_equal(matrix_to_voigt(m), v)


def test_extxyz_reader_converts_units(tmp_path):
    path = tmp_path / "kcal.xyz"
    write_extxyz(path, [water(0, energy=-100.0, forces=np.full((3, 3), 2.0))])
    ds = read_extxyz(path, energy_unit="kcal/mol")
    assert ds[0].energy == pytest.approx(-100.0 * 0.0433641, rel=1e-5)
    np.testing.assert_allclose(ds[0].forces, 2.0 * units.kcal_per_mol)
    bohr = read_extxyz(path, length_unit="bohr")
    np.testing.assert_allclose(bohr[0].positions, ds[0].positions * 0.529177, rtol=1e-5)


def test_extxyz_reads_labels_that_ase_moves_to_the_calculator(tmp_path):
    import ase.io
    from ase import Atoms

    atoms = Atoms("OH2", positions=WATER)
    atoms.info["energy"] = -3.5
    atoms.arrays["forces"] = np.arange(9.0).reshape(3, 3)
    ase.io.write(tmp_path / "plain.xyz", [atoms], format="extxyz")
    ds = read_extxyz(tmp_path / "plain.xyz", energy_key="energy", forces_key="forces")
    assert ds[0].energy == pytest.approx(-3.5)
    np.testing.assert_allclose(ds[0].forces, np.arange(9.0).reshape(3, 3))


def test_read_dataset_guesses_the_format(tmp_path):
    write_extxyz(tmp_path / "a.xyz", [water(k, energy=float(k), forces=np.zeros((3, 3))) for k in range(2)])
    ds = read_dataset(tmp_path / "a.xyz")
    assert [s.energy for s in ds] == [0.0, 1.0]


# --------------------------------------------------------------------------------------------
# MD17 / rMD17 npz


def _rmd17_arrays(n_frames=4):
    rng = np.random.default_rng(2)
    coords = WATER[None] + 0.02 * rng.normal(size=(n_frames, 3, 3))
    return dict(nuclear_charges=np.array([8, 1, 1], dtype=np.uint8), coords=coords,
                energies=-47000.0 + rng.normal(size=n_frames), forces=rng.normal(size=(n_frames, 3, 3)))


def test_rmd17_npz_converts_kcal_per_mol_to_ev(tmp_path):
    arrays = _rmd17_arrays()
    arrays["old_energies"] = arrays["energies"] + 1.0
    arrays["old_forces"] = arrays["forces"] * 2.0
    np.savez(tmp_path / "rmd17_water.npz", **arrays)
    ds = read_md17_npz(tmp_path / "rmd17_water.npz")
    assert len(ds) == 4
    assert units.kcal_per_mol == pytest.approx(0.0433641, rel=1e-5)  # 1 kcal/mol in eV
    for k, s in enumerate(ds):
        assert s.frame == k and s.source == str(tmp_path / "rmd17_water.npz")
        np.testing.assert_array_equal(s.numbers, [8, 1, 1])
        np.testing.assert_allclose(s.positions, arrays["coords"][k])  # Å stay Å
        assert s.energy == pytest.approx(arrays["energies"][k] * units.kcal_per_mol, rel=1e-12)
        assert s.energy == pytest.approx(arrays["energies"][k] * 0.0433641, rel=1e-5)
        np.testing.assert_allclose(s.forces, arrays["forces"][k] * units.kcal_per_mol, rtol=1e-12)
    old = read_md17_npz(tmp_path / "rmd17_water.npz", labels="old")
    assert old[1].energy == pytest.approx((arrays["energies"][1] + 1.0) * units.kcal_per_mol)
    np.testing.assert_allclose(old[1].forces, arrays["forces"][1] * 2.0 * units.kcal_per_mol)
    ev = read_md17_npz(tmp_path / "rmd17_water.npz", energy_unit="eV")
    assert ev[0].energy == pytest.approx(arrays["energies"][0])


def test_original_md17_layout(tmp_path):
    a = _rmd17_arrays(3)
    np.savez(tmp_path / "md17.npz", z=a["nuclear_charges"], R=a["coords"], E=a["energies"][:, None], F=a["forces"])
    ds = read_dataset(tmp_path / "md17.npz")
    assert len(ds) == 3
    assert ds[2].energy == pytest.approx(a["energies"][2] * units.kcal_per_mol)


# --------------------------------------------------------------------------------------------
# DeePMD


def make_deepmd(root: Path, n_frames=3, nopbc=False, box=10.0, virial=None, coord=None, force=None):
    """A water DeePMD system: type_map O H; types 0 1 1."""
    s = root / "set.000"
    s.mkdir(parents=True)
    (root / "type.raw").write_text("0\n1\n1\n")
    (root / "type_map.raw").write_text("O\nH\n")
    rng = np.random.default_rng(3)
    if coord is None:
        coord = (WATER[None] + 0.02 * rng.normal(size=(n_frames, 3, 3))).reshape(n_frames, 9)
    np.save(s / "coord.npy", coord)
    np.save(s / "energy.npy", -10.0 - np.arange(n_frames, dtype=float))
    np.save(s / "force.npy", rng.normal(size=(n_frames, 9)) if force is None else force)
    if nopbc:
        (root / "nopbc").touch()
    else:
        np.save(s / "box.npy", np.tile((np.eye(3) * box).reshape(9), (n_frames, 1)))
    if virial is not None:
        np.save(s / "virial.npy", np.tile(np.asarray(virial, float).reshape(9), (n_frames, 1)))
    return root


def test_deepmd_periodic_system_with_virial(tmp_path):
    virial = np.diag([1.0, 2.0, 3.0])
    root = make_deepmd(tmp_path / "water", virial=virial)
    force = np.load(root / "set.000" / "force.npy")
    ds = read_deepmd(root)
    assert len(ds) == 3
    s = ds[1]
    np.testing.assert_array_equal(s.numbers, [8, 1, 1])
    assert s.pbc.all()
    np.testing.assert_allclose(s.cell, np.eye(3) * 10.0)
    assert s.energy == pytest.approx(-11.0)
    np.testing.assert_allclose(s.forces, force[1].reshape(3, 3))
    # stress = −virial / V with V = 1000 Å³
    np.testing.assert_allclose(s.stress, -virial / 1000.0)
    assert s.frame == 1 and s.source == str(root / "set.000")


def test_deepmd_nopbc_marker(tmp_path):
    root = make_deepmd(tmp_path / "mol", nopbc=True, virial=np.eye(3))
    ds = read_dataset(root)  # a folder is DeePMD
    assert len(ds) == 3
    for s in ds:
        assert not s.pbc.any()
        np.testing.assert_array_equal(s.cell, np.zeros((3, 3)))
        assert s.stress is None  # no stress without periodic boundaries


def test_deepmd_folder_of_systems(tmp_path):
    make_deepmd(tmp_path / "all" / "a", n_frames=2)
    make_deepmd(tmp_path / "all" / "b", n_frames=3, nopbc=True)
    ds = read_deepmd(tmp_path / "all")
    assert len(ds) == 5
    assert [bool(s.pbc.any()) for s in ds] == [True, True, False, False, False]
    assert ds.name == str(tmp_path / "all")


# --------------------------------------------------------------------------------------------
# ASE database


def test_ase_db_calculator_results_and_data(tmp_path):
    import ase.db
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    db = ase.db.connect(str(tmp_path / "calc.db"))
    stress = np.array([0.1, 0.2, 0.3, 0.04, 0.05, 0.06])
    for k in range(3):
        atoms = Atoms("OH2", positions=WATER + [0, 0, 0.05 * k], cell=np.eye(3) * 6, pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=-5.0 * k, forces=np.full((3, 3), float(k)), stress=stress)
        db.write(atoms)
    ds = read_ase_db(tmp_path / "calc.db", stress_key="stress")
    assert len(ds) == 3 and ds[2].frame == 2
    assert ds[2].energy == pytest.approx(-10.0)
    np.testing.assert_allclose(ds[2].forces, np.full((3, 3), 2.0))
    np.testing.assert_allclose(ds[0].stress, [[0.1, 0.06, 0.05], [0.06, 0.2, 0.04], [0.05, 0.04, 0.3]])
    assert ds[0].pbc.all()

    db2 = ase.db.connect(str(tmp_path / "data.db"))
    db2.write(Atoms("OH2", positions=WATER), data={"dft_energy": -1.5, "dft_forces": np.ones((3, 3))})
    ds2 = read_dataset(tmp_path / "data.db", energy_key="dft_energy", forces_key="dft_forces",
                       energy_unit="kcal/mol")
    assert ds2[0].energy == pytest.approx(-1.5 * units.kcal_per_mol)
    np.testing.assert_allclose(ds2[0].forces, np.full((3, 3), units.kcal_per_mol))


# --------------------------------------------------------------------------------------------
# Dataset and statistics


def test_split_is_seeded_disjoint_and_complete():
    ds = Dataset([water(k, energy=float(k)) for k in range(20)], name="waters")
    a = ds.split([10, 5, -1], seed=7)
    b = ds.split([10, 5, -1], seed=7)
    c = ds.split([10, 5, -1], seed=8)
    ids = [[s.energy for s in part] for part in a]
    assert [len(p) for p in a] == [10, 5, 5]
    assert ids == [[s.energy for s in part] for part in b]
    assert ids != [[s.energy for s in part] for part in c]
    flat = sum(ids, [])
    assert sorted(flat) == [float(k) for k in range(20)]  # disjoint and complete
    assert flat != sorted(flat)  # actually shuffled
    assert all(isinstance(p, Dataset) and p.name == "waters" for p in a)


def test_split_fractions_fit_after_rounding():
    ds = Dataset([water(k, energy=float(k)) for k in range(3)])
    parts = ds.split([0.5, 0.5], seed=0)
    assert sum(len(p) for p in parts) == 3
    assert set().union(*[{s.energy for s in p} for p in parts]) == {0.0, 1.0, 2.0}
    assert [len(p) for p in ds.split([0.8, 0.2])] == [2, 1]


def test_split_by_group_keeps_each_molecule_in_one_part():
    """`data.split_by`: validation and test hold whole molecules that the training part never saw."""
    frames = [water(k, energy=float(k), info={"smiles": f"mol{k % 7}"}) for k in range(70)]  # 7 molecules × 10
    ds = Dataset(frames, name="mols")
    groups = ds.info_values("smiles")
    parts = ds.split([-1, 10, 20], seed=3, groups=groups)
    assert [len(p) for p in parts] == [40, 10, 20]  # sizes in whole molecules of 10
    molecules = [{s.info["smiles"] for s in p} for p in parts]
    assert not (molecules[0] & molecules[1]) and not (molecules[0] & molecules[2]) and not (molecules[1] & molecules[2])
    assert sorted(s.energy for p in parts for s in p) == [float(k) for k in range(70)]  # disjoint and complete
    again = ds.split([-1, 10, 20], seed=3, groups=groups)
    assert [[s.energy for s in p] for p in again] == [[s.energy for s in p] for p in parts]  # seeded
    other = ds.split([-1, 10, 20], seed=4, groups=groups)
    assert [{s.info["smiles"] for s in p} for p in other] != molecules
    # sizes round to whole molecules: 15 frames of molecules of 10 take two of them
    assert [len(p) for p in ds.split([-1, 15], seed=0, groups=groups)] == [50, 20]
    with pytest.raises(DataError, match=r"frame 3.*'smiles'|'smiles'.*frame 3"):
        Dataset(frames[:3] + [water(3, energy=3.0)], name="mols").info_values("smiles")


def test_config_split_by_molecule_and_identity_of_runs_without_it(tmp_path):
    from ffspace.config import RunConfig
    from ffspace.workflow import load_splits, run_identity

    frames = [water(k, energy=float(k), forces=np.zeros((3, 3)), info={"smiles": f"mol{k % 5}"}) for k in range(50)]
    write_extxyz(tmp_path / "mols.extxyz", frames)
    base = {"data": {"train": str(tmp_path / "mols.extxyz"), "n_val": 10, "n_test": 10}, "out": str(tmp_path / "r")}
    train, val, test = load_splits(RunConfig(**{**base, "data": {**base["data"], "split_by": "smiles"}}))
    seen = {s.info["smiles"] for s in train}
    assert len(train) == 30 and not seen & {s.info["smiles"] for s in val} and not seen & {s.info["smiles"] for s in test}
    from ffspace.errors import ConfigError

    with pytest.raises(ConfigError, match="split_by=smiles: the 5 molecules"):  # nothing left to train on
        load_splits(RunConfig(**{**base, "data": {**base["data"], "n_val": 15, "n_test": 25, "split_by": "smiles"}}))
    # runs that do not set split_by keep the identity they had before the setting existed
    import hashlib

    from ffspace.train import Trainer

    plain = RunConfig(**base)
    before = {"data": plain.data.model_dump(exclude={"unit_check", "cache_mb", "split_by"}),
              "model": plain.model.model_dump(), "train": plain.train.identity(exclude=Trainer.FREE_SETTINGS)}
    assert run_identity(plain) == hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()
    assert run_identity(plain) != run_identity(RunConfig(**{**base, "data": {**base["data"], "split_by": "smiles"}}))


def test_reference_energies_recover_per_element_energies():
    true = {1: -13.6, 8: -2041.0, 6: -1027.5}
    rng = np.random.default_rng(4)
    ch4 = np.array([[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    co2 = np.array([[0, 0, 0], [1.16, 0, 0], [-1.16, 0, 0]])
    structures = []
    for k in range(4):
        for numbers, pos in (([8, 1, 1], WATER), ([6, 1, 1, 1, 1], ch4), ([6, 8, 8], co2)):
            e = sum(true[z] for z in numbers)
            structures.append(Structure(numbers=numbers, positions=pos + 0.01 * rng.normal(size=pos.shape),
                                        energy=e))
    ref = reference_energies(structures)
    assert sorted(ref) == [1, 6, 8]
    for z, e in true.items():
        assert ref[z] == pytest.approx(e, abs=1e-8)


def test_reference_energies_two_compositions():
    # H2O and H2O2: two compositions, two elements -> a unique solution.
    h2o2 = np.array([[0, 0, 0], [1.45, 0, 0], [-0.3, 0.9, 0], [1.75, 0.9, 0.3]])
    structures = [Structure(numbers=[8, 1, 1], positions=WATER, energy=2 * -0.5 + -75.0),
                  Structure(numbers=[8, 8, 1, 1], positions=h2o2, energy=2 * -0.5 + 2 * -75.0)]
    ref = reference_energies(structures)
    assert ref[1] == pytest.approx(-0.5, abs=1e-9)
    assert ref[8] == pytest.approx(-75.0, abs=1e-9)


def test_require_labels_and_elements():
    ds = Dataset([water(0, energy=1.0, forces=np.zeros((3, 3))),
                  Structure(numbers=[6, 1, 1, 1, 1], positions=np.arange(15.0).reshape(5, 3) * 0.5)], name="mixed")
    assert ds.elements == [1, 6, 8]
    ds[:1].require_labels()
    assert len(ds[[1, 0]]) == 2 and ds[[1, 0]][1].energy == 1.0


# --------------------------------------------------------------------------------------------
# Shared data (real rMD17 file)


@pytest.mark.skipif(not (SHARED_DATA / "rmd17" / "rmd17_ethanol_train_01.npz").is_file(),
                    reason=f"shared data {SHARED_DATA / 'rmd17' / 'rmd17_ethanol_train_01.npz'} not present")
def test_shared_rmd17_ethanol():
    path = SHARED_DATA / "rmd17" / "rmd17_ethanol_train_01.npz"
    ds = read_dataset(path)
    assert len(ds) == 1000
    assert all(s.n_atoms == 9 for s in ds[:50])
    assert ds.elements == [1, 6, 8]
    energies = np.array([s.energy for s in ds])
    # Ethanol's total energy is about -97 080 kcal/mol, i.e. about -4210 eV.
    assert -4215.0 < energies.min() and energies.max() < -4200.0
    raw = np.load(path)
    assert ds[17].energy == pytest.approx(raw["energies"][17] * units.kcal_per_mol)
    np.testing.assert_allclose(ds[17].forces, raw["forces"][17] * units.kcal_per_mol)


def test_structure_never_aliases_its_source():
    """Regression: MD samplers keep moving one Atoms object; frames taken from it must not follow it."""
    from ase.build import molecule

    from ffspace.data import Structure

    atoms = molecule("H2O")
    forces = np.zeros((3, 3))
    s = Structure.from_ase(atoms, energy=1.0, forces=forces)
    atoms.positions += 1.0
    forces += 1.0
    assert np.abs(s.positions - molecule("H2O").positions).max() == 0.0
    assert np.abs(s.forces).max() == 0.0


def test_shipped_dataset_frames_are_distinct():
    from pathlib import Path

    from ffspace.data import read_dataset

    path = Path(__file__).resolve().parents[1] / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz"
    data = read_dataset(path)
    assert len(data) == 400
    assert len({round(s.energy, 8) for s in data}) == 400
    assert len({s.positions.tobytes() for s in data}) == 400
    assert {s.info["sampler_temperature_K"] for s in data} == {300.0, 600.0}


def test_shipped_dft_set_is_pbe_def2svp():
    from pathlib import Path

    from ffspace.data import read_dataset

    path = Path(__file__).resolve().parents[1] / "src" / "ffspace" / "datasets" / "ethanol_pbe_def2svp.extxyz"
    data = read_dataset(path)
    assert len(data) == 40
    assert {s.info["label_method"] for s in data} == {"PBE/def2-SVP"}
    assert {s.info["label_program"] for s in data} == {"pyscf"}
    assert len({round(s.energy, 8) for s in data}) == 40
