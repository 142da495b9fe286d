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


@pytest.mark.parametrize("compressed", [False, True])
def test_hand_derived_forces_equal_autograd(ethanol_data, compressed):
    """Deep Potential's fast path (ffspace.potential.analytic_dp: the backward pass written out, no tape) gives the
    autograd forces of the same energy to float64 round-off, nets or tables, on molecules with a Verlet skin's extra
    edges and on a periodic box; a float32 Potential uses it by default after its first-call check."""
    from ffspace.graph.batch import collate, graph_of
    from ffspace.potential import analytic_dp
    from ffspace.testing import physics

    model = _model(compressed=compressed)
    eager = Potential(model, dtype=torch.float64, fast=False)
    fast = Potential(model, dtype=torch.float64)
    box = physics.periodic_box(1)
    for structures, reach in ((list(ethanol_data)[:3], 0.0), (list(ethanol_data)[:2], 1.5), ([box], 0.0)):
        batch = collate([graph_of(s, eager.cutoff + reach) for s in structures], dtype=torch.float64)
        ref, out = eager.compute(batch), fast.compute(batch)
        assert fast.fast.analytic and fast.fast.state == "checked"
        assert fast.fast.native == (compressed and _kernel_builds())  # compressed: the C kernel on the CPU
        scale = float(ref["forces"].abs().max())
        assert scale > 1e-3  # random weights: the check bites
        assert torch.allclose(out["forces"], ref["forces"], atol=1e-12 * scale, rtol=0)
        assert torch.allclose(out["energy"], ref["energy"], atol=1e-10, rtol=0)
        energies, forces = analytic_dp.energies_forces(fast.model.terms[1], batch)  # the torch version, always
        assert torch.allclose(forces, ref["forces"], atol=1e-12 * scale, rtol=0)
        assert torch.allclose(energies, ref["energies"] - fast.model.terms[0](batch), atol=1e-10, rtol=0)
    f32 = Potential(model, dtype=torch.float32)
    f32.compute(f32.batch(list(ethanol_data)[:2]))
    assert f32.fast.state == "checked"


def _kernel_builds() -> bool:
    from ffspace.kernels.build import KernelUnavailable, load_kernel

    try:
        load_kernel("dp")
        return True
    except KernelUnavailable:
        return False


def test_md_with_the_compressed_kernel_follows_compute(ethanol_data, monkeypatch):
    """MD calls the compressed Deep Potential's C kernel straight from numpy after the checked first call
    (`FastForces.direct`), with the trajectory `Potential.compute` gives."""
    import numpy as np

    from ffspace.md import run_md
    from ffspace.potential.fast import FastForces

    if not _kernel_builds():
        pytest.skip("no C compiler for the Deep Potential kernel here")
    model = _model(compressed=True)
    a = run_md(Potential(model, dtype=torch.float32), ethanol_data[0], steps=30, ensemble="nvt", seed=2,
               bond_tolerance=None)
    monkeypatch.setattr(FastForces, "direct", lambda self, *args, **kwargs: None)
    b = run_md(Potential(model, dtype=torch.float32), ethanol_data[0], steps=30, ensemble="nvt", seed=2,
               bond_tolerance=None)
    assert a.status == b.status == "completed"
    np.testing.assert_array_equal(a.final.positions, b.final.positions)
    assert np.abs(a.final.positions - ethanol_data[0].positions).max() > 1e-3  # it moved
