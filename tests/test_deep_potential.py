"""Deep Potential (se_e2_a) and its compression: the tables reproduce the nets, follow their weights, survive a
package round trip, and refuse training."""

import pytest
import torch

from ffspace.models.composite import AtomicReference, Sum
from ffspace.models.deep_potential import DeepPotential, compress, compress_package
from ffspace.potential import Potential, save_package
from ffspace.potential.package import load_package

ELEMENTS = [1, 6, 8]


def _model(**kw):
    model = DeepPotential(ELEMENTS, cutoff=4.0, cutoff_smooth=1.0, embedding=(8, 16), axis=4, fitting=(16,),
                          avg_neighbors=4.0, **kw)
    return Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}), model])


def test_compressed_model_equals_the_nets(ethanol_data):
    """Quintic tables at the default step reproduce the embedding nets' energies and forces to 1e-9 (float64)."""
    model = _model()
    pot = Potential(model, dtype=torch.float64)
    batch = pot.batch(list(ethanol_data)[:4])
    ref = pot.compute(batch)
    assert compress(pot.model) == 1
    out = pot.compute(batch)
    assert torch.allclose(out["energy"], ref["energy"], atol=1e-9, rtol=0)
    assert torch.allclose(out["forces"], ref["forces"], atol=1e-9, rtol=0)
    assert ref["forces"].abs().max() > 1e-3  # random weights: the check bites


def test_tables_follow_the_weights_and_a_package_round_trip(tmp_path, ethanol_data):
    model = _model(compressed=True)
    model.eval()
    batch = Potential(model, dtype=torch.float64).batch(list(ethanol_data)[:2])
    dp = model.terms[1]
    first = dp.tables()
    with torch.no_grad():
        for p in dp.embedding.parameters():
            p.mul_(1.1)
    assert not torch.equal(dp.tables(), first)  # rebuilt from the new weights
    path = save_package(tmp_path / "dp.safetensors", model)
    loaded, meta = load_package(path)
    assert meta["model"]["terms"][1]["compressed"] is True
    a = Potential(model, dtype=torch.float64).compute(batch)
    b = Potential(loaded, dtype=torch.float64).compute(batch)
    assert torch.allclose(a["forces"], b["forces"], atol=1e-12, rtol=0)


def test_compress_package_and_refusals(tmp_path, ethanol_data):
    model = _model()
    src = save_package(tmp_path / "dp.safetensors", model)
    dst = compress_package(src, tmp_path / "dp_c.safetensors")
    loaded, meta = load_package(dst)
    assert loaded.terms[1].compressed and meta["extra"]["compressed_from"] == str(src)
    loaded.train()
    with pytest.raises(RuntimeError, match="cannot be trained"):
        loaded(Potential(loaded, dtype=torch.float64).batch(list(ethanol_data)[:1]))
    from ffspace.errors import ConfigError

    other = save_package(tmp_path / "ref.safetensors", Sum([AtomicReference({1: 0.0})]))
    with pytest.raises(ConfigError, match="no Deep Potential"):
        compress_package(other, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="axis"):
        DeepPotential(ELEMENTS, embedding=(8,), axis=16)
