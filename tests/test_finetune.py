"""Fine-tuning (``train.init_from``): start from a package, refit its reference energies to a new level of theory,
keep the elements the new data lacks, freeze parts or slow them down."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ffspace.data import Dataset, read_dataset
from ffspace.errors import ConfigError, DataError
from ffspace.evaluate import error_metrics, predict
from ffspace.potential import Potential
from ffspace.potential.package import load_package
from ffspace.train import TrainConfig, Trainer, build_model_for_data, model_for_training

DATASETS = Path(__file__).resolve().parents[1] / "src" / "ffspace" / "datasets"
TINY = {"family": "schnet", "features": 8, "layers": 1, "cutoff": 4.0}
QUICK = dict(epochs=2, batch_size=8, lr=1e-3, progress=False, dtype="float64", ema_decay=0.0)


@pytest.fixture(scope="module")
def xtb_package(tmp_path_factory, ethanol_data):
    """A tiny model pretrained on GFN2-xTB ethanol and on "aminated" copies (O → N, same labels: a fourth element
    the fine-tuning data lacks; the physics does not matter here)."""
    frames = list(ethanol_data[:40])
    aminated = []
    for s in ethanol_data[40:60]:
        numbers = s.numbers.copy()
        numbers[numbers == 8] = 7
        aminated.append(s.copy(numbers=numbers))
    train = Dataset(frames + aminated, name="xtb+N")
    model = build_model_for_data(TINY, train, seed=0)
    run = tmp_path_factory.mktemp("pretrain")
    Trainer(model, train, Dataset(list(ethanol_data[60:66]), name="val"), TrainConfig(**QUICK), run_dir=run).fit()
    return run / "model.safetensors", aminated[0]


@pytest.fixture(scope="module")
def pbe():
    data = read_dataset(DATASETS / "ethanol_pbe_def2svp.extxyz")
    return Dataset(list(data[:24]), name="pbe"), Dataset(list(data[24:30]), name="pbe val")


def test_the_reference_energies_follow_the_new_level_of_theory(xtb_package, pbe, capsys):
    """xTB and PBE total energies differ by ~3900 eV on ethanol: refitted, the starting model's energies are off by
    what the package's shape gets wrong, not by the level's offset; kept, they are off by the offset. One molecule
    fixes only the sum of its elements' offsets: the run warns that their split is a guess."""
    package, _ = xtb_package
    train, _ = pbe
    errors = {}
    for reference in ("refit", "keep"):
        model = model_for_training({}, train, TrainConfig(**QUICK, init_from=str(package), init_reference=reference))
        errors[reference] = error_metrics(predict(Potential(model, dtype="float64"), list(train)), train)
        if reference == "refit":
            assert "come in only 1 independent composition(s)" in capsys.readouterr().err
    assert errors["keep"]["energy_mae_meV"] > 1e6
    assert errors["refit"]["energy_mae_meV"] < 1e3
    # the forces do not depend on the reference energies
    assert errors["refit"]["forces_mae_meV_A"] == pytest.approx(errors["keep"]["forces_mae_meV_A"], rel=1e-9)


def test_the_refit_streams_an_on_disk_set_and_needs_no_forces(xtb_package, pbe, tmp_path, monkeypatch):
    """From an HDF5 set behind a small cache the refit gives the offsets it gives in memory, asking the package for
    energies only, a batch at a time (a set larger than memory can be fine-tuned on)."""
    from ffspace.data.hdf5 import write_hdf5

    package, _ = xtb_package
    train, _ = pbe
    write_hdf5(tmp_path / "pbe.h5", train, block_structures=4)
    on_disk = read_dataset(tmp_path / "pbe.h5", cache_mb=0.005)  # ~5 kB: one of its 6 blocks
    assert on_disk.store.data_bytes > 3 * on_disk.store.cache_bytes
    calls = []
    real = Potential.compute

    def energies_only(self, batch, forces=True, **options):
        calls.append((batch.n_graphs, forces))
        return real(self, batch, forces=forces, **options)

    cfg = TrainConfig(**QUICK, init_from=str(package))
    monkeypatch.setattr(Potential, "compute", energies_only)
    streamed = model_for_training({}, on_disk, cfg)
    assert calls and all(n <= 32 and not forces for n, forces in calls)
    monkeypatch.undo()
    in_memory = model_for_training({}, train, cfg)
    torch.testing.assert_close(streamed.terms[0].table, in_memory.terms[0].table, rtol=0, atol=1e-9)
    assert on_disk.store.peak_cached_bytes <= on_disk.store.cache_bytes


