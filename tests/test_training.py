"""Trainer: learning happens, run files are written, and a SIGKILLed run resumes to the same result."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ffspace.evaluate import error_metrics, predict
from ffspace.potential import Potential
from ffspace.train import Loss, Trainer, TrainConfig, build_model_for_data


def test_trained_model_beats_the_mean(trained_package, ethanol_data):
    _, _, test = ethanol_data.split([-1, 30, 30], seed=0)
    pot = Potential.load(trained_package, dtype=torch.float64)
    m = error_metrics(predict(pot, test), test)
    f = np.concatenate([s.forces for s in test])
    baseline = np.abs(f).mean() * 1000  # predicting zero force, meV/Å
    assert m["forces_mae_meV_A"] < 0.35 * baseline, (m, baseline)


def test_run_files(tmp_path, ethanol_data):
    train, val = ethanol_data[:40], ethanol_data[40:50]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 16, "layers": 1}, train)
    cfg = TrainConfig(epochs=2, batch_size=10, progress=False, log_format="csv")
    summary = Trainer(model, train, val, cfg, run_dir=tmp_path).fit()
    for name in ("config.yaml", "versions.json", "metrics.csv", "checkpoint.pt", "model.safetensors", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert summary["epochs"] == 2
    assert "torch" in json.loads((tmp_path / "versions.json").read_text())
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert "val_forces_mae_meV_A" in header


def test_huber_and_mse_losses_differ_and_are_zero_at_labels(ethanol_data):
    from ffspace.graph import batch_structures

    batch = batch_structures(ethanol_data[:3], 4.0)
    out = {"energy": batch.energy.clone(), "forces": batch.forces.clone()}
    for kind in ("mse", "huber"):
        total, _ = Loss(kind=kind)(out, batch)
        assert float(total) == 0.0
    out["forces"] = out["forces"] + 0.5
    mse, _ = Loss(kind="mse")(out, batch)
    hub, _ = Loss(kind="huber", huber_delta=0.01)(out, batch)
    assert float(mse) > float(hub) > 0


def test_checkpoint_from_other_config_is_refused(tmp_path, ethanol_data):
    from ffspace.errors import ConfigError

    train, val = ethanol_data[:20], ethanol_data[20:25]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
    Trainer(model, train, val, TrainConfig(epochs=1, progress=False), run_dir=tmp_path).fit()
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
    with pytest.raises(ConfigError, match="different configuration"):
        Trainer(model, train, val, TrainConfig(epochs=1, progress=False, lr=0.5), run_dir=tmp_path).fit()


TRAIN_ARGS = ["model.features=32", "model.layers=2", "model.cutoff=4.0", "train.epochs=8", "train.batch_size=4",
              "train.progress=false", "train.max_time_min=null", "data.n_val=20", "data.n_test=200"]


def _train_cmd(out):
    return [sys.executable, "-m", "ffspace.cli", "train", *TRAIN_ARGS, f"out={out}"]


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_result(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "uninterrupted"  # side by side with the run to kill (one thread each, two cores)
    uninterrupted = subprocess.Popen(_train_cmd(ref), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "train" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        uninterrupted.kill()
        pytest.fail("training never reached epoch 3")
    epoch_s = json.loads(metrics.read_text().splitlines()[-1])["epoch_s"]
    time.sleep(0.4 * epoch_s)  # land inside epoch 4
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert done < 8, "the run finished before it could be killed"

    resumed = subprocess.run(_train_cmd(run), check=True, env=env, capture_output=True, text=True)
    assert "resuming" in resumed.stderr
    assert uninterrupted.wait(timeout=300) == 0
    a = load_file(str(ref / "train" / "model.safetensors"))
    b = load_file(str(run / "train" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit for bit (see ffspace/train/trainer.py: what "exact" means)
    assert _rows(ref / "train") == _rows(run / "train")
    assert len(_rows(ref / "train")) == 8


def _rows(run):
    """metrics.jsonl without the wall-clock columns."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time_s", "epoch_s", "epochs_s", "val_s")} for r in rows]


class _Crash(Exception):
    pass


