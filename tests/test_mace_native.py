"""The MACE-style model's C kernel (ffspace/kernels/mace.c, ffspace.potential.native_mace): tabulated radial MLPs and
hand-derived forces, checked against the eager model and autograd."""

import numpy as np
import pytest
import torch

from ffspace.models.composite import AtomicReference, Sum
from ffspace.models.mace import MACE
from ffspace.potential import Potential

CONFIGS = [dict(channels=8, hidden_lmax=0), dict(channels=8, hidden_lmax=1),
           dict(channels=6, lmax=3, layers=3, hidden_lmax=1), dict(channels=6, correlation=2, layers=1),
           dict(channels=6, correlation=1, lmax=1, hidden_lmax=1)]


def _model(elements, seed=0, **kw):
    """A MACE-style model whose weights are moved off their initial values, so forces are ~0.1-1 eV/Å."""
    torch.manual_seed(seed)
    model = MACE(elements, cutoff=4.0, n_rbf=6, radial_hidden=16, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _kernel_or_skip(term):
    from ffspace.kernels.build import KernelUnavailable
    from ffspace.potential.native_mace import MaceKernel

    try:
        return MaceKernel(term)
    except KernelUnavailable as exc:
        pytest.skip(f"no C compiler for the MACE kernel here: {exc}")


def _agree(pot, batch, kernel):
    """The model's per-atom energies and forces through the kernel equal autograd's (float64 round-off)."""
    from ffspace.potential import analytic

    ref = pot.compute(batch, fast=False)
    energies, forces = analytic.energies_forces(pot.model, batch, kernel)
    scale = float(ref["forces"].abs().max())
    assert scale > 1e-2, "the test model's forces are too small to test anything"
    assert torch.allclose(energies, ref["energies"], atol=1e-9, rtol=0)
    assert torch.allclose(forces, ref["forces"], atol=1e-9 * max(scale, 1.0), rtol=0)
    return ref


def test_kernel_equals_autograd(ethanol_data):
    """Energies and forces of the kernel equal the eager model's autograd ones to float64 round-off (the radial
    tables are checked to 1e-10 of the largest weight): invariant and vector node features, lmax 1-3, body orders 2-4,
    1-3 layers, a Verlet skin's extra edges, a periodic box; `Potential` uses it by default and passes its check."""
    from ffspace.graph.batch import collate, graph_of
    from ffspace.testing import physics

    structures = list(ethanol_data)[:3]
    for kw in CONFIGS:
        model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}), _model([1, 6, 8], **kw)])
        pot = Potential(model, dtype=torch.float64, fast=False)
        kernel = _kernel_or_skip(pot.model.terms[1])
        assert kernel.table_error < 1e-10
        _agree(pot, pot.batch(structures), kernel)
        _agree(pot, collate([graph_of(s, pot.cutoff + 1.5) for s in structures], dtype=torch.float64), kernel)
        fast = Potential(model, dtype=torch.float32)
        out = fast.compute(fast.batch(structures))
        assert fast.fast.native and fast.fast.state == "checked"
        ref = pot.compute(pot.batch(structures))
        assert torch.allclose(out["forces"].double(), ref["forces"], atol=1e-4)
        assert torch.allclose(out["energy"], ref["energy"], atol=1e-3, rtol=0)
    box = physics.periodic_box(2)
    model = _model(sorted(set(box.numbers.tolist())), seed=1, channels=8, hidden_lmax=1)
    pot = Potential(model, dtype=torch.float64, fast=False)
    batch = pot.batch([box])
    assert batch.shifts.abs().sum() > 0
    _agree(pot, batch, _kernel_or_skip(pot.model))


def test_kernel_follows_weight_changes(ethanol_data):
    model = _model([1, 6, 8], seed=2, channels=8, hidden_lmax=1)
    pot = Potential(model, dtype=torch.float64, fast=False)
    batch = pot.batch(list(ethanol_data)[:2])
    kernel = _kernel_or_skip(pot.model)
    _agree(pot, batch, kernel)
    with torch.no_grad():
        pot.model.radials[0][0].weight.mul_(1.5)  # the tables must be rebuilt
        pot.model.readouts[-1][2].bias.add_(1.0)
    _agree(pot, batch, kernel)