def test_a_fine_tuned_model_keeps_the_elements_its_data_lacks(xtb_package, pbe, tmp_path, capsys):
    """Fine-tuned on H, C, O only, the model still takes N: N's reference energy and embedding are the package's,
    and the run says that N's absolute energies stay on the package's level of theory."""
    package, aminated = xtb_package
    train, val = pbe
    start, _ = load_package(package)
    cfg = TrainConfig(**QUICK, init_from=str(package))
    model = model_for_training({}, train, cfg)
    assert "['N'] are not in the training data: their reference energies stay the package's" in capsys.readouterr().err
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    Trainer(model, train, val, cfg, run_dir=tmp_path / "ft").fit()
    tuned, _ = load_package(tmp_path / "ft" / "model.safetensors")
    assert tuned.elements == start.elements == [1, 6, 7, 8]
    assert float(tuned.terms[0].table[7]) == float(start.terms[0].table[7])
    assert float(tuned.terms[0].table[6]) != float(start.terms[0].table[6])  # refitted to PBE
    n_row = start.terms[1].elements.index(7)
    embedding = dict(tuned.named_parameters())["terms.1.embedding.weight"]
    torch.testing.assert_close(embedding[n_row], before["terms.1.embedding.weight"][n_row], rtol=0, atol=0)
    assert not torch.equal(embedding, before["terms.1.embedding.weight"])  # the other rows trained
    out = predict(Potential(tuned, dtype="float64"), [aminated])
    assert np.isfinite(np.asarray(out["energy"])).all()