def _fit_mace(train, val, run, crash_after=None):
    class Crashing(Trainer):
        def save_checkpoint(self):
            super().save_checkpoint()
            if self.epoch == crash_after:
                raise _Crash

    model = build_model_for_data({"family": "mace", "cutoff": 5.0}, train, seed=0)  # 64 channels: large gathers
    cfg = TrainConfig(epochs=3, batch_size=8, schedule="cosine", warmup_epochs=1, dtype="float32", progress=False)
    return Crashing(model, train, val, cfg, run_dir=run).fit()


def test_resumed_training_is_bit_identical_to_an_uninterrupted_run_on_two_threads(tmp_path, ethanol_data):
    """MACE in float32 on 2 threads: the gather backward would sum with racing threads (train/
    determinism.py); with deterministic algorithms during the fit, a crashed-and-resumed run equals an
    uninterrupted one bit for bit, and torch's setting is restored afterwards."""
    torch.set_num_threads(2)  # conftest restores the count
    train, val = ethanol_data[:42], ethanol_data[42:52]
    _fit_mace(train, val, tmp_path / "whole")
    with pytest.raises(_Crash):
        _fit_mace(train, val, tmp_path / "resumed", crash_after=1)
    _fit_mace(train, val, tmp_path / "resumed")
    assert _rows(tmp_path / "whole") == _rows(tmp_path / "resumed")
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.are_deterministic_algorithms_enabled()


