"""Linear ACE and its least-squares fit (ffspace.models.ace, ffspace.train.least_squares)."""

import numpy as np
import pytest
import torch

pytest.importorskip("e3nn")

from ffspace.errors import ConfigError  # noqa: E402
from ffspace.graph.batch import batch_structures  # noqa: E402
from ffspace.models import AtomicReference, Sum  # noqa: E402
from ffspace.models.ace import LinearACE  # noqa: E402
from ffspace.potential import Potential  # noqa: E402
from ffspace.train import Trainer, TrainConfig, build_model_for_data  # noqa: E402

SMALL = dict(cutoff=4.0, n_rbf=3, lmax=2, degree=4, n_rbf_3=2, lmax_3=2, degree_3=3)  # 210 features per element


def _random_weights(model, seed=0, std=0.05):
    with torch.no_grad():
        model.weights.copy_(std * torch.randn(model.weights.shape, generator=torch.Generator().manual_seed(seed)))
    return model


def test_contracted_energy_equals_features_times_weights(ethanol_data):
    """The inference form (weights contracted into per-element coefficient tensors) is the same polynomial as the
    basis the fit uses, also with a separate four-body cutoff."""
    for kw in (SMALL, {**SMALL, "cutoff_3": 3.0, "n_rbf_3": 3}):
        model = _random_weights(LinearACE([1, 6, 8], **kw).double())
        batch = batch_structures(list(ethanol_data)[:3], 4.0)
        by_features = (model.features(batch) * model.weights[model.species(batch.numbers)]).sum(-1)
        assert torch.allclose(model(batch), by_features, atol=1e-12, rtol=0)
        with torch.no_grad():  # the cached coefficients follow the weights
            model.weights.mul_(2.0)
        assert torch.allclose(model(batch), 2 * by_features, atol=1e-12, rtol=0)


def _teacher_labels(structures):
    """Structures relabelled by a random-weight linear ACE of the SMALL basis: a target the fit can meet exactly."""
    teacher = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}),
                   _random_weights(LinearACE([1, 6, 8], **SMALL), seed=1)])
    pred = Potential(teacher, dtype=torch.float64)(structures)
    return [s.copy(energy=e, forces=f) for s, e, f in zip(structures, pred["energy"], pred["forces"])]


@pytest.mark.parametrize("force_atoms", [None, 4])
def test_least_squares_recovers_a_model_of_its_own_basis(tmp_path, ethanol_data, force_atoms):
    """Labels made by a model of the basis are fitted to round-off: design rows, row weights, the fixed reference
    energies and the ridge selection all have to be right for that (also from the forces of 4 of the 9 atoms of
    each structure, ``fit_force_atoms``, which must pick the rows and labels of the same atoms)."""
    from ffspace.data import Dataset

    data = Dataset(_teacher_labels(list(ethanol_data)[:100]), name="teacher")  # 80 train: more rows than weights
    train, val, test = data.split([-1, 10, 10], seed=0)
    model = build_model_for_data({"family": "ace", **SMALL, "fit_force_atoms": force_atoms}, train)
    summary = Trainer(model, train, val, TrainConfig(progress=False, dtype="float64"), run_dir=tmp_path).fit()
    assert summary["stop_reason"] == "least squares" and summary["best"]["ridge"] > 0
    pot = Potential.load(tmp_path / "model.safetensors", dtype="float64")
    pred = pot(list(test))
    err_f = np.abs(np.concatenate(pred["forces"]) - np.concatenate([s.forces for s in test])).max()
    err_e = np.abs(np.array(pred["energy"]) - np.array([s.energy for s in test])).max()
    assert err_f < 1e-4 and err_e < 1e-4, (err_f, err_e)
    assert (tmp_path / "metrics.jsonl").read_text().count("ridge") == len(LinearACE([1]).config["ridge"])


