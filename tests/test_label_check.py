"""The label unit check (ffspace.data.label_check): every public dataset in ../shared/data passes as it is, and
labels read in the wrong unit are refused with the likely unit named."""

import warnings

import numpy as np
import pytest

from ffspace.data import Structure, read_dataset
from ffspace.data.label_check import LabelUnitWarning, label_statistics, refuse_constant_labels
from ffspace.errors import DataError

from .conftest import BUILTIN, SHARED_DATA, shared_data

EXTXYZ = {"energy_key": "energy", "forces_key": "forces"}
ENERGY_ONLY = {"energy_key": "energy", "forces_key": None, "required": ("energy",)}


def _shared_files():
    """(path relative to ../shared/data, reader options) of every labeled dataset ffspace reads there."""
    if not SHARED_DATA.exists():
        return []
    out = [(str(p.relative_to(SHARED_DATA)), {}) for p in sorted((SHARED_DATA / "rmd17").glob("*.npz"))]
    for folder in ("rmd17_aspirin_extxyz", "3bpa", "acac", "ethanol_botnet"):
        for p in sorted((SHARED_DATA / folder).glob("*.xyz")):
            text = p.read_text()
            has_forces = "forces" in text.splitlines()[1]
            out.append((str(p.relative_to(SHARED_DATA)), EXTXYZ if has_forces else ENERGY_ONLY))
    out += [("deepmd_water", {}), ("deepmd_nopbc_combustion/data", {}),
            ("schnetpack_fixtures/ase_ag3_2200.db", {"energy_key": "energy", "forces_key": "forces"}),
            ("schnetpack_fixtures/ase_carbene_2200.db", {"energy_key": "energy", "forces_key": "forces"}),
            ("schnetpack_fixtures/test_qm9.db", {"energy_key": "energy_U0", "energy_unit": "Hartree",
                                                 "forces_key": None, "required": ("energy",)})]
    return out


SHARED_FILES = _shared_files()


@pytest.mark.skipif(not SHARED_FILES, reason=f"public benchmark data not found at {SHARED_DATA}")
@pytest.mark.parametrize("name,options", SHARED_FILES, ids=[name for name, _ in SHARED_FILES])
def test_every_public_dataset_passes_as_it_is(name, options):
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelUnitWarning)
        data = read_dataset(SHARED_DATA / name, unit_check="error", **options)
    stats = label_statistics(data, options.get("energy_unit", "eV" if not name.endswith(".npz") else "kcal/mol"))
    assert stats["status"] in ("ok", "undecided")
    if stats["k"] is not None:  # measured on all of them: 28-45 eV/Å² (docs/benchmarks.md)
        assert 20 < stats["k"] < 60, stats["k"]


def test_shipped_dataset_passes():
    stats = label_statistics(read_dataset(BUILTIN))
    assert stats["status"] == "ok" and 20 < stats["k"] < 60


RMD17 = ["aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol", "salicylic",
         "toluene", "uracil"]


@pytest.mark.parametrize("molecule", RMD17)
def test_rmd17_in_ev_read_as_kcal_per_mol_is_refused(molecule, tmp_path):
    """An npz holding eV read with the MD17 default (kcal/mol): labels 23x too small."""
    src = np.load(shared_data("rmd17", f"rmd17_{molecule}_train_01.npz"))
    from ffspace import units

    path = tmp_path / f"{molecule}_eV.npz"
    np.savez(path, nuclear_charges=src["nuclear_charges"], coords=src["coords"][:300],
             energies=src["energies"][:300] * units.kcal_per_mol, forces=src["forces"][:300] * units.kcal_per_mol)
    with pytest.raises(DataError, match=r"look like eV, not kcal/mol: set data.energy_unit=eV") as info:
        read_dataset(path)
    assert info.value.file == str(path) and info.value.field == "energies/forces"
    assert len(read_dataset(path, energy_unit="eV")) == 300  # told the right unit, it reads


def test_rmd17_read_as_ev_is_refused():
    path = shared_data("rmd17", "rmd17_aspirin_train_01.npz")
    with pytest.raises(DataError, match=r"look like kcal/mol, not eV") as info:
        read_dataset(path, energy_unit="eV")
    assert "bond stiffness" in str(info.value)
    with pytest.warns(LabelUnitWarning, match="kcal/mol"):
        read_dataset(path, energy_unit="eV", unit_check="warn")
    read_dataset(path, energy_unit="eV", unit_check="off")  # the user's explicit choice


def test_kj_per_mol_read_as_kcal_per_mol(tmp_path):
    """A factor of 4.184: total energies exceed the physical bound (an error); relative energies leave only the
    bond stiffness, 4.2x too high, which is a warning (real stiffnesses' spread is not far off)."""
    src = np.load(shared_data("rmd17", "rmd17_ethanol_train_01.npz"))
    scale = 4.184  # kcal/mol values rewritten as kJ/mol, then read as kcal/mol
    for name, shift in (("total", 0.0), ("relative", float(src["energies"][:300].mean()))):
        path = tmp_path / f"{name}.npz"
        np.savez(path, nuclear_charges=src["nuclear_charges"], coords=src["coords"][:300],
                 energies=(src["energies"][:300] - shift) * scale, forces=src["forces"][:300] * scale)
        if name == "total":
            with pytest.raises(DataError, match="look like kJ/mol"):
                read_dataset(path)
        else:
            with pytest.warns(LabelUnitWarning, match="kJ/mol"):
                read_dataset(path)


def test_constant_labels_are_refused_for_training():
    water = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    frames = [Structure(numbers=[8, 1, 1], positions=water + 0.01 * k, energy=0.0, forces=np.ones((3, 3)) * k,
                        source="zeros.xyz", frame=k) for k in range(4)]
    with pytest.raises(DataError, match="all 4 energies are 0 eV"):
        refuse_constant_labels(frames)
    zero_forces = [s.copy(energy=float(k), forces=np.zeros((3, 3))) for k, s in enumerate(frames)]
    with pytest.raises(DataError, match="every force"):
        refuse_constant_labels(zero_forces)
    refuse_constant_labels(zero_forces, forces=False)  # an energy-only fit does not use them
