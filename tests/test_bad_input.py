"""Bad input gets a clear ffspace error naming the file, the frame and the field.

Every bad input is built here in tmp_path; each test checks the error type and that the message
points at the file, the frame number and the key that is wrong.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from ffspace.data import Dataset, Structure, read_ase_db, read_dataset, read_deepmd, read_extxyz, read_md17_npz
from ffspace.data.stats import reference_energies
from ffspace.errors import ConfigError, DataError, FFSpaceError, ModelPackageError

WATER = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def assert_names(err: DataError, file=None, frame=None, field=None):
    """The message (and the error's attributes) name the file, the frame and the field."""
    msg = str(err)
    assert isinstance(err, DataError) and isinstance(err, FFSpaceError)
    if file is not None:
        assert str(file) in msg, msg
        assert err.file == str(file)
    if frame is not None:
        assert re.search(rf"\bframe {frame}\b", msg), msg
        assert err.frame == frame
    if field is not None:
        assert f"'{field}'" in msg, msg
        assert err.field == field
    return msg


def water_atoms(k=0, **info):
    from ase import Atoms

    atoms = Atoms("OH2", positions=WATER + [0.0, 0.0, 0.01 * k])
    atoms.info.update(info)
    return atoms


def write_xyz(path, frames):
    import ase.io

    ase.io.write(path, frames, format="extxyz")
    return path


# --------------------------------------------------------------------------------------------
# missing or misnamed keys


def test_extxyz_misnamed_energy_key_lists_available_keys(tmp_path):
    frames = []
    for k in range(3):
        a = water_atoms(k, energy=-1.0 * k)
        a.arrays["REF_forces"] = np.zeros((3, 3))
        frames.append(a)
    path = write_xyz(tmp_path / "misnamed.xyz", frames)
    with pytest.raises(DataError) as info:
        read_extxyz(path, energy_key="REF_energy", forces_key="REF_forces")
    msg = assert_names(info.value, file=path, frame=0, field="REF_energy")
    assert "'energy'" in msg  # the key that does exist is listed
    assert "energy_key" in msg  # and how to fix it


def test_extxyz_frame_missing_forces_in_the_middle(tmp_path):
    frames = []
    for k in range(5):
        a = water_atoms(k, REF_energy=-1.0 * k)
        if k != 3:
            a.arrays["REF_forces"] = np.zeros((3, 3))
        frames.append(a)
    path = write_xyz(tmp_path / "holes.xyz", frames)
    with pytest.raises(DataError) as info:
        read_extxyz(path)
    msg = assert_names(info.value, file=path, frame=3, field="REF_forces")
    assert "REF_energy" in msg
    # Forces not required: the frame reads, without forces.
    ds = read_extxyz(path, required=("energy",))
    assert ds[3].forces is None and ds[2].forces is not None


def test_extxyz_non_numeric_energy(tmp_path):
    path = write_xyz(tmp_path / "text.xyz", [water_atoms(0, REF_energy=1.0), water_atoms(1, REF_energy="abc")])
    with pytest.raises(DataError) as info:
        read_extxyz(path, forces_key=None, required=("energy",))
    assert_names(info.value, file=path, frame=1, field="REF_energy")


def test_ase_db_missing_forces_in_one_row(tmp_path):
    import ase.db

    path = tmp_path / "rows.db"
    db = ase.db.connect(str(path))
    for k in range(3):
        data = {"dft_energy": -1.0} if k == 1 else {"dft_energy": -1.0, "dft_forces": np.zeros((3, 3))}
        db.write(water_atoms(k), data=data)
    with pytest.raises(DataError) as info:
        read_ase_db(path)  # default key 'energy' does not exist
    msg = assert_names(info.value, file=path, frame=0, field="energy")
    assert "dft_energy" in msg
    with pytest.raises(DataError) as info:
        read_ase_db(path, energy_key="dft_energy", forces_key="dft_forces")
    assert_names(info.value, file=path, frame=1, field="dft_forces")


def test_npz_misnamed_key(tmp_path):
    path = tmp_path / "rmd17_bad.npz"
    np.savez(path, nuclear_charges=[8, 1, 1], coords=np.tile(WATER, (2, 1, 1)), energy=np.zeros(2),
             forces=np.zeros((2, 3, 3)))
    with pytest.raises(DataError) as info:
        read_md17_npz(path)
    msg = assert_names(info.value, file=path, field="energies")
    assert "'energy'" in msg  # what the file does have


def test_npz_not_md17_and_not_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(DataError, match=r"not an MD17.*\['a'\]") as info:
        read_md17_npz(path)
    assert_names(info.value, file=path)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match="not an .npz") as info:
        read_md17_npz(junk)
    assert_names(info.value, file=junk)


