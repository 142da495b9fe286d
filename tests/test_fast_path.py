"""The fast inference path (ffspace/potential/fast.py): compiled energy and forces equal the eager ones, and a
model whose compiled graph fails or disagrees runs eagerly after one warning."""

import numpy as np
import pytest
import torch

from ffspace.models import SchNet
from ffspace.potential import Potential
from ffspace.potential.fast import FastPathWarning


def _schnet():
    torch.manual_seed(0)
    return SchNet([1, 6, 8], cutoff=4.0, features=8, layers=1)


@pytest.mark.slow
def test_compiled_energy_and_forces_equal_the_eager_ones(ethanol_data):
    """A real torch.compile (~10 s): float32 within 1e-3 eV and 1e-4 eV/Å on 10 frames of varying edge counts,
    compiled once (dynamic shapes)."""
    frames = list(ethanol_data[:10])
    fast, eager = Potential(_schnet(), fast=True), Potential(_schnet())
    a, b = fast.predict(frames, batch_size=1), eager.predict(frames, batch_size=1)
    assert fast.fast.state == "checked"
    assert np.abs(a["energy"] - b["energy"]).max() < 1e-3
    assert np.abs(a["forces"] - b["forces"]).max() < 1e-4
    assert np.abs(a["forces"]).max() > 1e-3  # the forces are not trivially zero


def _potential_with(compiler):
    pot = Potential(_schnet(), dtype=torch.float64, fast=True)
    pot.fast._compiler = compiler
    return pot


def test_a_model_that_does_not_compile_runs_eagerly_after_one_warning(ethanol_data):
    def broken(fn):
        raise RuntimeError("no C compiler\nsecond line")

    pot, eager = _potential_with(broken), Potential(_schnet(), dtype=torch.float64)
    batch = pot.batch([ethanol_data[0]])
    with pytest.warns(FastPathWarning, match=r"SchNet model: it could not be compiled \(RuntimeError: no C compiler\)"):
        out = pot.compute(batch)
    assert pot.fast.state == "off"
    expected = eager.compute(batch)
    assert torch.equal(out["forces"], expected["forces"]) and torch.equal(out["energy"], expected["energy"])


def test_a_compiled_graph_that_disagrees_is_never_used(ethanol_data):
    """The first call checks the compiled result against the eager one: wrong forces are caught, not returned."""
    def wrong(fn):
        def compiled(batch):
            energies, forces = fn(batch)
            return energies, forces * 1.001
        return compiled

    pot, eager = _potential_with(wrong), Potential(_schnet(), dtype=torch.float64)
    batch = pot.batch([ethanol_data[0]])
    with pytest.warns(FastPathWarning, match=r"differ from the eager ones"):
        out = pot.compute(batch)
    assert pot.fast.state == "off"
    assert torch.equal(out["forces"], eager.compute(batch)["forces"])


def _counting(calls: list):
    """A stand-in compiler: the eager function itself, counting its calls in ``calls``."""
    def compiler(fn):
        def compiled(batch):
            calls.append(1)
            return fn(batch)
        return compiled
    return compiler


def test_an_agreeing_graph_is_used_and_stress_and_training_stay_eager(ethanol_data):
    calls = []
    pot = _potential_with(_counting(calls))
    batch = pot.batch(list(ethanol_data[:2]))
    eager = Potential(_schnet(), dtype=torch.float64).compute(batch)
    out = pot.compute(batch)
    assert pot.fast.state == "checked" and len(calls) == 1
    np.testing.assert_allclose(out["energy"].numpy(), eager["energy"].numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(out["forces"].numpy(), eager["forces"].numpy(), rtol=0, atol=1e-8)
    pot.compute(batch, stress=True)
    pot.compute(batch, training=True)
    pot.compute(batch, forces=False)
    assert len(calls) == 1
    pot.compute(batch)
    assert len(calls) == 2


def test_md_runs_through_the_fast_path(ethanol_data):
    """run_md with a fast potential calls the compiled graph every step and follows the eager trajectory."""
    from ffspace.md import run_md

    calls = []
    pot = _potential_with(_counting(calls))
    a = run_md(pot, ethanol_data[0], steps=20, ensemble="nve", seed=0)
    b = run_md(Potential(_schnet(), dtype=torch.float64), ethanol_data[0], steps=20, ensemble="nve", seed=0)
    assert len(calls) == 21  # the start and every step
    np.testing.assert_allclose(a.final.positions, b.final.positions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.thermo["etot_eV"], b.thermo["etot_eV"], rtol=0, atol=1e-8)