def test_validating_every_third_epoch_trains_the_same_weights_and_resumes(tmp_path, ethanol_data):
    """train.val_every=3: the same steps as validating every epoch (a cosine on epochs, the last epoch kept), a log
    row and a checkpoint per validation (epochs 3, 6 and the last, 7), and a run killed between two validations
    resumes from the last one to the same weights."""
    train, val = ethanol_data[:24], ethanol_data[24:30]

    def fit(run, val_every, crash_after=None):
        class Crashing(Trainer):
            def _train_epoch(self):
                if self.epoch == crash_after:  # killed during this epoch, before it ends
                    raise _Crash
                return super()._train_epoch()

        model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train, seed=0)
        cfg = TrainConfig(epochs=7, batch_size=6, schedule="cosine", keep="last", val_every=val_every,
                          progress=False)
        return Crashing(model, train, val, cfg, run_dir=run).fit()

    every = fit(tmp_path / "every", 1)
    third = fit(tmp_path / "third", 3)
    assert [r["epoch"] for r in _rows(tmp_path / "every")] == list(range(1, 8))
    assert [r["epoch"] for r in _rows(tmp_path / "third")] == [3, 6, 7]
    assert third["epochs"] == every["epochs"] == 7
    a = load_file(str(tmp_path / "every" / "model.safetensors"))
    b = load_file(str(tmp_path / "third" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(_Crash):
        fit(tmp_path / "killed", 3, crash_after=4)  # epochs 4 and 5 were never checkpointed
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)["epoch"] == 3
    fit(tmp_path / "killed", 3)
    c = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert _rows(tmp_path / "killed") == _rows(tmp_path / "third")


def test_training_restores_the_callers_deterministic_setting(tmp_path, ethanol_data):
    train, val = ethanol_data[:14], ethanol_data[14:20]
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
        Trainer(model, train, val, TrainConfig(epochs=1, batch_size=7, progress=False), run_dir=tmp_path).fit()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_energy_only_training_works_without_force_labels(tmp_path, ethanol_data):
    data = [s.copy(forces=None) for s in ethanol_data[:50]]
    from ffspace.data import Dataset

    train, val = Dataset(data[:40]), Dataset(data[40:])
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
    cfg = TrainConfig(epochs=2, forces_weight=0.0, progress=False)
    summary = Trainer(model, train, val, cfg, run_dir=tmp_path).fit()
    assert summary["best"]["val_energy_mae_meV"] > 0


def test_stress_weight_without_stress_labels_is_refused(tmp_path, ethanol_data):
    from ffspace.errors import ConfigError

    train, val = ethanol_data[:20], ethanol_data[20:25]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
    with pytest.raises(ConfigError, match="stress"):
        Trainer(model, train, val, TrainConfig(epochs=1, stress_weight=1.0, progress=False), run_dir=tmp_path)


def test_potential_does_not_retype_the_callers_model(ethanol_data):
    from ffspace.models import PaiNN

    model = PaiNN([1, 6, 8], cutoff=4.0, features=8, layers=1)
    p64 = Potential(model, dtype=torch.float64)
    p32 = Potential(model, dtype=torch.float32)
    assert next(model.parameters()).dtype == torch.float32
    e64, e32 = p64(ethanol_data[:2])["energy"], p32(ethanol_data[:2])["energy"]
    np.testing.assert_allclose(e64, e32, rtol=1e-5)


def test_float32_model_keeps_float64_energy_totals(ethanol_data):
    """Reference energies stay float64 so totals near 10⁴ eV are not rounded at the meV level."""
    from ffspace.models import AtomicReference, Sum

    big = {1: -9000.123456789, 6: -9000.987654321, 8: -9000.5}
    model = Sum([AtomicReference(big)])
    s = ethanol_data[0]
    exact = sum(big[int(z)] for z in s.numbers)
    e = Potential(model, dtype=torch.float32)([s])["energy"][0]
    assert abs(e - exact) < 1e-9


def test_resume_may_extend_epochs(tmp_path, ethanol_data):
    train, val = ethanol_data[:20], ethanol_data[20:25]

    def fit(epochs):
        model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
        return Trainer(model, train, val, TrainConfig(epochs=epochs, progress=False), run_dir=tmp_path).fit()

    assert fit(1)["epochs"] == 1
    assert fit(3)["epochs"] == 3


def test_the_time_budget_counts_training_steps_not_validation(tmp_path, ethanol_data, monkeypatch):
    """Two models of one benchmark validate at different costs (a C kernel or not): the budget counts the training
    steps only, validation is timed apart (``val_s``). Here validation is slowed by 0.4 s per epoch, far more than an
    epoch's training steps on 20 frames: a budget that counted it would stop after a few epochs."""
    real = Trainer.validate

    def slow(self):
        time.sleep(0.4)
        return real(self)
    monkeypatch.setattr(Trainer, "validate", slow)
    train, val = ethanol_data[:20], ethanol_data[20:25]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
    cfg = TrainConfig(epochs=6, batch_size=10, progress=False, max_time_min=0.02)  # 1.2 s of training steps
    trainer = Trainer(model, train, val, cfg, run_dir=tmp_path)
    summary = trainer.fit()
    rows = trainer.history
    assert all(r["val_s"] >= 0.4 > r["epoch_s"] for r in rows), rows
    assert summary["time_s"] == pytest.approx(sum(r["epoch_s"] for r in rows), abs=0.01)
    assert summary["time_s"] < 1.2
    assert summary["epochs"] == 6 or summary["time_s"] + rows[-1]["epoch_s"] > 1.2


def test_a_checkpoint_with_another_budget_is_refused_where_the_caller_asks(tmp_path, ethanol_data):
    """`ffspace bench` trains each model under its budget: a kept training with another budget is refused (resumed,
    a cosine on the clock would start its learning rate again), where a plain training may extend its epochs."""
    from ffspace.errors import ConfigError

    train, val = ethanol_data[:20], ethanol_data[20:25]

    def trainer(epochs, **kwargs):
        model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
        return Trainer(model, train, val, TrainConfig(epochs=epochs, progress=False), run_dir=tmp_path, **kwargs)

    assert trainer(1, same_budget=True).fit()["epochs"] == 1
    assert trainer(1, same_budget=True).fit()["epochs"] == 1  # the same budget: read back
    with pytest.raises(ConfigError, match=r"epochs / max_time_min \[1, None\], not \[2, None\]"):
        trainer(2, same_budget=True).fit()
    assert trainer(2).fit()["epochs"] == 2


@pytest.mark.parametrize("keep", ["best", "last"])
def test_package_keeps_the_best_or_the_last_epoch(tmp_path, ethanol_data, monkeypatch, keep):
    """``train.keep``: the package (and the trainer's model) holds the epoch with the lowest validation loss, or the
    last epoch's weights, with no early stop (a fine-tuning toward data unlike its validation set). The validation
    losses are scripted so that the best epoch is the second of five, and patience would stop at the fourth."""
    from ffspace.potential.package import read_metadata

    scripted = iter([1.0, 0.5, 0.7, 0.9, 0.8])
    real = Trainer.validate

    def validate(self):
        return {**real(self), "loss": next(scripted)}

    monkeypatch.setattr(Trainer, "validate", validate)
    train, val = ethanol_data[:20], ethanol_data[20:25]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train)
    cfg = TrainConfig(epochs=5, batch_size=5, lr=0.05, progress=False, keep=keep, early_stop_patience=2)
    trainer = Trainer(model, train, val, cfg, run_dir=tmp_path)
    summary = trainer.fit()
    assert summary["best"]["epoch"] == 2
    assert summary["epochs"] == (5 if keep == "last" else 4)  # best: 2 epochs without improvement stop it
    written = read_metadata(tmp_path / "model.safetensors")["extra"]["epoch"]
    assert written == (5 if keep == "last" else 2)
    assert ("kept" in summary) == (keep == "last")
    package = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(v, package[k]) for k, v in trainer.model.state_dict().items())
    # the default, "best", does not enter a run's identity: runs made before the option existed still resume
    assert "keep" not in TrainConfig().identity() and TrainConfig(keep="last").identity()["keep"] == "last"


