"""Shared fixtures: the shipped dataset and one small trained model reused across tests."""

import os
from pathlib import Path

import pytest
import torch

from ffspace.data import read_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BUILTIN = REPO / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz"


def pytest_configure(config):
    """FFSPACE_TEST_DEVICE=cuda runs the shared physics suite (ffspace.testing.physics) on that device."""
    device = os.environ.get("FFSPACE_TEST_DEVICE")
    if device:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise pytest.UsageError(f"FFSPACE_TEST_DEVICE={device}, but torch.cuda.is_available() is False")
        from ffspace.testing import physics

        physics.DEVICE = device


def shared_data(*parts) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"public benchmark data not found at {path} (../shared/data next to the repo)")
    return path


@pytest.fixture(scope="session")
def ethanol_data():
    return read_dataset(BUILTIN)


@pytest.fixture(scope="session")
def trained_package(tmp_path_factory, ethanol_data):
    """A small PaiNN trained for a fixed 40 epochs (~25 s) on the shipped GFN2-xTB ethanol set.

    Fixed epochs, not a time budget, so the model is the same on a fast and a slow machine. Eight radial
    basis functions: with 20, the learned surface carries short-wavelength ripples that make 0.5 fs NVE
    drift ~1e-4 eV/atom/ps; with 8 it is ~1e-5 and the force error is lower too.
    """
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    train, val, _ = ethanol_data.split([-1, 30, 30], seed=0)
    model = build_model_for_data({"family": "painn", "cutoff": 5.0, "features": 32, "layers": 2, "n_rbf": 8}, train,
                                 seed=0)
    run = tmp_path_factory.mktemp("trained")
    cfg = TrainConfig(epochs=40, batch_size=8, lr=3e-3, schedule="cosine", progress=False, dtype="float32")
    summary = Trainer(model, train, val, cfg, run_dir=run).fit()
    assert summary["epochs"] >= 5
    return run / "model.safetensors"


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
