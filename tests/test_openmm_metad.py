"""Well-tempered metadynamics on a dihedral in OpenMM (`ffspace.interfaces.openmm_metad`), in miniature: the
profile and its convergence figures, a resumed run that continues where the last one stopped, a broken bond
reported."""

import json

import numpy as np
import pytest

from ffspace.testing.physics import ethanol

openmm = pytest.importorskip("openmm")
from ffspace.interfaces.openmm import export_openmm  # noqa: E402
from ffspace.interfaces.openmm_metad import MetaDSettings, dihedral_degrees, run_dihedral_metadynamics  # noqa: E402

from .test_openmm_mlmm import _graph_mm  # noqa: E402

# ethanol from ase: C0, C1, O2, H3 (on O) … ; the C–C–O–H torsion
DIHEDRAL = (0, 1, 2, 3)
SETTINGS = MetaDSettings(pace=50, chunk_steps=200, timestep_fs=0.5, hydrogen_mass=0.0, grid=61)


def _system(mol):
    return export_openmm(_graph_mm(), mol).system


def _no_forces(mol):
    """A System of the molecule's masses and no force: at 5000 K the atoms fly apart."""
    system = openmm.System()
    for z in mol.numbers:
        system.addParticle(12.0 if z > 1 else 1.0)
    return system


HOT = MetaDSettings(temperature=5000.0, pace=50, chunk_steps=400, timestep_fs=1.0, hydrogen_mass=0.0,
                    friction_per_ps=0.001)


def test_a_killed_metadynamics_run_resumes_from_its_checkpoint(tmp_path):
    mol = ethanol(1, rattle=0.0)
    first = run_dihedral_metadynamics(_system(mol), mol, DIHEDRAL, 400, tmp_path, SETTINGS, progress=False)
    assert first["steps"] == 400 and first["failure"] is None
    with np.load(tmp_path / "history.npz") as h:
        before = {k: h[k].copy() for k in h.files}
    # a new process (new System, new Metadynamics) given the longer run continues from step 400
    again = run_dihedral_metadynamics(_system(mol), mol, DIHEDRAL, 800, tmp_path, SETTINGS, progress=False)
    with np.load(tmp_path / "history.npz") as h:
        after = {k: h[k] for k in h.files}
    assert again["steps"] == 800 and len(after["time_ps"]) == 4
    np.testing.assert_array_equal(after["fes"][:2], before["fes"])
    # the bias deposited before the kill is still there: the profile can only have grown
    assert np.ptp(after["fes"][-1]) >= 0.5 * np.ptp(before["fes"][-1]) > 0
    summary = json.loads((tmp_path / "metad.json").read_text())
    assert summary["half_time_ps"] == pytest.approx(0.2) and summary["half_vs_end_max_kcal_mol"] >= 0
    assert len(summary["grid_deg"]) == 61 and min(summary["fes_kcal_mol"]) == 0.0
    with pytest.raises(Exception, match="other settings"):
        run_dihedral_metadynamics(_system(mol), mol, DIHEDRAL, 800, tmp_path, MetaDSettings(pace=100, chunk_steps=200),
                                  progress=False)


def test_a_molecule_falling_apart_is_reported_with_its_bond(tmp_path):
    """No forces at 5000 K: the atoms fly apart and the run stops at the first chunk with the broken bond."""
    mol = ethanol(1, rattle=0.0)
    result = run_dihedral_metadynamics(_no_forces(mol), mol, DIHEDRAL, 1200, tmp_path, HOT, progress=False)
    failure = result["failure"]
    assert failure is not None and result["steps"] == 400
    assert len(failure["bond"]) == 2 and abs(failure["length"] - failure["start_length"]) > 0.5


def test_dihedral_angle_sign_and_value():
    pos = np.array([[1.0, 0, 0], [0, 0, 0], [0, 0, 1.0], [0, 1.0, 1.0]])
    assert dihedral_degrees(pos, (0, 1, 2, 3)) == pytest.approx(90.0)
    pos[3] = [0, -1.0, 1.0]
    assert dihedral_degrees(pos, (0, 1, 2, 3)) == pytest.approx(-90.0)


def test_a_failed_run_is_not_resumed_and_stray_bias_files_are_refused(tmp_path):
    mol = ethanol(1, rattle=0.0)
    failed = run_dihedral_metadynamics(_no_forces(mol), mol, DIHEDRAL, 1200, tmp_path / "a", HOT, progress=False)
    again = run_dihedral_metadynamics(_no_forces(mol), mol, DIHEDRAL, 1200, tmp_path / "a", HOT, progress=False)
    assert again["failure"] == failed["failure"] and again["steps"] == failed["steps"] == 400
    (tmp_path / "b" / "bias").mkdir(parents=True)
    np.save(tmp_path / "b" / "bias" / "bias_7_1.npy", np.zeros(61))
    with pytest.raises(Exception, match="remove them"):
        run_dihedral_metadynamics(_system(mol), mol, DIHEDRAL, 400, tmp_path / "b", SETTINGS, progress=False)