def test_delta_learning_with_a_frozen_mm_prior(tmp_path, ethanol_data):
    """An MM model trained first, then frozen under an ML correction: the prior's weights do not move."""
    from safetensors.torch import load_file

    train, val = ethanol_data[:60], ethanol_data[60:70]
    mm = build_model_for_data({"family": "mm", "cutoff": 5.0}, train)
    Trainer(mm, train, val, TrainConfig(epochs=3, lr=0.01, progress=False), run_dir=tmp_path / "mm").fit()
    prior_path = tmp_path / "mm" / "model.safetensors"
    delta = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 16, "layers": 1,
                                  "prior": str(prior_path)}, train)
    assert [t.family for t in delta.terms] == ["reference", "sum", "schnet"]
    before = {k: v.clone() for k, v in delta.terms[1].state_dict().items()}
    summary = Trainer(delta, train, val, TrainConfig(epochs=15, lr=3e-3, progress=False),
                      run_dir=tmp_path / "delta").fit()
    after = load_file(str(tmp_path / "delta" / "model.safetensors"))
    for k, v in before.items():
        torch.testing.assert_close(after[f"terms.1.{k}"].to(v.dtype), v)
    mm_only = json.loads((tmp_path / "mm" / "summary.json").read_text())["best"]["val_forces_mae_meV_A"]
    assert summary["best"]["val_forces_mae_meV_A"] < mm_only  # the ML correction improves on the prior


def test_delta_learning_with_a_jointly_fitted_mm_prior(tmp_path, ethanol_data):
    train, val = ethanol_data[:30], ethanol_data[30:35]
    model = build_model_for_data({"family": "painn", "cutoff": 4.0, "features": 16, "layers": 1, "prior": "mm"},
                                 train)
    assert [t.family for t in model.terms] == ["reference", "mm", "painn"]
    Trainer(model, train, val, TrainConfig(epochs=1, progress=False), run_dir=tmp_path).fit()


def test_model_with_a_d4_dispersion_prior_trains(tmp_path, ethanol_data):
    pytest.importorskip("dftd4")
    train, val = ethanol_data[:20], ethanol_data[20:25]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1,
                                  "dispersion": "pbe"}, train)
    assert [t.family for t in model.terms] == ["reference", "schnet", "d4"]
    summary = Trainer(model, train, val, TrainConfig(epochs=2, progress=False), run_dir=tmp_path).fit()
    assert np.isfinite(summary["best"]["val_forces_mae_meV_A"])


def test_package_keeps_frozen_parameters_and_loads_in_a_given_dtype(tmp_path, ethanol_data):
    from ffspace.potential.package import load_package, save_package

    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, ethanol_data[:5])
    model = model.double()
    frozen = [name for name, _ in model.named_parameters()][:2]
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    save_package(tmp_path / "m.safetensors", model)
    back, _ = load_package(tmp_path / "m.safetensors", dtype=torch.float64)
    assert [n for n, p in back.named_parameters() if not p.requires_grad] == frozen
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), name  # float64 weights arrive exactly


