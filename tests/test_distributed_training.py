"""Data-parallel training (torch.distributed, gloo): two workers follow the single-process trajectory."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ffspace.errors import ConfigError
from ffspace.train import Trainer, TrainConfig, build_model_for_data

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")


SCHNET = {"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1}


def _fit(run_dir, data, workers, model_cfg=SCHNET, **extra):
    # 13 training frames in batches of 4: the last batch (1 frame) leaves the second worker empty-handed.
    train, val = data[:13], data[40:46]
    model = build_model_for_data(model_cfg, train, seed=3)
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 4, "lr": 0.01, "dtype": "float64", "progress": False,
                         "workers": workers, **extra})
    summary = Trainer(model, train, val, cfg, run_dir=run_dir).fit()
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return summary, history, load_file(str(run_dir / "model.safetensors"))


# MM on ethanol has a parameter no batch reaches (no improper torsions): it must keep no gradient, as in one
# process, or AdamW's weight decay would still move it.
@pytest.mark.parametrize("model_cfg", [SCHNET, {"family": "mm", "cutoff": 6.0}], ids=["schnet", "mm"])
def test_two_workers_follow_the_single_process_trajectory(tmp_path, ethanol_data, model_cfg):
    one, h1, w1 = _fit(tmp_path / "one", ethanol_data, workers=1, model_cfg=model_cfg, weight_decay=0.01)
    two, h2, w2 = _fit(tmp_path / "two", ethanol_data, workers=2, model_cfg=model_cfg, weight_decay=0.01)
    assert one["epochs"] == two["epochs"] == 3 and two["stop_reason"] == "max epochs"
    for a, b in zip(h1, h2):  # same losses per epoch: the split batches sum to the whole batch's gradient
        for key in ("train_loss", "train_forces", "train_energy", "val_forces_mae_meV_A", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-8), key
    assert w1.keys() == w2.keys()
    for k in w1:
        np.testing.assert_allclose(w2[k].numpy(), w1[k].numpy(), rtol=1e-7, atol=1e-10, err_msg=k)


def test_a_worker_error_reaches_the_caller_with_its_type(tmp_path, ethanol_data):
    # A learning rate of 1e30 turns the float32 weights, and so the loss, into NaN within the first epoch.
    with pytest.raises(FloatingPointError, match="training loss became nan"):
        _fit(tmp_path / "run", ethanol_data, workers=2, dtype="float32", lr=1e30, grad_clip=None, warmup_epochs=0)


def test_worker_errors_of_unknown_type_name_the_worker(tmp_path):
    from ffspace.workers import raise_worker_error

    error = tmp_path / "error_1.json"
    error.write_text(json.dumps({"type": "ConfigError", "message": "bad setting"}))
    with pytest.raises(ConfigError, match="bad setting"):
        raise_worker_error(error, "training worker 1", 1)
    error.write_text(json.dumps({"type": "OSError", "message": "disk full"}))
    with pytest.raises(RuntimeError, match="training worker 1 failed: OSError: disk full"):
        raise_worker_error(error, "training worker 1", 1)
    with pytest.raises(RuntimeError, match="training worker 0 exited with code -9"):
        raise_worker_error(tmp_path / "error_0.json", "training worker 0", -9)


def test_datasets_reach_the_workers_exactly(tmp_path, ethanol_data):
    from ffspace.data.readers import read_arrays
    from ffspace.data.writers import write_arrays

    data = copy.deepcopy(ethanol_data[:5])  # the fixture is shared
    data[1].info["charge"] = -1  # read by the batch for charge-conserving electrostatics
    data[2].stress = np.eye(3) * 0.01
    write_arrays(tmp_path / "d.npz", data)
    back = read_arrays(tmp_path / "d.npz")
    assert back.name == data.name and len(back) == len(data)
    for a, b in zip(data, back):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.forces, b.forces)
        assert np.array_equal(a.cell, b.cell) and np.array_equal(a.pbc, b.pbc)
        assert a.energy == b.energy and (a.source, a.frame) == (b.source, b.frame)
        assert (a.stress is None) == (b.stress is None)
    assert back[1].info["charge"] == -1 and np.array_equal(back[2].stress, data[2].stress)


def test_two_workers_resume_a_single_process_run(tmp_path, ethanol_data):
    """The number of workers is not part of the trajectory: a run may resume with another one."""
    _fit(tmp_path / "run", ethanol_data, workers=1)
    train, val = ethanol_data[:13], ethanol_data[40:46]
    model = build_model_for_data(SCHNET, train, seed=3)
    cfg = TrainConfig(epochs=4, batch_size=4, lr=0.01, dtype="float64", progress=False, workers=2)
    trainer = Trainer(model, train, val, cfg, run_dir=tmp_path / "run")
    summary = trainer.fit()
    assert summary["epochs"] == 4 and trainer.epoch == 4 and len(trainer.history) == 4


@pytest.mark.slow
def test_torchrun_gives_the_single_process_trajectory(tmp_path):
    """`torchrun --nproc-per-node=2 -m ffspace.cli train ...` (gloo, env://) and one process train the same model:
    equal losses per epoch and weights (to summation order, as `train.workers=2` does); rank 0 writes."""
    import os
    import socket
    import subprocess
    import sys

    args = ["train", "data.train=builtin:ethanol_gfn2xtb", "data.n_val=10", "data.n_test=10", "model.family=schnet",
            "model.features=8", "model.layers=1", "model.cutoff=4.0", "train.epochs=2", "train.max_time_min=null",
            "train.batch_size=16", "train.dtype=float64", "train.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    loopback = [name for _, name in socket.if_nameindex() if name in ("lo", "lo0")]
    if loopback:
        env["GLOO_SOCKET_IFNAME"] = loopback[0]
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               "-m", "ffspace.cli", *args, f"out={tmp_path / 'torchrun'}"],
                              capture_output=True, text=True, env=env, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "ffspace.cli", *args, f"out={tmp_path / 'single'}"],
                            capture_output=True, text=True, env=env, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    runs = {}
    for name in ("torchrun", "single"):
        folder = tmp_path / name / "train"
        runs[name] = ([json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()],
                      load_file(str(folder / "model.safetensors")))
    (h1, w1), (h2, w2) = runs["torchrun"], runs["single"]
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        for key in ("train_loss", "val_forces_mae_meV_A", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-8), key
    for k in w1:
        np.testing.assert_allclose(w1[k].numpy(), w2[k].numpy(), rtol=1e-7, atol=1e-10, err_msg=k)


def test_workers_train_in_a_folder_their_caller_claimed_under_its_own_key(tmp_path, ethanol_data):
    """A committee claims its members' folders under its own key: the workers of a member claim it under the same
    one (they used the training fingerprint, and the folder refused them as another run's)."""
    train, val = ethanol_data[:13], ethanol_data[40:46]
    model = build_model_for_data(SCHNET, train, seed=3)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01, dtype="float64", progress=False, workers=2)
    summary = Trainer(model, train, val, cfg, run_dir=tmp_path / "member", owner="committee-key").fit()
    assert summary["epochs"] == 1


def test_workers_that_would_start_from_different_points_are_refused(tmp_path):
    """`distributed.agree`: worker 0's tensors reach every worker, and workers whose start (epoch, fingerprint)
    differs from worker 0's stop with a clear error instead of summing gradients of other batches."""
    import os
    import socket
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    loopback = [name for _, name in socket.if_nameindex() if name in ("lo", "lo0")]
    if loopback:
        env["GLOO_SOCKET_IFNAME"] = loopback[0]
    script = (
        "import sys, torch; from pathlib import Path\n"
        "from ffspace.train import distributed\n"
        "r = int(sys.argv[1]); folder = Path(sys.argv[2]); epoch = int(sys.argv[3])\n"
        "distributed.join(folder, r, 2, 'cpu')\n"
        "t = torch.full((3,), float(r))\n"
        "try:\n"
        "    distributed.agree([t], {'epoch': epoch * r})\n"
        "    print('agreed', t.tolist())\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc, t.tolist())\n"
        "distributed.leave()\n")
    for epoch, want in ((0, "agreed"), (1, "ConfigError")):
        folder = tmp_path / f"group{epoch}"
        folder.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", script, str(r), str(folder), str(epoch)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for r in range(2)]
        try:
            outs = [p.communicate(timeout=120) for p in procs]
        finally:
            for p in procs:
                p.kill()
        for r, (out, err) in enumerate(outs):
            assert out.startswith(want), (out, err[-2000:])
            # agreed: worker 0's values everywhere; refused: said on every worker before anything was sent
            assert out.rstrip().endswith("[0.0, 0.0, 0.0]" if want == "agreed" else f"[{r}.0, {r}.0, {r}.0]"), out
        if want == "ConfigError":
            assert "training workers [1] start from another point than worker 0 (epoch: 1 against 0" in outs[0][0]