def test_require_labels_names_the_frame():
    ds = Dataset([Structure(numbers=[8, 1, 1], positions=WATER, energy=1.0, source="in.xyz", frame=k)
                  for k in range(3)], name="in.xyz")
    ds.structures[2] = ds[2].copy(energy=None)
    with pytest.raises(DataError) as info:
        ds.require_labels(forces=False)
    assert_names(info.value, file="in.xyz", frame=2, field="energy")


# --------------------------------------------------------------------------------------------
# NaN / inf labels


def test_extxyz_nan_energy_in_frame_k(tmp_path):
    frames = []
    for k in range(4):
        a = water_atoms(k, REF_energy=float("nan") if k == 2 else -1.0)
        a.arrays["REF_forces"] = np.zeros((3, 3))
        frames.append(a)
    path = write_xyz(tmp_path / "nan.xyz", frames)
    with pytest.raises(DataError, match="nan") as info:
        read_extxyz(path)
    assert_names(info.value, file=path, frame=2, field="REF_energy")


def test_extxyz_inf_force_in_frame_k(tmp_path):
    frames = []
    for k in range(4):
        a = water_atoms(k, REF_energy=-1.0)
        a.arrays["REF_forces"] = np.zeros((3, 3))
        if k == 3:
            a.arrays["REF_forces"][1, 2] = np.inf
        frames.append(a)
    path = write_xyz(tmp_path / "inf.xyz", frames)
    with pytest.raises(DataError, match=r"atoms \[1\]") as info:
        read_extxyz(path)
    assert_names(info.value, file=path, frame=3, field="REF_forces")


def test_npz_nan_energy(tmp_path):
    path = tmp_path / "nan.npz"
    energies = np.zeros(5)
    energies[3] = np.nan
    np.savez(path, nuclear_charges=[8, 1, 1], coords=np.tile(WATER, (5, 1, 1)), energies=energies,
             forces=np.zeros((5, 3, 3)))
    with pytest.raises(DataError) as info:
        read_md17_npz(path)
    assert_names(info.value, file=path, frame=3, field="energies")


def test_deepmd_inf_force(tmp_path):
    force = np.zeros((3, 9))
    force[1, 4] = -np.inf
    root = make_deepmd(tmp_path / "sys", force=force)
    with pytest.raises(DataError) as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "set.000" / "force.npy", frame=1, field="force")


def test_structure_nan_position_and_stress():
    with pytest.raises(DataError) as info:
        Structure(numbers=[8, 1, 1], positions=WATER * [[1], [np.nan], [1]], source="mem.xyz", frame=7)
    assert_names(info.value, file="mem.xyz", frame=7, field="positions")
    with pytest.raises(DataError) as info:
        Structure(numbers=[8, 1, 1], positions=WATER, cell=np.eye(3) * 5, pbc=True,
                  stress=[0, 0, np.inf, 0, 0, 0], source="mem.xyz", frame=8)
    assert_names(info.value, file="mem.xyz", frame=8, field="stress")


# --------------------------------------------------------------------------------------------
# mismatched shapes