def test_a_killed_fit_resumes_to_the_same_model(tmp_path, ethanol_data, monkeypatch):
    """The normal equations are checkpointed as they grow: a fit killed after some structures resumes from the
    checkpoint and ends with the weights of an uninterrupted fit."""
    from ffspace.train import least_squares

    train, val, _ = ethanol_data.split([-1, 10, 80], seed=0)
    train = train[:30]
    cfg = TrainConfig(progress=False)

    def fit(run):
        return Trainer(build_model_for_data({"family": "ace", **SMALL}, train), train, val, cfg, run_dir=run).fit()

    # one structure per product in both fits: the sums then run in the same order, so the results can agree to
    # 1e-9 (the ill-conditioned solve amplifies a different rounding of AᵀA to ~1e-6 of the weights)
    monkeypatch.setattr(least_squares, "ROWS_PER_PRODUCT", 1)
    fit(tmp_path / "whole")
    real_design_rows, calls = least_squares._design_rows, []

    def dying_design_rows(*args):
        rows = real_design_rows(*args)

        def dying(*inner):
            calls.append(1)
            if len(calls) == 13:
                raise KeyboardInterrupt  # killed while the 13th structure's rows are computed
            return rows(*inner)
        return dying

    monkeypatch.setattr(least_squares, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every structure
    monkeypatch.setattr(least_squares, "_design_rows", dying_design_rows)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "resumed")
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert state["done"] == 12
    calls.clear()

    def counting_design_rows(*args):
        rows = real_design_rows(*args)

        def counting(*inner):
            calls.append(1)
            return rows(*inner)
        return counting

    monkeypatch.setattr(least_squares, "_design_rows", counting_design_rows)
    fit(tmp_path / "resumed")
    assert len(calls) == len(train) - 12  # the resumed fit computes only the structures not yet in the equations
    from safetensors.torch import load_file

    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], rtol=1e-9, atol=1e-12), (key, float(((whole[key] - resumed[key]).abs() / whole[key].abs().clamp_min(1e-30)).max()))


def test_what_least_squares_cannot_fit_is_refused(tmp_path, ethanol_data):
    train, val, _ = ethanol_data.split([-1, 10, 10], seed=0)
    model = build_model_for_data({"family": "ace", **SMALL, "prior": "mm"}, train)
    with pytest.raises(ConfigError, match="linear least squares.*mm"):
        Trainer(model, train, val, TrainConfig(progress=False), run_dir=tmp_path / "mm").fit()
    model = build_model_for_data({"family": "ace", **SMALL}, train)
    with pytest.raises(ConfigError, match="loss must be mse"):
        Trainer(model, train, val, TrainConfig(progress=False, loss="huber"), run_dir=tmp_path / "huber").fit()


def test_forces_only_fit(tmp_path, ethanol_data):
    """energy_weight=0 on data without energies: the fit uses the forces alone (the energies' offset is then free)."""
    from ffspace.data import Dataset

    data = Dataset([s.copy(energy=None) for s in list(ethanol_data)[:40]], name="forces only")
    train, val = data.split([-1, 8], seed=0)
    model = build_model_for_data({"family": "ace", **SMALL}, ethanol_data[:40])  # reference energies need energies
    cfg = TrainConfig(progress=False, energy_weight=0.0)
    summary = Trainer(model, train, val, cfg, run_dir=tmp_path).fit()
    assert summary["best"]["val_forces_mae_meV_A"] < 100


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="cutoff_3"):
        LinearACE([1, 6], cutoff=4.0, cutoff_3=5.0)
    with pytest.raises(ValueError, match="correlation"):
        LinearACE([1, 6], correlation=4)
    with pytest.raises(ValueError, match="ridge"):
        LinearACE([1, 6], ridge=[0.0])
    with pytest.raises(ValueError, match="fit_force_atoms"):
        LinearACE([1, 6], fit_force_atoms=0)


def _kernel_or_skip(ace):
    from ffspace.kernels.build import KernelUnavailable
    from ffspace.potential.native import AceKernel

    try:
        return AceKernel(ace)
    except KernelUnavailable as exc:
        pytest.skip(f"no C compiler for the linear ACE kernel here: {exc}")


def _agree(pot, batch, kernel):
    """The torch hand-derived forces and the C kernel's equal autograd's (float64 round-off)."""
    from ffspace.potential import analytic

    ref = pot.compute(batch, fast=False)
    with torch.no_grad():
        for k in (None, kernel):
            energies, forces = analytic.energies_forces(pot.model, batch, k)
            assert torch.allclose(energies, ref["energies"], atol=1e-10, rtol=0), "energies" + (" (C)" if k else "")
            assert torch.allclose(forces, ref["forces"], atol=1e-10, rtol=0), "forces" + (" (C)" if k else "")
    return ref