def test_a_pair_inside_the_tables_start_runs_eagerly(ethanol_data):
    """Two atoms closer than the radial tables start (0.05 Å): the kernel gives NaN for that structure only (an MD
    blow-up for the caller to detect), and `Potential.compute` answers that call with the eager model."""
    from ffspace.potential.native_mace import TABLE_START

    model = _model([1, 6, 8], seed=3, channels=8)
    pot = Potential(model, dtype=torch.float64)
    from ffspace.data import Structure

    good = ethanol_data[0]
    positions = np.array(ethanol_data[1].positions)
    positions[1] = positions[0] + [0.5 * TABLE_START, 0.0, 0.0]
    bad = Structure.__new__(Structure)  # as an MD step makes it: a validated Structure refuses such a geometry
    bad.numbers, bad.positions, bad.cell, bad.pbc = good.numbers, positions, good.cell, good.pbc
    bad.energy = bad.forces = bad.stress = None
    bad.info = {}
    kernel = _kernel_or_skip(pot.model)
    energies, forces = kernel(pot.batch([good, bad]))
    n = good.n_atoms
    assert torch.isfinite(energies[:n]).all() and torch.isfinite(forces[:n]).all()
    assert torch.isnan(energies[n:]).all() and torch.isnan(forces[n:]).all()
    pot.compute(pot.batch([good]))  # the checked first call
    assert pot.fast.state == "checked"
    out, ref = pot.compute(pot.batch([good, bad])), pot.compute(pot.batch([good, bad]), fast=False)
    assert torch.isfinite(out["forces"]).all()
    assert torch.equal(out["forces"], ref["forces"]) and pot.fast.state == "checked"


def test_radial_functions_that_do_not_tabulate_run_eagerly(ethanol_data, monkeypatch):
    """Where the spline misses the radial MLP by more than its tolerance the kernel is refused (KernelUnavailable,
    naming the error) and the model runs eagerly after one FastPathWarning."""
    from ffspace.kernels.build import KernelUnavailable
    from ffspace.potential import native_mace
    from ffspace.potential.fast import FastPathWarning

    model = _model([1, 6, 8], seed=4, channels=8)
    _kernel_or_skip(model)
    monkeypatch.setattr(native_mace, "TABLE_TOLERANCE", 0.0)
    batch = Potential(model, dtype=torch.float64, fast=False).batch(list(ethanol_data)[:2])
    with pytest.raises(KernelUnavailable, match="spline error"):
        native_mace.MaceKernel(model)
    with pytest.warns(FastPathWarning, match="MACE's C kernel is not available"):
        pot = Potential(model, dtype=torch.float64)
    assert not pot.fast.native and pot.fast.state == "off"
    out, ref = pot.compute(batch), pot.compute(batch, fast=False)
    assert torch.equal(out["forces"], ref["forces"])


def test_md_with_the_kernel_conserves_energy(ethanol_data):
    """NVE with the kernel called straight from numpy (`FastForces.direct`): total energy conserved, and the
    trajectory the one `Potential.compute` gives."""
    from ffspace.md import run_md

    torch.manual_seed(5)  # the initial weights: a gentle surface (a perturbed one pulls atoms together in 30 fs)
    model = MACE([1, 6, 8], cutoff=4.0, n_rbf=6, radial_hidden=16, channels=8, hidden_lmax=1)
    settings = dict(steps=100, ensemble="nve", timestep_fs=0.25, seed=1, temperature=300.0, bond_tolerance=None)
    pot = Potential(model, dtype=torch.float64)
    _kernel_or_skip(pot.model)
    a = run_md(pot, ethanol_data[0], **settings)
    assert a.status == "completed" and pot.fast.native and pot.fast.state == "checked"
    etot, epot = a.thermo["etot_eV"], a.thermo["epot_eV"]
    assert np.ptp(etot) < 1e-3 * np.ptp(epot) and np.ptp(epot) > 1e-4
    slow = Potential(model, dtype=torch.float64)
    slow.fast.direct = lambda *args, **kw: None
    b = run_md(slow, ethanol_data[0], **settings)
    np.testing.assert_allclose(a.final.positions, b.final.positions, atol=1e-10, rtol=0)