def test_npz_forces_fewer_frames_than_coordinates(tmp_path):
    path = tmp_path / "short.npz"
    np.savez(path, nuclear_charges=[8, 1, 1], coords=np.tile(WATER, (5, 1, 1)), energies=np.zeros(5),
             forces=np.zeros((4, 3, 3)))
    with pytest.raises(DataError, match=r"4 frames.*5 frames") as info:
        read_md17_npz(path)
    assert_names(info.value, file=path, frame=4, field="forces")


def test_npz_forces_with_wrong_atom_count(tmp_path):
    path = tmp_path / "narrow.npz"
    np.savez(path, nuclear_charges=[8, 1, 1], coords=np.tile(WATER, (2, 1, 1)), energies=np.zeros(2),
             forces=np.zeros((2, 2, 3)))
    with pytest.raises(DataError, match=r"\(2, 3\).*\(3, 3\)") as info:
        read_md17_npz(path)
    assert_names(info.value, file=path, frame=0, field="forces")


def test_npz_coordinates_do_not_match_numbers(tmp_path):
    path = tmp_path / "coords.npz"
    np.savez(path, nuclear_charges=[8, 1, 1, 1], coords=np.tile(WATER, (2, 1, 1)), energies=np.zeros(2),
             forces=np.zeros((2, 3, 3)))
    with pytest.raises(DataError) as info:
        read_md17_npz(path)
    assert_names(info.value, file=path, field="coords")


def test_deepmd_force_with_wrong_width(tmp_path):
    root = make_deepmd(tmp_path / "sys", force=np.zeros((3, 6)))
    with pytest.raises(DataError, match=r"expected 9") as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "set.000" / "force.npy", frame=0, field="force")


def test_deepmd_force_with_too_few_frames(tmp_path):
    # 2 frames of 9 values: 18 numbers do not divide into 3 frames, nor must they be reinterpreted.
    root = make_deepmd(tmp_path / "sys", force=np.zeros((2, 9)))
    with pytest.raises(DataError, match=r"2 frames.*3") as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "set.000" / "force.npy", frame=2, field="force")


def test_deepmd_bad_box_and_missing_box(tmp_path):
    root = make_deepmd(tmp_path / "a")
    np.save(root / "set.000" / "box.npy", np.zeros((3, 6)))
    with pytest.raises(DataError) as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "set.000" / "box.npy", frame=0, field="box")
    root = make_deepmd(tmp_path / "b")
    (root / "set.000" / "box.npy").unlink()
    with pytest.raises(DataError, match="box.npy missing") as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "set.000", field="box")


def test_deepmd_zero_volume_box_is_reported_on_box(tmp_path):
    root = make_deepmd(tmp_path / "flat", box=0.0, virial=np.eye(3))
    with pytest.raises(DataError, match="singular") as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "set.000" / "box.npy", frame=0, field="box")


def test_structure_forces_of_wrong_shape():
    with pytest.raises(DataError, match=r"\(3, 2\)") as info:
        Structure(numbers=[8, 1, 1], positions=WATER, forces=np.zeros((3, 2)), source="s.xyz", frame=5)
    assert_names(info.value, file="s.xyz", frame=5, field="forces")


# --------------------------------------------------------------------------------------------
# unknown elements


@pytest.mark.parametrize("z", [0, 200])
def test_npz_unknown_atomic_number(tmp_path, z):
    path = tmp_path / f"z{z}.npz"
    np.savez(path, nuclear_charges=np.array([8, z, 1], dtype=np.uint8), coords=np.tile(WATER, (2, 1, 1)),
             energies=np.zeros(2), forces=np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match=rf"\[{z}\]") as info:
        read_md17_npz(path)
    assert_names(info.value, file=path, frame=0, field="nuclear_charges")


def test_deepmd_unknown_element_symbol_and_type_index(tmp_path):
    root = make_deepmd(tmp_path / "a")
    (root / "type_map.raw").write_text("O\nQq\n")
    with pytest.raises(DataError, match="Qq") as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "type_map.raw", field="type_map")
    root = make_deepmd(tmp_path / "b")
    (root / "type.raw").write_text("0\n1\n2\n")
    with pytest.raises(DataError, match=r"\[2\]") as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "type.raw", field="type")


