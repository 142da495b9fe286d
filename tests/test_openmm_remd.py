"""Temperature replica exchange through openmmtools (`ffspace.interfaces.openmm_remd`), in miniature: replicas of a
molecule exchange, the coldest state's dihedral is recorded, and a stopped run resumes from its storage."""

import json

import numpy as np
import pytest

from ffspace.testing.physics import ethanol

pytest.importorskip("openmmtools", reason="openmmtools (optional, for replica exchange) is not installed")
from ffspace.interfaces.openmm import export_openmm  # noqa: E402
from ffspace.interfaces.openmm_remd import run_temperature_replica_exchange  # noqa: E402

from .test_openmm_mlmm import _graph_mm, _ml  # noqa: E402


def test_replicas_exchange_and_a_stopped_run_resumes(tmp_path):
    mol = ethanol(1, rattle=0.0)
    system = export_openmm(_graph_mm(), mol).system
    kwargs = dict(steps_per_iteration=50, dihedral=(0, 1, 2, 3))
    first = run_temperature_replica_exchange(system, mol, [300, 340, 390], 3, tmp_path, **kwargs)
    assert first["iterations"] == 3 and len(first["coldest_dihedral_deg"]) == 3
    again = run_temperature_replica_exchange(system, mol, [300, 340, 390], 6, tmp_path, **kwargs)
    assert again["iterations"] == 6 and again["coldest_dihedral_deg"][:3] == first["coldest_dihedral_deg"]
    assert len(again["neighbour_acceptance"]) == 2 and all(0 <= a <= 1 for a in again["neighbour_acceptance"])
    assert sum(again["neighbour_acceptance"]) > 0  # neighbouring temperatures this close do exchange
    assert np.asarray(again["replica_state_visits"]).sum() == 6 * 3
    assert json.loads((tmp_path / "remd.json").read_text())["iterations"] == 6
    with pytest.raises(Exception, match="not"):
        run_temperature_replica_exchange(system, mol, [300, 350, 400], 8, tmp_path, **kwargs)


def test_an_ffspace_model_runs_in_openmmtools():
    """The model's PythonForce goes through openmmtools' System copies (pickled as package bytes)."""
    import tempfile

    from ffspace.interfaces.openmm_ml import openmm_system

    mol = ethanol(1, rattle=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        out = run_temperature_replica_exchange(openmm_system(_ml(), mol), mol, [300, 330], 2, tmp,
                                               steps_per_iteration=20)
    assert out["iterations"] == 2