def test_priors_beside_the_kernel_run_by_autograd(ethanol_data):
    """A MACE-style model with priors (ZBL, a classical MM term, as `build_model_for_data` composes them): the kernel
    evaluates the MACE-style term and the priors run by autograd beside it, the sum equal to the eager model's. MD
    calls them straight from numpy (`direct_priors`) on molecules; a periodic cell keeps the batch path."""
    from ffspace.models import ZBL, ClassicalMM
    from ffspace.potential.fast import FastForces

    for prior in (ZBL(cutoff=2.5, covalent_scale=1.6), ClassicalMM([1, 6, 8], cutoff=4.0)):
        model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}), _model([1, 6, 8], seed=6, channels=8),
                     prior])
        pot = Potential(model, dtype=torch.float64)
        _kernel_or_skip(pot.model.terms[1])
        batch = pot.batch(list(ethanol_data)[:3])
        out, ref = pot.compute(batch), pot.compute(batch, fast=False)
        assert pot.fast.native and pot.fast.state == "checked"
        assert torch.allclose(out["forces"], ref["forces"], atol=1e-9, rtol=0)
        assert torch.allclose(out["energy"], ref["energy"], atol=1e-9, rtol=0)
        frame = ethanol_data[0]
        assert isinstance(pot.fast, FastForces) and pot.fast.direct(frame.numbers, frame.cell, frame.pbc) is not None
        assert pot.fast.direct(frame.numbers, 10.0 * np.eye(3), np.ones(3, dtype=bool)) is None


def test_the_morse_prior_on_the_direct_path_equals_the_eager_model(ethanol_data):
    """MACE-style + the reactive Morse prior, copies called straight from numpy, against the eager model, at
    geometries displaced until bonds stretch past the switch and atoms approach."""
    from ffspace.md.copies import MoleculeCopies
    from ffspace.models import MorsePairs

    torch.manual_seed(4)
    morse = MorsePairs([1, 6, 8])
    with torch.no_grad():  # off its start values, so every table entry matters
        for p in morse.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}), morse, _model([1, 6, 8], seed=6, channels=8)])
    pot = Potential(model, dtype=torch.float64)
    _kernel_or_skip(pot.model.terms[2])
    rng = np.random.default_rng(1)
    fast = MoleculeCopies.thermal(pot, ethanol_data[0], 2, 300.0, rng)
    eager = MoleculeCopies(Potential(model, dtype=torch.float64, fast=False), ethanol_data[0], fast.positions(),
                           fast.velocities())
    start = fast.state.positions.copy()
    for step in range(6):
        positions = start + (0.03 + 0.06 * step) * rng.standard_normal(start.shape)
        per_copy = positions.reshape(2, -1, 3)  # (the copies are independent: only distances within one count)
        gaps = np.linalg.norm(per_copy[:, :, None] - per_copy[:, None], axis=-1) + 9 * np.eye(per_copy.shape[1])
        assert gaps.min() > 0.3, "a displacement brought atoms into contact: the comparison would be of NaNs"
        _, forces = fast(positions)
        _, reference = eager(positions)
        assert fast._direct, "the direct path did not run"
        np.testing.assert_allclose(fast.energies, eager.energies, atol=1e-7, rtol=0)
        np.testing.assert_allclose(forces, reference, atol=1e-8 * max(1.0, np.abs(reference).max()), rtol=0)


@pytest.mark.parametrize("nested,in_c,bond_form", [(False, True, "harmonic"), (True, True, "harmonic"),
                                                    (False, False, "harmonic"), (False, True, "morse"),
                                                    (False, False, "morse")],
                         ids=["fitted_jointly", "frozen_package", "numpy_without_compiler", "morse_bonds",
                              "morse_bonds_numpy"])