def test_model_asked_about_an_element_it_never_saw(tmp_path):
    torch = pytest.importorskip("torch")
    from ffspace.models import PaiNN
    from ffspace.potential import Potential

    torch.manual_seed(0)
    potential = Potential(PaiNN(elements=[1, 6, 8], features=8, layers=1))
    frames = []
    for k in range(3):
        a = water_atoms(k, REF_energy=-1.0)
        a.arrays["REF_forces"] = np.zeros((3, 3))
        if k == 2:
            a.numbers[0] = 7  # N
        frames.append(a)
    path = write_xyz(tmp_path / "with_n.xyz", frames)
    ds = read_extxyz(path)
    potential.check_elements(ds[:2])  # H and O are fine
    with pytest.raises(DataError) as info:
        potential.check_elements(ds)
    msg = assert_names(info.value, file=path, frame=2, field="numbers")
    assert "'N'" in msg
    with pytest.raises(DataError) as info:
        potential(list(ds))
    assert_names(info.value, file=path, frame=2, field="numbers")


def test_a_charge_state_a_charge_blind_model_never_saw(tmp_path):
    """A package records the total charges of its training data: run (the ASE calculator, MD), a model that reads
    no charge (PaiNN, or PaiNN on an MM prior) is refused a charged structure when it saw only neutral ones (it
    would answer as for the neutral molecule), while a model that reads the charge (MM, charges summed to the total)
    takes it. Evaluating on it is not refused (a measurement), and a package without the record is not checked."""
    pytest.importorskip("torch")
    from ffspace.data import Dataset
    from ffspace.interfaces import FFSpaceCalculator
    from ffspace.md import run_md
    from ffspace.potential import Potential
    from ffspace.train import TrainConfig, Trainer, build_model_for_data

    frames = []
    for k in range(6):
        a = water_atoms(k, REF_energy=-1.0 - 0.01 * k)
        a.arrays["REF_forces"] = np.full((3, 3), 0.01 * k)
        frames.append(a)
    path = write_xyz(tmp_path / "water.xyz", frames)
    data = read_extxyz(path)
    anion = read_extxyz(write_xyz(tmp_path / "anion.xyz", [water_atoms(0, REF_energy=-1.0, charge=-1)]),
                        required=())
    for family, refused in (({"family": "painn", "features": 8, "layers": 1, "cutoff": 3.0}, True),
                            ({"family": "mm"}, False)):
        run = tmp_path / family["family"]
        Trainer(build_model_for_data(family, data, seed=0), Dataset(list(data[:4])), Dataset(list(data[4:])),
                TrainConfig(epochs=1, batch_size=2, progress=False), run_dir=run).fit()
        potential = Potential.load(run / "model.safetensors")
        assert potential.trained_charges == [0.0]
        potential.check_charges(data)  # neutral: as trained
        potential(list(anion))  # evaluated: a measurement, not refused
        if refused:
            with pytest.raises(DataError, match="total charge -1 e, but this model reads no charge") as info:
                run_md(potential, anion[0], steps=2, progress=False)
            assert_names(info.value, file=str(tmp_path / "anion.xyz"), frame=0, field="charge")
            atoms = anion[0].to_ase()
            atoms.info["charge"] = -1
            atoms.calc = FFSpaceCalculator(run / "model.safetensors")
            with pytest.raises(DataError, match="field 'charge'"):
                atoms.get_potential_energy()
            _engines_and_committee_refuse_the_anion(potential, run / "model.safetensors", anion)
            potential.trained_charges = None  # an older package: nothing recorded, nothing checked
        else:  # a model that reads the charge: the engines and the committee take the anion
            from ffspace.active.committee import Committee
            from ffspace.interfaces.openmm_ml import ModelComputation

            potential.check_total_charge(-1.0)
            ModelComputation(potential, anion[0].numbers, periodic=False, charge=-1.0)
            run_md(Committee.load([run / "model.safetensors"] * 2), anion[0], steps=2, progress=False)
        potential.check_charges(anion)
    delta = build_model_for_data({"family": "painn", "features": 8, "layers": 1, "cutoff": 3.0, "prior": "mm"},
                                 data, seed=0)
    assert not delta.reads_total_charge  # its learned term reads no charge: checked like PaiNN alone