def test_frozen_parts_stay_and_scaled_parts_learn_slower(xtb_package, pbe, tmp_path):
    package, _ = xtb_package
    train, val = pbe
    cfg = TrainConfig(**QUICK, init_from=str(package), freeze=["terms.1.interactions.*"],
                      lr_scale={"terms.1.embedding.*": 0.1})
    model = model_for_training({}, train, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(model, train, val, cfg, run_dir=tmp_path / "ft")
    scales = sorted(g["lr_scale"] for g in trainer.optimizer.param_groups)
    assert scales == [0.1, 1.0]
    trainer.fit()
    lrs = {g["lr_scale"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs[0.1] == pytest.approx(0.1 * lrs[1.0])
    after = dict(trainer.model.named_parameters())
    for name, p in before.items():
        same = torch.equal(after[name].detach(), p)
        assert same == name.startswith("terms.1.interactions."), name
    # `freeze` was this run's choice: the package it made trains every parameter when fine-tuned again
    again, _ = load_package(tmp_path / "ft" / "model.safetensors")
    assert all(p.requires_grad for p in again.parameters())


def test_l2_to_start_holds_the_weights_at_the_package_s(xtb_package, pbe, tmp_path):
    """L2-SP: at lr × λ = 1 every step ends where the package started, so the run ends on the package's weights;
    at a small λ the weights move, but less far than without it; a run killed halfway resumes to the same end."""
    package, _ = xtb_package
    train, val = pbe
    # (the plateau's lr stays 0.01 here; the last epoch is kept, so the package is where training ended)
    constant = dict(QUICK, schedule="plateau", warmup_epochs=0, lr=0.01, keep="last")
    start = {n: p.detach().clone() for n, p in model_for_training({}, train, TrainConfig(
        **constant, init_from=str(package))).named_parameters()}
    moved = {}
    for l2 in (100.0, 10.0, 0.0):
        cfg = TrainConfig(**constant, init_from=str(package), l2_to_start=l2)
        trainer = Trainer(model_for_training({}, train, cfg), train, val, cfg, run_dir=tmp_path / f"l2_{l2:g}")
        trainer.fit()
        after = dict(trainer.model.named_parameters())
        moved[l2] = sum(float((after[n].detach() - p).norm() ** 2) for n, p in start.items()) ** 0.5
    assert moved[100.0] < 1e-12 * moved[0.0] + 1e-12
    assert 0 < moved[10.0] < 0.9 * moved[0.0], moved
    # killed after one epoch, resumed: the same weights as in one go (the start is the package's, not the checkpoint's)
    # (also with two data-parallel workers, which are sent the model and load the checkpoint themselves)
    one_go, _ = load_package(tmp_path / "l2_10" / "model.safetensors")
    for workers in (1, 2):
        run = tmp_path / f"resumed_{workers}"
        for epochs in (1, 2):
            cfg = TrainConfig(**{**constant, "epochs": epochs}, init_from=str(package), l2_to_start=10.0,
                              workers=workers)
            Trainer(model_for_training({}, train, cfg), train, val, cfg, run_dir=run).fit()
        resumed, _ = load_package(run / "model.safetensors")
        for (name, a), b in zip(one_go.named_parameters(), resumed.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-10, msg=f"{workers} worker(s): {name}")
    with pytest.raises(ConfigError, match="l2_to_start pulls toward a package's weights: set train.init_from"):
        Trainer(build_model_for_data(TINY, train, seed=0), train, val, TrainConfig(**QUICK, l2_to_start=1.0),
                run_dir=tmp_path / "no_package")


def test_a_killed_fine_tuning_resumes_whatever_the_refit_s_last_bits(xtb_package, pbe, tmp_path, monkeypatch):
    """The refitted reference energies come from running the model (threads, kernels): a resume must not depend on
    their last bits, only on the package and the data."""
    from ffspace.train import finetune

    package, _ = xtb_package
    train, val = pbe
    cfg = TrainConfig(**{**QUICK, "epochs": 1}, init_from=str(package))
    Trainer(model_for_training({}, train, cfg), train, val, cfg, run_dir=tmp_path / "ft").fit()
    real = finetune._refit_reference

    def perturbed(model, dataset, path):
        model = real(model, dataset, path)
        k = next(k for k, t in enumerate(model.terms) if isinstance(t, finetune.AtomicReference))
        energies = model.terms[k].config["energies"]
        # as another machine's rounding of the refit
        model.terms[k] = finetune.AtomicReference({int(z): e + 1e-9 for z, e in energies.items()})
        return model
    monkeypatch.setattr(finetune, "_refit_reference", perturbed)
    more = TrainConfig(**{**QUICK, "epochs": 2}, init_from=str(package))
    summary = Trainer(model_for_training({}, train, more), train, val, more, run_dir=tmp_path / "ft").fit()
    assert summary["epochs"] == 2


def test_bad_fine_tuning_settings_are_clear_errors(xtb_package, pbe, tmp_path, ethanol_data):
    package, _ = xtb_package
    train, val = pbe
    model = model_for_training({}, train, TrainConfig(**QUICK, init_from=str(package)))
    with pytest.raises(ConfigError, match="'terms.1.interaction.*' matches no parameter"):
        Trainer(model, train, val, TrainConfig(**QUICK, freeze=["terms.1.interaction.*"]), run_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="no parameter to train"):
        Trainer(model, train, val, TrainConfig(**QUICK, freeze=["*"]), run_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="no model package"):
        model_for_training({}, train, TrainConfig(**QUICK, init_from=str(tmp_path / "missing.safetensors")))
    # a package without an element of the data
    ho = build_model_for_data(TINY, Dataset(list(ethanol_data[:10]), name="e"), seed=0)
    fluorinated = [s if k < 2 else s.copy(numbers=np.where(s.numbers == 8, 9, s.numbers)) for k, s in enumerate(train)]
    Trainer(ho, Dataset(list(ethanol_data[:10]), name="e"), Dataset(list(ethanol_data[10:12]), name="v"),
            TrainConfig(**{**QUICK, "epochs": 1}), run_dir=tmp_path / "c").fit()
    with pytest.raises(DataError, match=r"also has \['F'\]") as info:
        model_for_training({}, Dataset(fluorinated, name="fluorinated"),
                           TrainConfig(**QUICK, init_from=str(tmp_path / "c" / "model.safetensors")))
    assert (info.value.frame, info.value.field) == (fluorinated[2].frame, "numbers")  # the first frame with F


def test_two_level_recipe_from_the_command_line(tmp_path):
    """`ffspace train` on GFN2-xTB labels, then `ffspace train train.init_from=...` on PBE labels of the same
    molecule: the second run starts from the first's weights (its first validation is far better than a fresh
    model's) and its package loads."""
    import json

    from typer.testing import CliRunner

    from ffspace.cli.main import app

    runner = CliRunner()
    common = ["model.family=schnet", "model.features=8", "model.layers=1", "train.epochs=3", "train.max_time_min=null",
              "train.progress=false", "data.n_val=10", "data.n_test=10"]
    pre = runner.invoke(app, ["train", "data.train=builtin:ethanol_gfn2xtb", f"out={tmp_path / 'xtb'}", *common,
                              "train.epochs=20", "train.lr=0.005"])
    assert pre.exit_code == 0, pre.output
    package = tmp_path / "xtb" / "train" / "model.safetensors"
    firsts = {}
    for name, extra in (("fresh", []), ("tuned", [f"train.init_from={package}"])):
        run = runner.invoke(app, ["train", "data.train=builtin:ethanol_pbe_def2svp", f"out={tmp_path / name}",
                                  *common, "train.epochs=1", *extra])
        assert run.exit_code == 0, run.output
        first = json.loads((tmp_path / name / "train" / "metrics.jsonl").read_text().splitlines()[0])
        firsts[name] = first
    key = next(k for k in firsts["tuned"] if k.startswith("val") and "forces" in k)
    assert firsts["tuned"][key] < 0.7 * firsts["fresh"][key], (key, firsts)
    tuned, _ = load_package(tmp_path / "tuned" / "train" / "model.safetensors")
    assert tuned.get_config()["terms"][1]["features"] == 8


def test_the_transfer_benchmark_runs_and_resumes(xtb_package, tmp_path, monkeypatch):
    """benchmarks/transfer.py in miniature: zero-shot on two rMD17 molecules, MD from their first test frames, one
    few-shot pair; a rerun reads everything back."""
    import importlib.util
    import json

    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data" / "rmd17"
    if not (data / "rmd17_ethanol_test_01.npz").exists():
        pytest.skip(f"rMD17 not found at {data}")
    spec = importlib.util.spec_from_file_location("transfer", root / "benchmarks" / "transfer.py")
    transfer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(transfer)
    package, _ = xtb_package
    args = ["--package", f"tiny={package}", "--molecules", "ethanol", "uracil", "--n-test", "20", "--shots", "10",
            "--fewshot", "ethanol", "--budget-min", "0.02", "--out", str(tmp_path), "--md-ps", "0.01",
            "--md-seeds", "2"]
    transfer.main(args)
    results = json.loads((tmp_path / "results.json").read_text())
    digest = transfer._digest(package)  # results are kept per package content, not per path
    assert results["zero_shot"][f"tiny/ethanol/20/{digest}"]["status"] == "ok"
    assert results["zero_shot"][f"tiny/uracil/20/{digest}"]["status"] == "ok"  # N: the package's "aminated" frames
    tuned = results["few_shot"][f"ethanol/10/0.02min/seed0/test/fine-tuned/lr0.01/noreplay/{digest}"]
    scratch = results["few_shot"][f"ethanol/10/0.02min/seed0/test/scratch/lr0.005/{digest}"]
    assert tuned["n"] == scratch["n"] == 1000  # scored on all of test_01
    for molecule in ("ethanol", "uracil"):  # 20 steps of 2 copies: each survived, or failed at a recorded time
        md = results["md"][f"tiny/{molecule}/0.01ps/300K/2/{digest}"]
        assert md["status"] == "ok" and md["seeds"] == 2 and md["time_ps"] == 0.01
        assert md["survived"] == sum(t is None for t in md["failure_ps"])
        assert all(t is None or 0 < t <= 0.01 for t in md["failure_ps"])
        assert not list((tmp_path / "md").rglob("*.partial.npz"))  # finished runs leave no checkpoint
    transfer.main(args)
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["few_shot"] == results["few_shot"] and again["md"] == results["md"]
    # Replay: a new fine-tuned arm, the scratch arm read back (it does not depend on the replay set)
    from ffspace.data import read_dataset, write_extxyz

    write_extxyz(tmp_path / "replay.extxyz", read_dataset(data / "rmd17_uracil_test_01.npz")[:6])
    transfer.main(args + ["--replay", str(tmp_path / "replay.extxyz"), "--replay-repeat", "2"])
    replayed = json.loads((tmp_path / "results.json").read_text())["few_shot"]
    assert {k: v for k, v in replayed.items() if k in again["few_shot"]} == again["few_shot"]
    [new] = set(replayed) - set(again["few_shot"])
    assert "/fine-tuned/lr0.01/replay" in new and new.endswith("x2/" + digest)
    # A further fine-tuning setting: a new fine-tuned arm in its own folder, the scratch arm read back
    transfer.main(args + ["--tune", "l2_to_start=0.5", "--tune", 'lr_scale={"terms.1.*": 0.5}'])
    tuned_more = json.loads((tmp_path / "results.json").read_text())["few_shot"]
    [new] = set(tuned_more) - set(replayed)
    assert '/noreplay/tune{"l2_to_start": 0.5, "lr_scale": {"terms.1.*": 0.5}}/' in new
    assert len(list((tmp_path / "few_shot").iterdir())) == len(tuned_more)
    with pytest.raises(SystemExit, match="l2_to_start"):
        transfer.main(args + ["--tune", "l2_to_start=-1"])
    with pytest.raises(SystemExit, match="expected SETTING=JSON"):
        transfer.main(args + ["--tune", "l2_to_start"])
    with pytest.raises(SystemExit, match="--tune max_time_min: set by transfer.py for both arms"):
        transfer.main(args + ["--tune", "max_time_min=100"])
    # Choosing a recipe: scored on other train_01 frames, test_01 never read
    def no_test_files(path, *a, **k):
        assert "test_01" not in str(path), path
        return read_dataset(path, *a, **k)

    monkeypatch.setattr(transfer, "read_dataset", no_test_files)
    transfer.main(["--package", f"tiny={package}", "--molecules", "--shots", "10", "--fewshot", "ethanol",
                   "--budget-min", "0.02", "--out", str(tmp_path / "val"), "--n-val", "30", "--val-every", "3"])
    val = json.loads((tmp_path / "val" / "results.json").read_text())
    assert not val["zero_shot"] and {r["n"] for r in val["few_shot"].values()} == {30}
    assert all("/val30/every3/" in k for k in val["few_shot"])  # validating every 3 epochs: its own results
    assert all(r["wall_s"] >= r["train_s"] > 0 for r in val["few_shot"].values())  # the wall time holds the steps


def test_a_shipped_package_loads_by_its_builtin_name(xtb_package, pbe, tmp_path, monkeypatch):
    import shutil

    from ffspace.errors import ModelPackageError
    from ffspace.potential import package as package_module

    package, _ = xtb_package
    monkeypatch.setattr(package_module, "SHIPPED", tmp_path)
    shutil.copy(package, tmp_path / "tiny.safetensors")
    pot = Potential.load("builtin:tiny", dtype="float64")
    assert pot.model.elements == [1, 6, 7, 8]
    train, _ = pbe
    model = model_for_training({}, train, TrainConfig(**QUICK, init_from="builtin:tiny"))
    assert model.elements == [1, 6, 7, 8]
    with pytest.raises(ModelPackageError, match=r"no shipped model 'builtin:huge'; this ffspace ships \['builtin:tiny'\]"):
        Potential.load("builtin:huge")


def test_fine_tuning_settings_leave_other_runs_identities_alone():
    """The fine-tuning, dipole and validation-interval settings enter a run's identity (checkpoints, bench caches,
    committees) only when set: runs made before they existed resume, and cached benchmark results stay valid."""
    later = {"init_from", "init_reference", "freeze", "lr_scale", "dipole_weight", "keep", "l2_to_start", "val_every",
             "spike_factor"}
    assert set(TrainConfig().identity()) == set(TrainConfig.model_fields) - later
    assert TrainConfig(dipole_weight=10.0).identity()["dipole_weight"] == 10.0
    assert TrainConfig(lr_scale={"terms.1.*": 0.1}).identity()["lr_scale"] == [["terms.1.*", 0.1]]
    assert TrainConfig(init_from="x.safetensors").identity()["init_from"] == "x.safetensors"
    assert TrainConfig(spike_factor=10.0).identity()["spike_factor"] == 10.0


def test_the_order_of_lr_scale_patterns_and_the_starting_package_are_part_of_a_run(tmp_path, xtb_package):
    a = TrainConfig(lr_scale={"terms.1.readout*": 1.0, "terms.1.*": 0.1})
    b = TrainConfig(lr_scale={"terms.1.*": 0.1, "terms.1.readout*": 1.0})
    assert a.identity() != b.identity()  # the first matching pattern counts
    package, _ = xtb_package
    copy = tmp_path / "p.safetensors"
    copy.write_bytes(package.read_bytes())
    before = TrainConfig(init_from=str(copy)).identity()
    copy.write_bytes(package.read_bytes()[:-8] + b"\0" * 8)  # retrained at the same path
    assert TrainConfig(init_from=str(copy)).identity() != before
