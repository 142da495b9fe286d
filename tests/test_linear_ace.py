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

    fit(tmp_path / "whole")
    real_design, calls = least_squares._design, []

    def dying_design(*args):
        calls.append(1)
        if len(calls) == 13:
            raise KeyboardInterrupt  # killed while the 13th structure's rows are computed
        return real_design(*args)

    monkeypatch.setattr(least_squares, "CHECKPOINT_EVERY_S", 0.0)  # a checkpoint after every structure
    monkeypatch.setattr(least_squares, "ROWS_PER_PRODUCT", 1)
    monkeypatch.setattr(least_squares, "_design", dying_design)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "resumed")
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert state["done"] == 12
    calls.clear()

    def counting_design(*args):
        calls.append(1)
        return real_design(*args)

    monkeypatch.setattr(least_squares, "_design", counting_design)
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