def _engines_and_committee_refuse_the_anion(potential, package, anion):
    """The engine interfaces, given the charge as an argument, refuse it when built; OpenMM's pickled force keeps
    the record; a committee of such models refuses it in MD."""
    import pickle

    from ffspace.active.committee import Committee
    from ffspace.active.explore import explore
    from ffspace.interfaces.lammps import FFSpaceFix
    from ffspace.interfaces.openmm_ml import ModelComputation
    from ffspace.md import run_md

    numbers = anion[0].numbers
    with pytest.raises(ConfigError, match="charge: total charge -1 e"):
        potential.check_total_charge(-1.0)
    with pytest.raises(ConfigError, match="charge: total charge -1 e"):
        ModelComputation(potential, numbers, periodic=False, charge=-1.0)
    with pytest.raises(ConfigError, match="charge: total charge -1 e"):
        FFSpaceFix(None, potential, numbers, "ffspace", charge=-1.0)  # (refused before LAMMPS is touched)
    if importlib.util.find_spec("torch_sim") is not None:
        from ffspace.interfaces.torchsim import TorchSimModel

        with pytest.raises(ConfigError, match="charge: total charge -1 e"):
            TorchSimModel(potential, dtype=str(potential.dtype).removeprefix("torch."), charge=-1.0)
    copy = pickle.loads(pickle.dumps(ModelComputation(potential, numbers, periodic=False)))
    assert copy.potential.trained_charges == [0.0]
    committee = Committee.load([package, package])
    with pytest.raises(DataError, match="total charge -1 e"):
        run_md(committee, anion[0], steps=2, progress=False)
    # members record only their own subsamples: the committee takes a charge any of them saw
    committee.members[1].trained_charges = [0.0, -1.0]
    run_md(committee, anion[0], steps=2, progress=False)
    committee.members[1].trained_charges = [0.0]
    potential.check_total_charge(1e-4)  # (a total summed from partial charges)
    with pytest.raises(DataError, match="total charge -1 e"):  # `ffspace active`'s exploration: batched copies
        explore(committee, [anion[0]], temperatures=[300.0], seeds=2, steps=2, progress=False)


def test_reference_energies_with_an_element_outside_the_list():
    s = Structure(numbers=[8, 1, 1], positions=WATER, energy=-1.0, source="w.xyz", frame=4)
    with pytest.raises(DataError) as info:
        reference_energies([s], elements=[1, 6])
    assert_names(info.value, file="w.xyz", frame=4, field="numbers")


# --------------------------------------------------------------------------------------------
# atoms on top of each other


def test_npz_overlapping_atoms(tmp_path):
    coords = np.tile(WATER, (4, 1, 1))
    coords[2, 2] = coords[2, 1]
    path = tmp_path / "overlap.npz"
    np.savez(path, nuclear_charges=[8, 1, 1], coords=coords, energies=np.zeros(4), forces=np.zeros((4, 3, 3)))
    with pytest.raises(DataError, match=r"atoms 1 and 2") as info:
        read_md17_npz(path)
    assert_names(info.value, file=path, frame=2, field="coords")