def test_priors_on_the_direct_path_equal_the_eager_model(ethanol_data, nested, in_c, bond_form, monkeypatch):
    """Copies of a molecule under MACE-style + MM prior + ZBL, called straight from numpy: energies and forces those
    of the eager model at geometries displaced far enough to break and form bonds (the fixed topology is rebuilt by
    the model's rules, holding the same bonds along a trajectory), and a copy whose atoms collapse is failed alone
    (NaN). A frozen Δ prior package is a sum of its own (reference energies + MM): its terms take the same path. The MM terms run in C
    (kernels/mm.c), or in numpy where that cannot be built; with harmonic or Morse bonds."""
    from ffspace.md.copies import MoleculeCopies
    from ffspace.models import ZBL, ClassicalMM
    from ffspace.potential.direct_priors import FixedTopologyMM

    from ffspace.potential import direct_priors

    if not in_c:
        monkeypatch.setattr(direct_priors, "_mm_kernel", lambda: None)
    torch.manual_seed(3)
    mm = ClassicalMM([1, 6, 8], cutoff=4.0, bond_form=bond_form)
    with torch.no_grad():  # off its start values, so every parameter table matters
        for p in mm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    prior = Sum([AtomicReference({1: -0.5, 6: 2.0, 8: 1.0}), mm]) if nested else mm
    model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}), prior, _model([1, 6, 8], seed=6, channels=8),
                 ZBL(cutoff=2.5, covalent_scale=1.6)])
    pot = Potential(model, dtype=torch.float64)
    _kernel_or_skip(pot.model.terms[2])
    frame = ethanol_data[0].copy()  # (the fixture is shared: a charge left on it would reach later tests)
    frame.info["charge"] = 1.0  # the prior's charges are made to sum to it, per copy
    rng = np.random.default_rng(0)
    fast = MoleculeCopies.thermal(pot, frame, 3, 300.0, rng)
    eager = MoleculeCopies(Potential(model, dtype=torch.float64, fast=False), frame, fast.positions(),
                           fast.velocities())
    start = fast.state.positions.copy()
    for step in range(12):
        positions = start + (0.02 + 0.03 * step) * rng.standard_normal(start.shape)
        if step == 11:
            positions[:3] = positions[0] + 0.01 * rng.standard_normal((3, 3))  # copy 0 collapses
            positions[3:9] = positions[0] + 0.3 * rng.standard_normal((6, 3))
        _, forces = fast(positions)
        _, reference = eager(positions)
        assert fast._direct, "the direct path did not run"
        if step < 11:
            np.testing.assert_allclose(fast.energies, eager.energies, atol=1e-7, rtol=0)  # of ~4000 eV
            np.testing.assert_allclose(forces, reference, atol=1e-8 * max(1.0, np.abs(reference).max()), rtol=0)
    assert np.isnan(fast.energies[0]) and np.isnan(eager.energies[0])
    np.testing.assert_allclose(fast.energies[1:], eager.energies[1:], atol=1e-7, rtol=0)
    priors = [c.cell_contents for c in fast._direct.__closure__ if isinstance(c.cell_contents, list)]
    mm_direct = next(p for group in priors for p in group if isinstance(p, FixedTopologyMM))
    assert mm_direct.rebuilds > 2, "the displacements never changed the bonds: the rebuild was not tested"
    if in_c and mm_direct.lib is None:
        pytest.skip("no C compiler here: the numpy version ran")
    assert (mm_direct.lib is not None) == in_c


def test_no_bond_forms_along_a_trajectory_on_the_direct_path():
    """The MD fast path holds the MM prior's topology as the eager model does (each from its own model): two hydrogens
    of one CH4 copy squeezed past the H–H perception radius (0.837 Å) in small steps stay unbonded, the energy changes
    smoothly and equals the eager one, while the other copy, launched far away, is perceived afresh."""
    import copy

    from ase.build import molecule

    from ffspace.data import Structure
    from ffspace.md.copies import MoleculeCopies
    from ffspace.models import ClassicalMM

    atoms = molecule("CH4")
    frame = Structure(numbers=atoms.numbers, positions=atoms.positions)
    model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}), ClassicalMM([1, 6, 8], cutoff=4.0),
                 _model([1, 6, 8], seed=6, channels=8)])
    pot = Potential(model, dtype=torch.float64)
    _kernel_or_skip(pot.model.terms[2])
    start = np.concatenate([frame.positions, frame.positions])
    per_copy = start.reshape(2, -1, 3)
    fast = MoleculeCopies(pot, frame, per_copy, np.zeros_like(per_copy))
    eager = MoleculeCopies(Potential(copy.deepcopy(model), dtype=torch.float64, fast=False), frame, per_copy,
                           np.zeros_like(per_copy))
    mid, axis = (frame.positions[1] + frame.positions[2]) / 2, frame.positions[1] - frame.positions[2]
    axis /= np.linalg.norm(axis)
    energies = []
    for k, d in enumerate(np.linspace(1.78, 0.75, 40)):
        positions = start.copy()
        positions[1], positions[2] = mid + axis * d / 2, mid - axis * d / 2
        if k == 39:
            positions[5:] += 3.0  # copy 1 launched: not a step of its trajectory
        fast(positions)
        eager(positions)
        assert fast._direct, "the direct path did not run"
        np.testing.assert_allclose(fast.energies, eager.energies, atol=1e-7, rtol=0)
        energies.append(fast.energies[0])
    assert np.max(np.abs(np.diff(energies))) < 0.5
    fresh = Potential(copy.deepcopy(model), dtype=torch.float64, fast=False)([frame.copy(positions=positions[:5])])
    assert abs(float(fresh["energy"][0]) - energies[-1]) > 1.0  # perceived afresh, the H–H bond forms
