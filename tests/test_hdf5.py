"""Structures in chunked HDF5, streamed through a capped cache: exact round trip, bounded memory, one read per
block per epoch, and training from it equal to training from memory."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from ffspace.data import Dataset, read_dataset
from ffspace.data.hdf5 import HDF5Dataset, write_hdf5
from ffspace.errors import DataError
from ffspace.testing import physics
from ffspace.train import TrainConfig, Trainer, build_model_for_data

TINY = {"family": "schnet", "features": 8, "layers": 1, "cutoff": 4.0}


@pytest.fixture(scope="module")
def ethanol_h5(tmp_path_factory, ethanol_data):
    path = tmp_path_factory.mktemp("h5") / "ethanol.h5"
    # a generator: the writer never needs the whole set in memory
    assert write_hdf5(path, (s for s in ethanol_data), block_structures=16) == len(ethanol_data)
    return path


def test_round_trip_is_exact(tmp_path, ethanol_data):
    box = physics.periodic_box(1)
    box = box.copy(energy=-3.5, forces=np.full((box.n_atoms, 3), 0.25), stress=np.eye(3) * 0.01,
                   info={"smiles": "O"})
    unlabelled = ethanol_data[3].copy(energy=None, forces=None)
    frames = [ethanol_data[0], box, unlabelled, ethanol_data[1]]
    write_hdf5(tmp_path / "mixed.h5", frames, block_structures=3)
    back = read_dataset(tmp_path / "mixed.h5")
    assert isinstance(back, HDF5Dataset) and len(back) == 4
    for k, (a, b) in enumerate(zip(frames, back)):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell, b.cell)
        np.testing.assert_array_equal(a.pbc, b.pbc)
        assert a.energy == b.energy and a.info == b.info and b.frame == k
        for field in ("forces", "stress"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None) == (y is None)
            if x is not None:
                np.testing.assert_array_equal(x, y)
    assert back.elements == [1, 6, 8]
    assert back[[1]].elements == [1, 8] and back[2:].elements == [1, 6, 8]
    with pytest.raises(DataError, match="no energy label"):
        back.require_labels()


def test_streaming_keeps_the_cache_under_its_cap(ethanol_h5, ethanol_data):
    data = read_dataset(ethanol_h5, cache_mb=0.02)  # ~20 kB: 2 of the 25 blocks
    store = data.store
    assert store.data_bytes > 5 * store.cache_bytes
    reads = store.block_reads  # (the unit check on opening has sampled frames)
    for a, b in zip(ethanol_data, data):
        np.testing.assert_array_equal(a.forces, b.forces)
    assert store.block_reads - reads == 25  # a sequential pass reads each block once
    assert store.peak_cached_bytes <= store.cache_bytes


def test_training_from_hdf5_equals_training_from_memory(ethanol_h5, ethanol_data, tmp_path):
    """With a cache that holds the set the epochs take the in-memory order and the weights equal those trained
    from the same structures in memory, bit for bit; with a small cache each epoch reads every block once and the
    model still learns."""
    settings = TrainConfig(epochs=2, batch_size=8, lr=3e-3, progress=False, dtype="float64")

    def fit(train, val, name):
        trainer = Trainer(build_model_for_data(TINY, train, seed=0), train, val, settings, run_dir=tmp_path / name)
        return trainer, trainer.fit()

    train, val = read_dataset(ethanol_h5, cache_mb=64).split([-1, 40], seed=0)
    from_disk, _ = fit(train, val, "hdf5")
    # (the trainer reads an on-disk set in file order: its passes then read each block once)
    from_memory, _ = fit(Dataset(list(train.in_file_order())), Dataset(list(val)), "memory")
    for key, value in from_memory.model.state_dict().items():
        torch.testing.assert_close(from_disk.model.state_dict()[key], value, rtol=0, atol=0)

    train, val = read_dataset(ethanol_h5, cache_mb=0.02).split([-1, 40], seed=0)
    store = train.store
    trainer = Trainer(build_model_for_data(TINY, train, seed=0), train, val, settings, run_dir=tmp_path / "small")
    reads = store.block_reads
    trainer.fit()
    blocks = len(set((train.indices // store.block).tolist()))
    assert store.block_reads - reads == 2 * blocks  # each block once per epoch
    assert store.peak_cached_bytes <= store.cache_bytes < store.data_bytes / 5
    first, last = trainer.history[0]["val_forces_mae_meV_A"], trainer.history[-1]["val_forces_mae_meV_A"]
    assert last < first  # it learned


def test_the_command_line_trains_from_hdf5(ethanol_h5, tmp_path):
    from typer.testing import CliRunner

    from ffspace.cli.main import app

    result = CliRunner().invoke(app, ["train", f"data.train={ethanol_h5}", "data.cache_mb=0.05", "model.family=schnet",
                                      "model.features=8", "model.layers=1", "train.epochs=1",
                                      "train.max_time_min=null", "train.progress=false", f"out={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "train" / "model.safetensors").exists()
    bad = CliRunner().invoke(app, ["train", "data.train=builtin:ethanol_gfn2xtb", "data.cache_mb=5",
                                   f"out={tmp_path / 'bad'}"])
    assert bad.exit_code != 0 and "cache_mb" in bad.output


def test_convert_writes_an_hdf5_set_that_reads_back(tmp_path, ethanol_data):
    from typer.testing import CliRunner

    from ffspace.cli.main import app

    source = str(Path(__file__).resolve().parents[1] / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz")
    result = CliRunner().invoke(app, ["convert", source, str(tmp_path / "e.h5"), "--block", "50"])
    assert result.exit_code == 0, result.output
    back = read_dataset(tmp_path / "e.h5")
    assert len(back) == len(ethanol_data) and back.store.block == 50
    assert back[399].energy == ethanol_data[399].energy
    again = CliRunner().invoke(app, ["convert", source, str(tmp_path / "e.h5")])
    assert again.exit_code != 0 and "never overwrites" in again.output


def test_a_foreign_hdf5_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="other.h5.*not an ffspace structures file"):
        read_dataset(path)


def test_a_damaged_set_or_a_missing_label_is_an_error_naming_the_field(ethanol_h5, tmp_path):
    import shutil

    for damage, field in ((lambda f: f.__delitem__("forces"), "forces"),
                          (lambda f: f.attrs.__delitem__("block_structures"), "block_structures"),
                          (lambda f: f["energy"].resize((3,)), "energy")):  # cut short: lengths disagree
        path = tmp_path / f"{field}.h5"
        shutil.copy(ethanol_h5, path)
        with h5py.File(path, "a") as f:
            damage(f)
        with pytest.raises(DataError, match=f"{field}.h5.*field '{field}'"):
            read_dataset(path)
    unlabelled = tmp_path / "unlabelled.h5"
    shutil.copy(ethanol_h5, unlabelled)
    with h5py.File(unlabelled, "a") as f:
        f["has_forces"][5] = False
    assert len(read_dataset(unlabelled, required=())) == len(read_dataset(ethanol_h5))  # (an MD start needs none)
    with pytest.raises(DataError, match="frame 5, field 'forces': no forces label"):
        read_dataset(unlabelled, required=("energy", "forces"))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")
def test_data_parallel_workers_stream_the_same_file(ethanol_h5, tmp_path):
    """train.workers=2 on an HDF5 set: the workers open the file themselves (the view's indices travel, not the
    data) and follow the single-process trajectory."""
    train, val = read_dataset(ethanol_h5, cache_mb=0.02).split([60, 10, -1], seed=1)[:2]
    weights = {}
    for workers in (1, 2):
        cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, progress=False, dtype="float64", workers=workers)
        trainer = Trainer(build_model_for_data(TINY, train, seed=0), train, val, cfg, run_dir=tmp_path / str(workers))
        trainer.fit()
        weights[workers] = trainer.model.state_dict()
    for key, value in weights[1].items():
        torch.testing.assert_close(weights[2][key], value, rtol=1e-7, atol=1e-10)


def test_splits_are_seeded_samples_and_epochs_read_each_block_once_whatever_the_sizes(tmp_path, ethanol_data):
    """A split's prefix is a random sample (not the start of the file); with structures of very different sizes
    (9-atom ethanol, then 24-atom water boxes) an epoch still reads every block exactly once."""
    boxes = [physics.periodic_box(k, n_molecules=8, box=8.0) for k in range(64)]
    boxes = [b.copy(energy=-1.0 * k, forces=np.full((b.n_atoms, 3), 0.1)) for k, b in enumerate(boxes)]
    write_hdf5(tmp_path / "mixed.h5", list(ethanol_data[:192]) + boxes, block_structures=16)
    data = read_dataset(tmp_path / "mixed.h5", cache_mb=0.06)
    train, _ = data.split([-1, 16], seed=3)
    assert train[:40].indices.max() > 192  # the prefix reaches into the boxes
    store = data.store
    view = train.in_file_order()
    for seed in range(3):
        reads = store.block_reads
        order = view.epoch_order(np.random.default_rng(seed))
        assert sorted(order.tolist()) == list(range(len(view)))
        for k in order:
            view[int(k)]
        touched = len(set((view.indices // store.block).tolist()))
        assert store.block_reads - reads <= touched + 1  # (+1: the window the cache still held)
    assert store.peak_cached_bytes <= store.cache_bytes


def test_the_epoch_order_depends_on_the_file_and_the_cache_not_on_what_was_read_before(tmp_path, ethanol_data):
    """Block sizes come from the file at opening (info strings of very different lengths here): a process that read
    other blocks first (a data-parallel worker does not read the validation blocks) orders the epochs the same way;
    the cache size that shapes the order is part of the training fingerprint."""
    frames = [s.copy(info={"note": "x" * (4000 if k >= 96 else 1)}) for k, s in enumerate(ethanol_data[:160])]
    write_hdf5(tmp_path / "info.h5", frames, block_structures=16)
    fresh = read_dataset(tmp_path / "info.h5", cache_mb=0.03)
    seasoned = read_dataset(tmp_path / "info.h5", cache_mb=0.03)
    for k in range(100, 160):  # the long-info blocks, read before the order is drawn
        seasoned[k]
    view_a, view_b = fresh[:96].in_file_order(), seasoned[:96].in_file_order()
    assert not fresh.store.order_key()["cache_bytes"] == "whole set"  # the windowed order is the one under test
    a = view_a.epoch_order(np.random.default_rng(0))
    b = view_b.epoch_order(np.random.default_rng(0))
    assert np.array_equal(a, b)
    assert [fresh.store.block_bytes(b) for b in range(10)] == [seasoned.store.block_bytes(b) for b in range(10)]

    train, val = fresh[:96], fresh[100:110]
    model = build_model_for_data(TINY, train, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=8, progress=False)
    key = Trainer(model, train, val, cfg, run_dir=tmp_path / "a").fingerprint
    bigger = read_dataset(tmp_path / "info.h5", cache_mb=0.06)
    assert Trainer(model, bigger[:96], bigger[100:110], cfg, run_dir=tmp_path / "b").fingerprint != key
    whole = read_dataset(tmp_path / "info.h5", cache_mb=64)
    assert whole.store.order_key()["cache_bytes"] == "whole set"


def test_split_by_molecule_reads_the_info_column_of_an_hdf5_set(tmp_path, ethanol_data):
    """An HDF5 set splits by an info key without reading positions and forces, as its in-memory copy does."""
    frames = [s.copy(info={**s.info, "smiles": f"mol{k % 6}"}) for k, s in enumerate(ethanol_data[:60])]
    write_hdf5(tmp_path / "mols.h5", frames, block_structures=8)
    h5 = read_dataset(tmp_path / "mols.h5", cache_mb=0.01)
    memory = Dataset(frames)
    reads = h5.store.block_reads  # (the unit check on opening has sampled frames)
    assert h5.info_values("smiles") == memory.info_values("smiles")
    assert h5.store.block_reads == reads  # the info column only
    shuffled = h5[np.random.default_rng(0).permutation(60)[:25]]  # a view in any order
    assert shuffled.info_values("smiles") == [s.info["smiles"] for s in shuffled]
    a = h5.split([-1, 10, 10], seed=1, groups=h5.info_values("smiles"))
    b = memory.split([-1, 10, 10], seed=1, groups=memory.info_values("smiles"))
    assert [[s.energy for s in p] for p in a] == [[s.energy for s in p] for p in b]
    assert [len(p) for p in a] == [40, 10, 10]
    assert all(len(set(p.info_values("smiles"))) == 1 for p in a[1:])  # one molecule of 10 frames each