def test_periodic_overlap_same_position_and_through_the_boundary():
    cell = np.eye(3) * 5.0
    with pytest.raises(DataError, match="on top of each other") as info:
        Structure(numbers=[1, 1, 8], positions=[[1, 1, 1], [1, 1, 1], [3, 3, 3]], cell=cell, pbc=True,
                  source="cell.xyz", frame=6)
    assert_names(info.value, file="cell.xyz", frame=6, field="positions")
    # The periodic image of atom 1 sits on atom 0.
    with pytest.raises(DataError, match="atoms 0 and 1") as info:
        Structure(numbers=[1, 1], positions=[[0.0, 0.0, 0.0], [5.0, 0.0, 0.02]], cell=cell, pbc=True,
                  source="cell.xyz", frame=9)
    assert_names(info.value, file="cell.xyz", frame=9, field="positions")
    # The same pair without periodic boundaries is 5 Å apart: fine.
    Structure(numbers=[1, 1], positions=[[0.0, 0.0, 0.0], [5.0, 0.0, 0.02]])


def test_deepmd_periodic_overlap(tmp_path):
    coord = np.tile(WATER.reshape(9), (3, 1))
    coord[1, 6:9] = [10.0, 0.0, 0.0]  # the image of atom 0 in a 10 Å box
    root = make_deepmd(tmp_path / "pbc", coord=coord)
    with pytest.raises(DataError, match="atoms 0 and 2") as info:
        read_deepmd(root)
    assert_names(info.value, file=root / "set.000" / "coord.npy", frame=1, field="coord")


# --------------------------------------------------------------------------------------------
# empty inputs


def test_empty_extxyz_file(tmp_path):
    path = tmp_path / "empty.xyz"
    path.write_text("")
    for reader in (read_extxyz, read_dataset):
        with pytest.raises(DataError, match="no structures") as info:
            reader(path)
        assert_names(info.value, file=path)


def test_empty_dataset():
    with pytest.raises(DataError, match="empty") as info:
        Dataset([], name="train.xyz").require_nonempty()
    assert_names(info.value, file="train.xyz")
    with pytest.raises(DataError, match="empty"):
        Dataset([]).require_labels()
    with pytest.raises(DataError, match="empty"):
        reference_energies(Dataset([]))
    with pytest.raises(DataError, match="do not fit"):
        Dataset([]).split([1])


def test_empty_deepmd_folders(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="type.raw") as info:
        read_deepmd(tmp_path / "nothing")
    assert_names(info.value, file=tmp_path / "nothing")
    root = make_deepmd(tmp_path / "nosets")
    for f in (root / "set.000").iterdir():
        f.unlink()
    (root / "set.000").rmdir()
    with pytest.raises(DataError, match="no set") as info:
        read_deepmd(root)
    assert_names(info.value, file=root)


def test_structure_without_atoms():
    with pytest.raises(DataError) as info:
        Structure(numbers=[], positions=np.zeros((0, 3)), source="e.xyz", frame=0)
    assert_names(info.value, file="e.xyz", frame=0, field="numbers")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="not found") as info:
        read_dataset(tmp_path / "absent.xyz")
    assert_names(info.value, file=tmp_path / "absent.xyz")
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="format") as info:
        read_dataset(tmp_path / "data.csv")
    assert_names(info.value, file=tmp_path / "data.csv")


