"""Committees, their calibration and the MD uncertainty monitor (issue 6, first increment)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ffspace.active import Committee, calibration, calibration_plot, train_committee
from ffspace.data import Dataset
from ffspace.md import UncertaintyMonitor, run_md
from ffspace.potential import Potential
from ffspace.train import TrainConfig

# PaiNN: even lightly trained it keeps atoms apart, so hot MD drifts out of the data instead of collapsing.
MODEL = {"family": "painn", "features": 16, "layers": 2, "cutoff": 4.0, "n_rbf": 8}


@pytest.fixture(scope="module")
def splits(ethanol_data):
    train, val, test = ethanol_data.split([-1, 20, 40], seed=3)
    return train, val, test


@pytest.fixture(scope="module")
def committee_dir(tmp_path_factory, splits):
    train, val, _ = splits
    run = tmp_path_factory.mktemp("committee")
    cfg = TrainConfig(epochs=20, batch_size=16, lr=5e-3, schedule="cosine", progress=False)
    paths = train_committee(train, val, MODEL, cfg, run, members=3, subsample=0.7, seed=0)
    assert [p.name for p in paths] == ["model.safetensors"] * 3
    return run, paths


def test_committee_mean_and_deviation_follow_the_members(committee_dir, splits):
    _, paths = committee_dir
    test = list(splits[2][:5])
    committee = Committee.load(paths, dtype=torch.float64)
    pred = committee.predict(test)
    members = [m(test) for m in committee.members]
    forces = np.stack([np.concatenate(m["forces"]) for m in members])  # (M, N, 3)
    mean = forces.mean(0)
    np.testing.assert_allclose(pred["forces"], mean, atol=1e-10)
    np.testing.assert_allclose(pred["energy"], np.mean([m["energy"] for m in members], 0), rtol=1e-12)
    sigma = np.sqrt(((forces - mean) ** 2).sum(-1).mean(0))  # DeePMD's model deviation per atom
    np.testing.assert_allclose(pred["force_deviation"], sigma, atol=1e-10)
    assert pred["force_deviation"].min() > 0  # different seeds and subsamples: the members disagree
    per_frame = np.split(sigma, np.cumsum([s.n_atoms for s in test])[:-1])
    np.testing.assert_allclose(pred["max_force_deviation"], [d.max() for d in per_frame])


def test_identical_members_have_no_deviation(committee_dir, splits):
    _, paths = committee_dir
    same = Committee.load([paths[0], paths[0]], dtype=torch.float64)
    assert np.abs(same.predict(list(splits[2][:3]))["force_deviation"]).max() < 1e-12


def test_members_must_share_dtype_and_cutoff(committee_dir):
    _, paths = committee_dir
    a = Potential.load(paths[0], dtype=torch.float64)
    b = Potential.load(paths[1], dtype=torch.float32)
    with pytest.raises(ValueError, match="member 1 differs"):
        Committee([a, b])
    with pytest.raises(ValueError, match="at least 2"):
        Committee([a])


def test_a_finished_committee_is_not_trained_again(committee_dir, splits):
    run, paths = committee_dir
    stamps = [p.stat().st_mtime_ns for p in paths]
    cfg = TrainConfig(epochs=20, batch_size=16, lr=5e-3, schedule="cosine", progress=False)
    again = train_committee(splits[0], splits[1], MODEL, cfg, run, members=3, subsample=0.7, seed=0)
    assert again == paths and [p.stat().st_mtime_ns for p in again] == stamps


@pytest.mark.slow
def test_members_trained_side_by_side_equal_members_trained_in_turn(splits, tmp_path):
    """workers=2 runs the three members two processes at a time, one thread each; each member still sees its
    own seed, subsample and settings, so the committee is the one trained in turn on one thread, to the bit.
    (Another thread count changes float32 summation order, which 20 epochs amplify to ~0.1 eV/Å.)"""
    cfg = TrainConfig(epochs=6, batch_size=16, lr=5e-3, schedule="cosine", progress=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train = splits[0][:120]  # the equality holds for any set: a small one keeps the test short
        turn = train_committee(train, splits[1], MODEL, cfg, tmp_path / "turn", members=3, subsample=0.7, seed=0)
        torch.set_num_threads(2)  # the side-by-side members get 2 // workers = 1 thread each
        side = train_committee(train, splits[1], MODEL, cfg, tmp_path / "side", members=3, subsample=0.7, seed=0,
                               workers=2)
    finally:
        torch.set_num_threads(threads)
    assert all((p.parent / "done").exists() for p in side)
    test = list(splits[2][:5])
    a = Committee.load(turn, dtype=torch.float64).predict(test)
    b = Committee.load(side, dtype=torch.float64).predict(test)
    np.testing.assert_array_equal(b["forces"], a["forces"])
    assert a["force_deviation"].min() > 0
    with pytest.raises(ValueError, match="workers must be at least 1"):
        train_committee(splits[0], splits[1], MODEL, cfg, tmp_path / "bad", members=3, workers=0)


@pytest.mark.slow
def test_killed_side_by_side_committee_leaves_no_member_running_and_resumes(tmp_path):
    """SIGKILL of the process that trains members side by side: the member processes die with it (nothing
    writes a checkpoint afterwards), and a rerun finishes the committee from the checkpoints."""
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from ffspace.active import train_committee
        from ffspace.data.readers import read_dataset
        from ffspace.train import TrainConfig
        train, val, _ = read_dataset({str(Path(__file__).parent.parent / "src/ffspace/datasets/ethanol_gfn2xtb.extxyz")!r}).split([-1, 20, 40], seed=3)
        cfg = TrainConfig(epochs=int(sys.argv[1]), batch_size=16, lr=5e-3, schedule="cosine", progress=False)
        train_committee(train, val, {MODEL!r}, cfg, {str(tmp_path / "run")!r}, members=2, subsample=0.7, seed=0,
                        workers=2)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, str(script), "12"], env=env, stderr=subprocess.DEVNULL)
    checkpoints = [tmp_path / "run" / f"member_{k}" / "checkpoint.pt" for k in range(2)]
    deadline = time.time() + 120
    while not all(c.exists() for c in checkpoints):
        assert proc.poll() is None and time.time() < deadline, "the members never wrote a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # a member still running would write its next epoch's checkpoint (~0.2 s an epoch) now
    stamps = [c.stat().st_mtime_ns for c in checkpoints]
    time.sleep(2.0)
    assert [c.stat().st_mtime_ns for c in checkpoints] == stamps, "a member kept training after its parent died"
    assert not any((c.parent / "done").exists() for c in checkpoints)
    # Resume with the same settings: every member finishes from its checkpoint.
    done = subprocess.run([sys.executable, str(script), "12"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all((c.parent / "done").exists() and (c.parent / "model.safetensors").exists() for c in checkpoints)


def test_exploration_runs_every_temperature_in_one_batch_with_its_own_bath(committee_dir, splits):
    """Two temperatures × 3 seeds in one batch: every trajectory is recorded under its own name and
    temperature, in the order of one temperature at a time, and the hot copies move more."""
    from ffspace.active.explore import explore

    _, paths = committee_dir
    committee = Committee.load(paths)
    start = splits[0][0]
    records = explore(committee, [start], [100.0, 1500.0], seeds=3, steps=200, record_every=20, upper=50.0, seed=4)
    names = {r["trajectory"] for r in records}
    assert names == {f"start0_{t}K_{c}" for t in ("100", "1500") for c in range(3)}
    assert [r["temperature_K"] for r in records] == sorted(r["temperature_K"] for r in records)
    for name in names:
        steps = [r["step"] for r in records if r["trajectory"] == name]
        assert steps == sorted(steps) and steps[0] == 20
    def spread(t):  # RMS displacement from the start geometry, Å
        return np.mean([np.sqrt(((r["positions"] - start.positions) ** 2).mean()) for r in records
                        if r["temperature_K"] == t and r["step"] >= 100])
    assert spread(1500.0) > 1.5 * spread(100.0), (spread(100.0), spread(1500.0))


def test_exploration_ends_a_trajectory_whose_bond_broke_and_names_the_bond(committee_dir, splits):
    """An injected failure: a bond tolerance of 0.02 Å is passed within a few steps at 600 K, so every trajectory
    ends with "bond broken", its last frame naming the bond (atoms, elements, lengths); with the tolerance off
    the same MD runs to the end."""
    from ffspace.active.explore import explore, survival

    committee = Committee.load(committee_dir[1])
    start = splits[0][0]
    records = explore(committee, [start], [600.0], seeds=2, steps=60, record_every=20, upper=50.0, seed=1,
                      bond_tolerance=0.02)
    ends = [r for r in records if r["stopped"]]
    assert len(ends) == 2 and {r["stopped"] for r in ends} == {"bond broken"}
    for r in ends:
        f = r["failure"]
        i, j = f["atoms"]
        length = np.linalg.norm(r["positions"][i] - r["positions"][j])
        assert abs(length - f["length_A"]) < 1e-9 and abs(f["length_A"] - f["start_length_A"]) > 0.02
        assert r["step"] < 60 and r["time_ps"] == r["step"] * 0.5e-3
    md = survival(records)
    assert md["600"]["runs"] == 2 and md["600"]["survived"] == 0
    calm = explore(committee, [start], [600.0], seeds=2, steps=60, record_every=20, upper=50.0, seed=1,
                   bond_tolerance=None)
    assert survival(calm)["600"]["survived"] == 2


def test_calibration_measures_rank_correlation_and_scale(tmp_path):
    """A fake committee whose errors are its deviations times noise: the figures must say so."""
    rng = np.random.default_rng(0)
    frames = []
    for k in range(40):
        s = types.SimpleNamespace(n_atoms=5, forces=rng.normal(size=(5, 3)), energy=0.0)
        frames.append(s)
    dev = rng.uniform(0.01, 1.0, size=200)
    direction = rng.normal(size=(200, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    ref = np.concatenate([s.forces for s in frames])
    predicted = ref + 2.0 * dev[:, None] * direction * rng.uniform(0.8, 1.2, size=(200, 1))

    class Fake:
        def predict(self, structures):
            return {"forces": predicted, "force_deviation": dev,
                    "max_force_deviation": dev.reshape(40, 5).max(1)}

    data = Dataset(frames)
    data.require_labels = lambda **kw: data
    result = calibration(Fake(), data, bins=5)
    assert result["spearman_atoms"] > 0.95
    assert 1.8 < result["scale_factor"] < 2.2  # errors are twice the deviations
    assert sum(b["n"] for b in result["binned"]) == 200
    shuffled = dev.copy()
    rng.shuffle(shuffled)

    class Unrelated(Fake):
        def predict(self, structures):
            return {**super().predict(structures), "force_deviation": shuffled,
                    "max_force_deviation": shuffled.reshape(40, 5).max(1)}

    assert abs(calibration(Unrelated(), data)["spearman_atoms"]) < 0.2
    assert calibration_plot(result, tmp_path / "cal.png").stat().st_size > 1000


def test_calibration_of_a_trained_committee(committee_dir, splits, tmp_path):
    _, paths = committee_dir
    result = calibration(Committee.load(paths), splits[2])
    assert result["n_structures"] == len(splits[2]) and -1 <= result["spearman_atoms"] <= 1
    assert result["force_mae_meV_A"] > 0 and result["mean_deviation_meV_A"] > 0


def test_uncertainty_monitor_stops_md_driven_out_of_the_training_data(committee_dir, splits, tmp_path):
    """Threshold: twice the largest deviation the committee shows on its training data. Thermal MD at 300 K
    (the data's temperature) stays under it; MD driven at 1000 K leaves the data and is stopped as uncertain."""
    _, paths = committee_dir
    committee = Committee.load(paths, dtype=torch.float64)
    stop = 2.0 * committee.predict(list(splits[0]))["max_force_deviation"].max()
    start = splits[2][0]
    calm = UncertaintyMonitor(committee, stop=stop, flag=stop / 2)
    result = run_md(committee, start, steps=200, ensemble="nvt", temperature=300.0, friction=0.05, seed=1,
                    monitor=calm)
    assert result.status == "completed", result.report
    assert len(calm.deviations) == 201 and max(calm.deviations) < stop
    assert all(dev > stop / 2 for _, dev in calm.flagged)
    hot = UncertaintyMonitor(committee, stop=stop)
    result = run_md(committee, start, steps=3000, ensemble="nvt", temperature=1000.0, friction=0.05, seed=1,
                    monitor=hot, out_dir=tmp_path / "hot")
    assert result.status == "uncertain", (result.status, result.report)
    report = json.loads((tmp_path / "hot" / "uncertain.json").read_text())
    assert report["max_force_deviation_eV_A"] > stop and report["step"] < 3000


def test_uncertainty_monitor_needs_a_committee(trained_package):
    with pytest.raises(TypeError, match="committee"):
        UncertaintyMonitor(Potential.load(trained_package), stop=1.0)


def test_members_start_from_a_package_with_their_own_budget(committee_dir, splits, tmp_path):
    """``committee.init_from`` / ``warm_minutes`` / ``warm_lr`` / ``warm_keep``: round 0's members fine-tune a given package on their
    subsamples (their first epoch already at its accuracy, not a fresh model's) under the warm budget and learning
    rate, not the full ones; a package that is not there is a clear error naming the setting."""
    from ffspace.active.config import load_active_config
    from ffspace.active.loop import _start_packages
    from ffspace.errors import ConfigError
    from ffspace.train import TrainConfig

    train, val, _ = splits
    start = committee_dir[1][0]
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, schedule="cosine", progress=False, max_time_min=30)
    warm = train_committee(train, val, MODEL, cfg, tmp_path / "warm", members=2, subsample=0.7, seed=5,
                           warm_start=[start] * 2, warm_minutes=0.5, warm_lr=2e-4)
    fresh = train_committee(train, val, MODEL, cfg, tmp_path / "fresh", members=2, subsample=0.7, seed=5)

    def first_epoch(package):
        first = json.loads((package.parent / "metrics.jsonl").read_text().splitlines()[0])
        return first["val_forces_mae_meV_A"]

    for w, f in zip(warm, fresh):
        assert first_epoch(w) < 0.7 * first_epoch(f)
        assert "max_time_min: 0.5" in (w.parent / "config.yaml").read_text()
        assert "max_time_min: 30" in (f.parent / "config.yaml").read_text()
        assert yaml.safe_load((w.parent / "config.yaml").read_text())["train"]["lr"] == 2e-4
        assert yaml.safe_load((f.parent / "config.yaml").read_text())["train"]["lr"] == 1e-3
        # a warm member keeps its last epoch (committee.warm_keep); a fresh one its best
        assert yaml.safe_load((w.parent / "config.yaml").read_text())["train"]["keep"] == "last"
        assert yaml.safe_load((f.parent / "config.yaml").read_text())["train"]["keep"] == "best"

    small = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "active_small.yaml"
    active = load_active_config(small, [f"committee.init_from={start}", "committee.warm_minutes=2",
                                        "committee.warm_lr=0.001"])
    assert active.committee.warm_lr == 0.001
    assert _start_packages(active) == [start] * active.committee.members
    missing = load_active_config(small, [f"committee.init_from={tmp_path / 'none.safetensors'}"])
    with pytest.raises(ConfigError, match="committee.init_from"):
        _start_packages(missing)