def test_hand_derived_forces_equal_autograd(ethanol_data):
    """The fast path's forces for linear ACE (ffspace.potential.analytic in torch, and the C kernel of
    ffspace.potential.native) are the autograd forces of the same energy, to float64 round-off: shared and separate
    four-body bases (A' with a larger lmax than ν = 2's), body orders 2 to 4, a Verlet skin's extra edges, a periodic box; Potential uses the kernel by
    default and passes its first-call check."""
    from ffspace.graph.batch import collate, graph_of
    from ffspace.potential import analytic

    structures = list(ethanol_data)[:3]
    for kw in (SMALL, {**SMALL, "cutoff_3": 3.0, "n_rbf_3": 3, "lmax_3": 3}, {**SMALL, "lmax": 1},
               {**SMALL, "correlation": 2}, {**SMALL, "correlation": 1}):
        model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}),
                     _random_weights(LinearACE([1, 6, 8], **kw), seed=2)])
        assert analytic.supports(model)
        pot = Potential(model, dtype=torch.float64)
        kernel = _kernel_or_skip(pot.model.terms[1])
        ref = _agree(pot, pot.batch(structures), kernel)
        # a neighbour list with a skin: edges beyond the cutoff add nothing
        _agree(pot, collate([graph_of(s, pot.cutoff + 1.5) for s in structures], dtype=torch.float64), kernel)
        fast = Potential(model, dtype=torch.float32)
        out = fast.compute(fast.batch(structures))
        assert fast.fast.analytic and fast.fast.native and fast.fast.state == "checked"
        assert torch.allclose(out["forces"].double(), ref["forces"], atol=1e-4)
        assert torch.allclose(out["energy"], ref["energy"], atol=1e-3, rtol=0)
    # periodic: a small water box, with edges to periodic images
    from ffspace.testing import physics

    box = physics.periodic_box(2)
    model = _random_weights(LinearACE(sorted(set(box.numbers.tolist())), **SMALL), seed=3)
    pot = Potential(model, dtype=torch.float64)
    batch = pot.batch([box])
    assert batch.shifts.abs().sum() > 0
    _agree(pot, batch, _kernel_or_skip(model))
    assert not analytic.supports(Sum([AtomicReference({1: 0.0}), LinearACE([1, 6], **SMALL), LinearACE([1], **SMALL)]))
    assert Potential(model, fast=False).fast is None


def test_kernel_follows_weight_changes(ethanol_data):
    """The kernel's copy of the weights is refreshed when the model's change (through `contracted`'s cache key)."""
    model = _random_weights(LinearACE([1, 6, 8], **SMALL), seed=4)
    pot = Potential(model, dtype=torch.float64)
    batch = pot.batch(list(ethanol_data)[:2])
    kernel = _kernel_or_skip(pot.model)
    first = kernel(batch)[0].sum()
    with torch.no_grad():
        pot.model.weights.mul_(2.0)
    assert torch.allclose(kernel(batch)[0].sum(), 2 * first, rtol=1e-12)


def test_without_a_c_compiler_the_torch_forces_run(tmp_path, monkeypatch, ethanol_data):
    """No C compiler: building the kernel raises KernelUnavailable naming the compiler, and a Potential says so in one
    FastPathWarning and runs linear ACE's hand-derived forces in torch, still equal to autograd."""
    from ffspace.kernels import build
    from ffspace.kernels.build import KernelUnavailable
    from ffspace.potential.fast import FastPathWarning
    from ffspace.potential.native import AceKernel

    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("FFSPACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_LOADED", {})
    model = _random_weights(LinearACE([1, 6, 8], **SMALL), seed=5)
    with pytest.raises(KernelUnavailable, match="no-such-cc"):
        AceKernel(model)
    with pytest.warns(FastPathWarning, match="C kernel is not available"):
        pot = Potential(model, dtype=torch.float64)
    assert pot.fast.analytic and not pot.fast.native
    batch = pot.batch(list(ethanol_data)[:2])
    out, ref = pot.compute(batch), pot.compute(batch, fast=False)
    assert pot.fast.state == "checked"
    assert torch.allclose(out["forces"], ref["forces"], atol=1e-10, rtol=0)