def test_garbage_database(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not sqlite" * 50)
    with pytest.raises(DataError, match="ASE database") as info:
        read_ase_db(path)
    assert_names(info.value, file=path)


# --------------------------------------------------------------------------------------------
# corrupt model packages


@pytest.fixture
def package(tmp_path):
    torch = pytest.importorskip("torch")
    from ffspace.models import PaiNN
    from ffspace.potential import save_package

    torch.manual_seed(0)
    model = PaiNN(elements=[1, 6, 8], features=8, layers=1)
    path = save_package(tmp_path / "good.safetensors", model)
    return path, model


def _rewrite(src: Path, dst: Path, meta=None, tensors=None, metadata=None):
    """Write a safetensors file from ``src`` with changed tensors and/or metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src)) if tensors is None else tensors
    if metadata is None:
        with safe_open(str(src), framework="pt") as f:
            metadata = dict(f.metadata())
        if meta is not None:
            metadata["ffspace"] = json.dumps(meta)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def _meta(path):
    from ffspace.potential import read_metadata

    return read_metadata(path)


def test_good_package_round_trips(package):
    import torch

    from ffspace.potential import Potential, load_package

    path, model = package
    loaded, meta = load_package(path)
    assert meta["elements"] == [1, 6, 8] and meta["model"]["family"] == "painn"
    structures = [Structure(numbers=[8, 1, 1], positions=WATER),
                  Structure(numbers=[6, 8, 8], positions=[[0, 0, 0], [1.16, 0, 0], [-1.16, 0, 0]])]
    a = Potential(model, dtype=torch.float64)(structures)
    b = Potential(loaded, dtype=torch.float64)(structures)
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=0, atol=1e-12)
    for fa, fb in zip(a["forces"], b["forces"]):
        np.testing.assert_allclose(fa, fb, rtol=0, atol=1e-12)
    assert not np.allclose(a["forces"][0], 0.0)  # a real model, not a zero function
    c = Potential.load(path, dtype=torch.float64)(structures)
    np.testing.assert_allclose(c["energy"], a["energy"], atol=1e-12)


def test_random_bytes_package(tmp_path):
    from ffspace.potential import Potential, load_package

    path = tmp_path / "random.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ModelPackageError, match="corrupt") as info:
        load_package(path)
    assert str(path) in str(info.value) and isinstance(info.value, FFSpaceError)
    with pytest.raises(ModelPackageError):
        Potential.load(path)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelPackageError, match="corrupt"):
        load_package(empty)


def test_missing_package(tmp_path):
    from ffspace.potential import load_package

    with pytest.raises(ModelPackageError, match="not found") as info:
        load_package(tmp_path / "absent.safetensors")
    assert "absent.safetensors" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.01])
def test_truncated_package(package, keep):
    from ffspace.potential import load_package

    path, _ = package
    raw = path.read_bytes()
    cut = path.with_name("cut.safetensors")
    cut.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ModelPackageError, match="corrupt|truncated") as info:
        load_package(cut)
    assert str(cut) in str(info.value)


def test_safetensors_without_ffspace_metadata(package):
    from ffspace.potential import load_package

    path, _ = package
    plain = _rewrite(path, path.with_name("plain.safetensors"), metadata={})
    with pytest.raises(ModelPackageError, match="not an ffspace model package") as info:
        load_package(plain)
    assert str(plain) in str(info.value)


def test_package_metadata_not_json_or_not_an_object(package):
    from ffspace.potential import load_package

    path, _ = package
    bad = _rewrite(path, path.with_name("badjson.safetensors"), metadata={"ffspace": "{not json"})
    with pytest.raises(ModelPackageError, match="not valid JSON"):
        load_package(bad)
    bad = _rewrite(path, path.with_name("list.safetensors"), metadata={"ffspace": "[1, 2]"})
    with pytest.raises(ModelPackageError, match="not a JSON object"):
        load_package(bad)


def test_package_from_a_future_or_foreign_format(package):
    from ffspace.potential import load_package

    path, _ = package
    meta = _meta(path)
    future = _rewrite(path, path.with_name("future.safetensors"), meta={**meta, "format_version": 99})
    with pytest.raises(ModelPackageError, match="version 99") as info:
        load_package(future)
    assert str(future) in str(info.value)
    text = _rewrite(path, path.with_name("strver.safetensors"), meta={**meta, "format_version": "1"})
    with pytest.raises(ModelPackageError, match="version"):
        load_package(text)
    other = _rewrite(path, path.with_name("other.safetensors"), meta={**meta, "format": "someone-else"})
    with pytest.raises(ModelPackageError, match="someone-else"):
        load_package(other)
    no_model = {k: v for k, v in meta.items() if k != "model"}
    no_model_path = _rewrite(path, path.with_name("nomodel.safetensors"), meta=no_model)
    with pytest.raises(ModelPackageError, match="'model'"):
        load_package(no_model_path)


def test_package_with_unknown_model_family(package):
    from ffspace.potential import load_package

    path, _ = package
    meta = _meta(path)
    meta["model"] = {**meta["model"], "family": "transformer9000"}
    bad = _rewrite(path, path.with_name("family.safetensors"), meta=meta)
    with pytest.raises(ModelPackageError, match="transformer9000") as info:
        load_package(bad)
    assert str(bad) in str(info.value) and "painn" in str(info.value)  # known families are listed


def test_package_with_bad_model_settings(package):
    from ffspace.potential import load_package

    path, _ = package
    meta = _meta(path)
    meta["model"] = {**meta["model"], "no_such_setting": 3}
    bad = _rewrite(path, path.with_name("settings.safetensors"), meta=meta)
    with pytest.raises(ModelPackageError, match="no_such_setting"):
        load_package(bad)


def test_package_with_weights_of_the_wrong_shape(package):
    import torch
    from safetensors.torch import load_file

    from ffspace.potential import load_package

    path, _ = package
    tensors = load_file(str(path))
    name = "embedding.weight"
    assert tensors[name].shape == (3, 8)
    tensors[name] = torch.zeros(4, 8)
    bad = _rewrite(path, path.with_name("shape.safetensors"), tensors=tensors)
    with pytest.raises(ModelPackageError, match="do not fit") as info:
        load_package(bad)
    assert name in str(info.value) and str(bad) in str(info.value)
    # A package whose metadata says features=16 but carries 8-feature weights is the same error.
    meta = _meta(path)
    meta["model"] = {**meta["model"], "features": 16}
    bad = _rewrite(path, path.with_name("features.safetensors"), meta=meta)
    with pytest.raises(ModelPackageError, match="do not fit"):
        load_package(bad)


def test_package_with_missing_or_nan_weights(package):
    import torch
    from safetensors.torch import load_file

    from ffspace.potential import load_package

    path, _ = package
    tensors = load_file(str(path))
    missing = {k: v for k, v in tensors.items() if k != "readout.0.bias"}
    bad = _rewrite(path, path.with_name("missing.safetensors"), tensors=missing)
    with pytest.raises(ModelPackageError, match="readout.0.bias"):
        load_package(bad)
    tensors["readout.0.bias"] = torch.full_like(tensors["readout.0.bias"], float("nan"))
    bad = _rewrite(path, path.with_name("nan.safetensors"), tensors=tensors)
    with pytest.raises(ModelPackageError, match="NaN") as info:
        load_package(bad)
    assert "readout.0.bias" in str(info.value)


# --------------------------------------------------------------------------------------------
# helpers


def make_deepmd(root: Path, n_frames=3, box=10.0, virial=None, coord=None, force=None):
    """A water DeePMD system: type_map O H; types 0 1 1."""
    s = root / "set.000"
    s.mkdir(parents=True)
    (root / "type.raw").write_text("0\n1\n1\n")
    (root / "type_map.raw").write_text("O\nH\n")
    if coord is None:
        coord = np.tile(WATER.reshape(9), (n_frames, 1)) + 0.01 * np.arange(n_frames)[:, None]
    np.save(s / "coord.npy", coord)
    np.save(s / "energy.npy", -np.arange(n_frames, dtype=float))
    np.save(s / "force.npy", np.zeros((n_frames, 9)) if force is None else force)
    np.save(s / "box.npy", np.tile((np.eye(3) * box).reshape(9), (n_frames, 1)))
    if virial is not None:
        np.save(s / "virial.npy", np.tile(np.asarray(virial, float).reshape(9), (n_frames, 1)))
    return root


def test_helpers_build_valid_inputs(tmp_path):
    """The builders above make readable inputs, so each failure above comes from the one defect put in."""
    ds = read_deepmd(make_deepmd(tmp_path / "ok"))
    assert len(ds) == 3
    path = tmp_path / "ok.npz"
    np.savez(path, nuclear_charges=[8, 1, 1], coords=np.tile(WATER, (2, 1, 1)), energies=np.zeros(2),
             forces=np.zeros((2, 3, 3)))
    assert len(read_md17_npz(path)) == 2
    assert os.path.getsize(path) > 0