class _Spiking(Trainer):
    """Wrecks the weights once, after the steps of the epoch that starts at ``spike_at`` epochs done, and reports
    its loss 1000× higher, or (``nan``) raises as a non-finite loss does. Records each epoch's starting weights."""

    def __init__(self, *args, spike_at, nan=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.spike_at, self.nan, self.spiked, self.starts = spike_at, nan, False, []

    def _train_epoch(self):
        self.starts.append((self.epoch, {k: v.clone() for k, v in self.model.state_dict().items()}))
        row = super()._train_epoch()
        if self.epoch == self.spike_at and not self.spiked:
            self.spiked = True
            with torch.no_grad():
                for p in self.model.parameters():
                    p.add_(10.0)
            if self.nan:
                raise FloatingPointError("training loss became nan")
            row["train_loss"] *= 1000
        return row


@pytest.mark.parametrize("val_every, spike_at, back_to", [(1, 3, 3), (3, 4, 3)])
def test_a_loss_spike_is_undone_and_the_learning_rate_halved(tmp_path, ethanol_data, val_every, spike_at, back_to):
    """train.spike_factor: the spiked epoch is undone (with the one before it when that was not validated: epoch 4
    of a run validating every third epoch), the weights are those of the epoch it went back to, the learning rate
    is halved from there on, the run still trains all its epochs, logs each validated epoch once and checkpoints
    the undo count. A non-finite loss is undone too; without the guard it stops the run as before."""
    train, val = ethanol_data[:24], ethanol_data[24:30]

    def fit(run, **options):
        model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train, seed=0)
        cfg = TrainConfig(epochs=7, batch_size=6, schedule="cosine", keep="last", val_every=val_every,
                          progress=False, spike_factor=options.pop("spike_factor", 50.0))
        trainer = _Spiking(model, train, val, cfg, run_dir=run, **options)
        return trainer, trainer.fit()

    trainer, summary = fit(tmp_path / "spike", spike_at=spike_at)
    assert summary["spike_undos"] == 1 and summary["epochs"] == 7
    assert trainer.schedule.spike_scale == 0.5
    epochs = [e for e, _ in trainer.starts]
    assert epochs == list(range(spike_at + 1)) + list(range(back_to, 7))  # trained again from back_to
    first, again = [w for e, w in trainer.starts if e == back_to]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert [r["epoch"] for r in _rows(tmp_path / "spike")] == [e for e in range(1, 8) if e % val_every == 0 or e == 7]
    assert torch.load(tmp_path / "spike" / "checkpoint.pt", weights_only=False)["spike"][0] == 1
    _, summary = fit(tmp_path / "nan", spike_at=spike_at, nan=True)
    assert summary["spike_undos"] == 1 and summary["epochs"] == 7
    with pytest.raises(FloatingPointError):
        fit(tmp_path / "off", spike_at=spike_at, nan=True, spike_factor=0.0)


def test_a_spike_undone_at_the_end_of_the_budget_leaves_a_validated_run(tmp_path, ethanol_data):
    """An undo back to an epoch closed without validation (`val_every` 3: epoch 6 spikes, the run goes back to the
    end of epoch 4), after which the time budget is spent: the run ends on epoch 4, validated, packaged and
    checkpointed, so the summary, the log and the checkpoint agree. A factor in (0, 1] is refused."""

    class Slow(_Spiking):
        def _train_epoch(self):
            row = super()._train_epoch()
            if self.spiked and not getattr(self, "slept", False):
                self.slept = True
                time.sleep(3.5)  # the spiked epoch spends the rest of the budget
            return row

    train, val = ethanol_data[:24], ethanol_data[24:30]
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}, train, seed=0)
    cfg = TrainConfig(epochs=50, batch_size=6, schedule="cosine", keep="last", val_every=3, progress=False,
                      spike_factor=50.0, max_time_min=0.05)
    trainer = Slow(model, train, val, cfg, run_dir=tmp_path, spike_at=5)
    summary = trainer.fit()
    assert summary["spike_undos"] == 1 and summary["stop_reason"] == "time budget"
    assert summary["epochs"] == 4 == trainer.history[-1]["epoch"]
    assert trainer.history[-1]["validated_after_undo"]
    assert [r["epoch"] for r in _rows(tmp_path)] == [3, 4]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 4
    with pytest.raises(ValueError, match="spike_factor"):
        TrainConfig(spike_factor=0.5)