def test_the_kernel_is_built_once_and_cached(tmp_path, monkeypatch):
    """A fresh cache folder gets one shared library named by the source's hash; a second load (another process:
    the in-process table emptied) reuses it without compiling."""
    from ffspace.kernels import build

    monkeypatch.setenv("FFSPACE_CACHE", str(tmp_path))
    monkeypatch.setattr(build, "_LOADED", {})
    try:
        build.load_kernel("ace")
    except build.KernelUnavailable as exc:
        pytest.skip(f"no C compiler here: {exc}")
    built = sorted((tmp_path / "kernels").glob("ace-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(build, "_LOADED", {})
    calls, run = [], build.subprocess.run
    monkeypatch.setattr(build.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or run(cmd, **kw))
    build.load_kernel("ace")
    assert [c for c in calls if "-shared" in c] == [] and built[0].stat().st_mtime_ns == stamp


def test_an_unwritable_kernel_cache_is_a_clear_fallback(tmp_path, monkeypatch):
    """A cache folder that cannot be created: KernelUnavailable says which and how to fix it (and Potential falls
    back to the torch forces, as without a compiler)."""
    from ffspace.kernels import build

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FFSPACE_CACHE", str(blocker))
    monkeypatch.setattr(build, "_LOADED", {})
    try:
        build._compiler()
    except build.KernelUnavailable as exc:
        pytest.skip(f"no C compiler here: {exc}")
    with pytest.raises(build.KernelUnavailable, match="FFSPACE_CACHE"):
        build.load_kernel("ace")


@pytest.mark.parametrize("settings", [{}, {"cutoff_3": 3.5, "n_rbf_3": 3}, {"correlation": 2, "lmax": 2}])
def test_design_kernel_rows_equal_forward_mode_autograd(ethanol_data, settings):
    """The fit's design rows from the C kernel (ffspace.train.ace_design) equal forward-mode autograd's (`_design`):
    shared and separate four-body bases, body order 3, all atoms and a subset (the tangents of chosen atoms only)."""
    from ffspace.graph.batch import collate, graph_of
    from ffspace.kernels.build import KernelUnavailable
    from ffspace.train.ace_design import DesignKernel
    from ffspace.train.least_squares import _design

    train = ethanol_data[:5]
    term = build_model_for_data({"family": "ace", **SMALL, **settings}, train).double().terms[-1]
    with torch.no_grad():
        term.energy_scale.fill_(1.7)
    try:
        kernel = DesignKernel(term)
    except KernelUnavailable as exc:
        pytest.skip(f"no C kernel here: {exc}")
    for frame, atoms in zip(train[:3], [None, [0, 4, 8], [2]]):
        graph = graph_of(frame, term.cutoff)
        chosen = torch.arange(frame.n_atoms) if atoms is None else torch.tensor(atoms)
        row, forces = kernel(collate([graph], dtype=torch.float64, labels=False), chosen)
        ref_row, ref_forces = _design(term, graph, torch.float64, chosen)
        assert forces.shape == ref_forces.shape
        assert torch.allclose(row, ref_row, rtol=1e-10, atol=1e-12)
        assert torch.allclose(forces, ref_forces, rtol=1e-10, atol=1e-12 * float(ref_forces.abs().max()))


def test_feature_degrees_follow_the_basis_order():
    """The smoothness prior's degrees (Σ n + Σ l per feature) line up with `features`' columns: the constant, the
    ν = 1 channels (n = 0..n_rbf-1 per element), then pairs and triples, all within the basis' degree limits."""
    ace = LinearACE([1, 6, 8], **SMALL)
    deg = ace.feature_degrees()
    assert deg.shape == (ace.n_features,)
    assert deg[0] == 0
    assert deg[1:1 + ace.k2].tolist() == list(range(SMALL["n_rbf"])) * 3
    n2 = 1 + ace.k2 + sum(ace.pairs)
    assert deg[1 + ace.k2:n2].max() <= SMALL["degree"] and deg[n2:].max() <= SMALL["degree_3"]
    assert deg[n2:].min() >= 0 and ace.n_triples == ace.n_features - n2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_md_calls_the_kernel_directly_with_the_numbers_of_compute(ethanol_data, dtype, monkeypatch):
    """After the first (checked) call, `run_md` evaluates linear ACE by the C kernel straight from numpy
    (`FastForces.direct`): the trajectory is the one `Potential.compute` gives, bit for bit in the dynamics (positions
    and forces rounded to the potential's dtype alike), on a molecule (Langevin) and a periodic box (NVE)."""
    from ffspace.md import run_md
    from ffspace.potential.fast import FastForces
    from ffspace.testing import physics

    box = physics.periodic_box(2)
    real_direct = FastForces.direct
    for start, ensemble in ((ethanol_data[0], "nvt"), (box, "nve")):
        elements = sorted(set(start.numbers.tolist()))
        model = Sum([AtomicReference({z: -10.0 * z for z in elements}),
                     _random_weights(LinearACE(elements, **SMALL), seed=4, std=0.002)])
        pot = Potential(model, dtype=dtype)
        _kernel_or_skip(pot.model.terms[1])
        calls = []

        def counting_direct(self, *args, **kwargs):
            evaluate = real_direct(self, *args, **kwargs)
            return lambda *a: (calls.append(1), evaluate(*a))[1]

        monkeypatch.setattr(FastForces, "direct", counting_direct)
        a = run_md(pot, start, steps=30, ensemble=ensemble, seed=1, temperature=600.0, bond_tolerance=None)
        assert len(calls) == 30  # every step after the checked first call
        monkeypatch.setattr(FastForces, "direct", lambda self, *args, **kwargs: None)
        b = run_md(Potential(model, dtype=dtype), start, steps=30, ensemble=ensemble, seed=1, temperature=600.0,
                   bond_tolerance=None)
        assert a.status == b.status == "completed"
        np.testing.assert_array_equal(a.final.positions, b.final.positions)
        np.testing.assert_allclose(a.thermo["epot_eV"], b.thermo["epot_eV"], rtol=1e-13, atol=0)


def test_molecule_copies_call_the_kernel_directly(ethanol_data, monkeypatch):
    """Copies of a molecule run as one state (`MoleculeCopies`, the bench's stability runs and active learning's
    exploration) evaluate linear ACE in one C-kernel call from numpy after the first (checked) call: the same
    energies and forces per copy as through `Potential.compute`; a copy with non-finite positions gets a NaN energy
    and zero forces, the others are unaffected."""
    from ffspace.md import MoleculeCopies
    from ffspace.potential.fast import FastForces

    start = ethanol_data[0]
    elements = sorted(set(start.numbers.tolist()))
    model = Sum([AtomicReference({z: -10.0 * z for z in elements}),
                 _random_weights(LinearACE(elements, **SMALL), seed=5, std=0.002)])
    rng = np.random.default_rng(0)
    positions = start.positions[None] + 0.05 * rng.normal(size=(4, start.n_atoms, 3))
    velocities = np.zeros_like(positions)
    pot = Potential(model, dtype=torch.float32)
    _kernel_or_skip(pot.model.terms[1])
    direct = MoleculeCopies(pot, start, positions, velocities)
    moved = (positions + 0.02 * rng.normal(size=positions.shape)).reshape(-1, 3)
    moved[5] = np.nan  # copy 0 broke
    e_direct, f_direct = direct(moved)
    assert direct._direct  # the kernel was called directly
    monkeypatch.setattr(FastForces, "direct", lambda self, *args, **kwargs: None)
    slow = MoleculeCopies(Potential(model, dtype=torch.float32), start, positions, velocities)
    e_slow, f_slow = slow(moved)
    assert not slow._direct
    assert np.isnan(direct.energies[0])  # (the caller also finds the broken copy by its positions)
    np.testing.assert_allclose(direct.energies[1:], slow.energies[1:], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(f_direct[start.n_atoms:], f_slow[start.n_atoms:])
    assert e_direct == pytest.approx(slow.energies[1:].sum(), rel=1e-12)
    assert not f_direct[:start.n_atoms].any()


def test_a_fit_without_the_design_kernel_uses_autograd_rows_after_a_warning(tmp_path, ethanol_data, monkeypatch):
    """Where the design kernel cannot be built (no compiler, unwritable cache) the fit warns once and builds its rows
    by forward-mode autograd: the same model as with the kernel."""
    from ffspace.kernels import build

    train, val, _ = ethanol_data.split([-1, 10, 80], seed=0)
    train = train[:20]
    cfg = TrainConfig(progress=False)

    def fit(run):  # the fitted model's predictions on the validation frames (its weights are ill-conditioned)
        Trainer(build_model_for_data({"family": "ace", **SMALL}, train), train, val, cfg, run_dir=run).fit()
        return Potential.load(run / "model.safetensors", dtype=torch.float64).predict(list(val))

    with_kernel = fit(tmp_path / "kernel")
    real = build.load_kernel

    def no_design_kernel(name):
        if name == "ace_design":
            raise build.KernelUnavailable("no compiler (simulated)")
        return real(name)

    monkeypatch.setattr(build, "load_kernel", no_design_kernel)
    monkeypatch.setattr("ffspace.train.ace_design.load_kernel", no_design_kernel)
    with pytest.warns(UserWarning, match="forward-mode autograd"):
        without = fit(tmp_path / "autograd")
    # the rows agree to 1e-16 relative; the solve (ridge down to 1e-11 of the diagonal) amplifies that to ~1e-5 eV
    np.testing.assert_allclose(with_kernel["energy"], without["energy"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(with_kernel["forces"], without["forces"], rtol=0, atol=1e-4)
