"""The shipped drug-like potential (issue 31, acceptance 3): it loads by name and runs through `ffspace md` and the
ASE calculator on a molecule it never saw, with no training step. Its accuracy and 10 ps MD on every rMD17 molecule
are benchmarks (docs/model_card_druglike_pbe.md)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ffspace.errors import ModelPackageError
from ffspace.potential import Potential
from ffspace.potential.package import read_metadata

NAME = "builtin:druglike-pbe"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"  # an rMD17 molecule: the drug-like labels leave every one of them out


@pytest.fixture(scope="module")
def aspirin(tmp_path_factory):
    pytest.importorskip("rdkit")
    from ase.io import write

    from ffspace.reference.inputs import from_smiles

    path = tmp_path_factory.mktemp("aspirin") / "aspirin.xyz"
    write(path, from_smiles(ASPIRIN)[0].to_ase())  # its first conformer
    return path


def test_the_shipped_model_is_small_and_says_what_it_is():
    from ffspace.potential.package import resolve_package_path

    assert resolve_package_path(NAME).stat().st_size <= 5 * 2**20  # the limit for a shipped package
    meta = read_metadata(NAME)
    assert meta["elements"] == [1, 6, 7, 8, 9, 16, 17]  # H C N O F S Cl
    assert meta["extra"]["run_config"]["data_config"]["split_by"] == "smiles"
    with pytest.raises(ModelPackageError, match="letters, digits"):
        Potential.load("builtin:../potential/x")


def test_ffspace_md_runs_the_shipped_model_on_a_molecule_it_never_saw(aspirin, tmp_path):
    """NVE, float64, 0.5 fs, 2000 steps from RDKit's aspirin: completed, and the total energy conserved (the bound of
    tests/test_md.py)."""
    out = tmp_path / "md"
    proc = subprocess.run([sys.executable, "-m", "ffspace.cli", "md", f"model_path={NAME}", f"md.start={aspirin}",
                           "md.steps=2000", "md.ensemble=nve", "md.temperature=300", "md.dtype=float64", f"out={out}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((out / "md" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2000, summary
    assert abs(summary["energy_drift_eV_per_atom_per_ps"]) < 1e-4, summary
    thermo = np.genfromtxt(out / "md" / "thermo.csv", delimiter=",", names=True)
    assert np.ptp(thermo["epot_eV"]) > 0.05  # it moved: kinetic and potential energy exchange
    assert np.ptp(thermo["etot_eV"]) < 0.05 * np.ptp(thermo["epot_eV"])


def test_the_ase_calculator_runs_the_shipped_model(aspirin):
    """Energy and forces through ASE, the forces −dE/dr by central differences (float64)."""
    from ase.io import read

    from ffspace.interfaces import FFSpaceCalculator

    atoms = read(aspirin)
    atoms.calc = FFSpaceCalculator(NAME, dtype="float64")
    forces = atoms.get_forces()
    assert np.isfinite(atoms.get_potential_energy()) and np.abs(forces.sum(0)).max() < 1e-8  # no net force
    for atom, d in ((0, 0), (9, 2)):
        e = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[atom, d] += sign * 1e-4
            e.append(moved.get_potential_energy())
        assert abs(-(e[0] - e[1]) / 2e-4 - forces[atom, d]) < 1e-5
