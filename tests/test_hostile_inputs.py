"""Bad and hostile inputs as a new user makes them, through the CLI and the Python API (issue 28).

Every case states its expected outcome: a clear error (the CLI exits 2 with one ``error:`` line naming the file,
frame, field or key, and never a traceback), a named warning, or a correct result. All of them run next to two
finished runs of other users (`victim`, `foreign`); the last test checks by hash that no file of those runs changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ffspace.cli.main import app
from ffspace.errors import ConfigError, DataError, ModelPackageError

from .conftest import BUILTIN

runner = CliRunner()
# A small, fast run: every command of one run shares these settings (they make the run's identity).
RUN = ["model.features=8", "model.layers=1", "model.n_rbf=4", "train.epochs=2", "train.max_time_min=null",
       "train.progress=false", "data.n_val=20", "data.n_test=20", "md.steps=20"]


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _tree_hashes(*folders) -> dict:
    out = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def area(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def victim(area):
    """Another user's finished run: trained, evaluated and with MD."""
    out = area / "victim"
    for command in ("train", "eval", "md"):
        result = cli(command, *RUN, f"out={out}")
        assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def foreign(area, victim):
    """A folder holding a model and a metrics log that no ffspace run claimed (copied files, no checkpoint)."""
    out = area / "foreign"
    (out / "train").mkdir(parents=True)
    for name in ("model.safetensors", "metrics.jsonl"):
        shutil.copy(victim / "train" / name, out / "train" / name)
    return out


@pytest.fixture(scope="module")
def protected(victim, foreign):
    return _tree_hashes(victim, foreign)


@pytest.fixture(scope="module")
def data(area):
    """Bad data files, each built from the shipped GFN2-xTB ethanol set with one defect put in."""
    import ase.io

    from ffspace import units
    from ffspace.data import read_dataset, write_extxyz

    good = read_dataset(BUILTIN)
    frames = list(good)[:200]
    folder = area / "data"
    folder.mkdir()
    numbers = frames[0].numbers
    coords = np.stack([s.positions for s in frames])
    e = np.array([s.energy for s in frames])
    f = np.stack([s.forces for s in frames])
    np.savez(folder / "ev.npz", nuclear_charges=numbers, coords=coords, energies=e, forces=f)  # eV in an npz
    np.savez(folder / "kcal.npz", nuclear_charges=numbers, coords=coords, energies=e / units.kcal_per_mol,
             forces=f / units.kcal_per_mol)
    write_extxyz(folder / "zero_energy.xyz", [s.copy(energy=0.0) for s in frames])
    write_extxyz(folder / "zero_forces.xyz", [s.copy(forces=np.zeros_like(s.forces)) for s in frames])
    (folder / "empty.xyz").write_text("")
    atoms = [s.to_ase() for s in frames[:5]]
    for k, a in enumerate(atoms):
        a.info["REF_energy"] = float("nan") if k == 2 else frames[k].energy
        a.arrays["REF_forces"] = frames[k].forces
    ase.io.write(folder / "nan_energy.xyz", atoms, format="extxyz")
    atoms = [s.to_ase() for s in frames[:5]]
    atoms[3].positions[4] = atoms[3].positions[1]
    for k, a in enumerate(atoms):
        a.info["REF_energy"] = frames[k].energy
        a.arrays["REF_forces"] = frames[k].forces
    ase.io.write(folder / "overlap.xyz", atoms, format="extxyz")
    write_extxyz(folder / "bad_charge.xyz", frames[:5])
    text = (folder / "bad_charge.xyz").read_text().splitlines(keepends=True)
    text[1] = text[1].rstrip("\n") + ' charge=abc\n'
    (folder / "bad_charge.xyz").write_text("".join(text))
    (folder / "list.yaml").write_text("- a\n- b\n")
    (folder / "broken.yaml").write_text("input: [unclosed\n  samplers: {\n")
    (folder / "binary.yaml").write_bytes(bytes(range(256)))
    (folder / "random.safetensors").write_bytes(np.random.default_rng(0).bytes(3000))
    (folder / "a_file").write_text("not a folder\n")
    return folder


def _copy_run(victim, dest) -> Path:
    """A run of this test's own, made by copying the victim (same settings, so the same run identity)."""
    shutil.copytree(victim, dest)
    return dest


@pytest.fixture(scope="module")
def own(area, victim, data):
    """Runs of this test's own, each with a defect in a file it resumes from."""
    runs = {}
    runs["md_ckpt"] = _copy_run(victim, area / "own_md_ckpt")
    (runs["md_ckpt"] / "md" / "md_checkpoint.npz").write_bytes(np.random.default_rng(1).bytes(500))
    runs["truncated"] = _copy_run(victim, area / "own_truncated")
    ckpt = runs["truncated"] / "train" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    runs["pickle"] = _copy_run(victim, area / "own_pickle")
    with open(runs["pickle"] / "train" / "checkpoint.pt", "wb") as fh:
        torch.save({"fingerprint": "x", "payload": Path("/etc/passwd")}, fh)  # a class instance: a pickle
    runs["overwrite"] = _copy_run(victim, area / "own_overwrite")
    return runs


def _readonly_folder(area) -> Path:
    if os.geteuid() == 0:  # root writes through file permissions: use a path no one may create
        return Path("/sys/ffspace-readonly-test/out")
    folder = area / "readonly"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    return folder / "out"


# --------------------------------------------------------------------------------------------------------------
# CLI cases: (id, arguments, expected) with expected = a regex the one-line error must match (exit status 2),
# or a callable that checks a correct result (exit status 0). Arguments may use {victim}, {foreign}, {data}, {new}
# (a fresh folder), {own:<name>}, {readonly}, {model} (the victim's package).

E = "error"
CLI_CASES = [
    # units and labels
    ("npz_ev_read_as_kcal", ["train", "data.train={data}/ev.npz", "out={new}"], r"look like eV, not kcal/mol"),
    ("npz_kcal_read_as_ev", ["train", "data.train={data}/kcal.npz", "data.energy_unit=eV", "out={new}"],
     r"look like kcal/mol, not eV"),
    ("constant_energies", ["train", "data.train={data}/zero_energy.xyz", "out={new}"],
     r"zero_energy\.xyz.*'REF_energy'.*all \d+ energies are 0 eV"),
    ("zero_forces", ["train", "data.train={data}/zero_forces.xyz", "out={new}"], r"'REF_forces'.*every force"),
    ("energy_unit_unknown", ["train", "data.energy_unit=kcal", "out={new}"], r"data\.energy_unit"),
    ("energy_key_wrong", ["train", "data.energy_key=nope", "out={new}"], r"frame 0.*'nope'"),
    ("empty_data_file", ["train", "data.train={data}/empty.xyz", "out={new}"], r"empty\.xyz.*no structures"),
    ("nan_energy", ["train", "data.train={data}/nan_energy.xyz", "out={new}"], r"frame 2.*'REF_energy'.*nan"),
    ("overlapping_atoms", ["train", "data.train={data}/overlap.xyz", "out={new}"], r"frame 3.*on top of each other"),
    ("charge_not_a_number", ["train", "data.train={data}/bad_charge.xyz", "out={new}"], r"frame 0.*'charge'"),
    ("missing_data_file", ["train", "data.train={data}/nope.xyz", "out={new}"], r"nope\.xyz.*not found"),
    ("data_format_unknown", ["train", "data.format=csv", "out={new}"], r"data\.format"),
    ("n_val_not_a_count", ["train", "data.n_val=1.5", "out={new}"], r"fraction below 1 or a whole count"),
    ("n_val_too_many", ["train", "data.n_val=100000", "out={new}"], r"do not fit"),
    ("n_val_nan", ["train", "data.n_val=nan", "out={new}"], r"data\.n_val.*finite"),
    ("stress_without_labels", ["train", "train.stress_weight=1", "out={new}"], r"stress"),
    # other runs' files
    ("run_other_family_into_a_run", ["run", *RUN, "model.family=schnet", "out={victim}"], r"another run"),
    ("train_into_unclaimed_files", ["train", *RUN, "out={foreign}"], r"did not write.*overwrite=true"),
    ("eval_another_package_into_a_run", ["eval", *RUN, "model_path={own:overwrite}/train/model.safetensors",
                                          "out={victim}"], r"another run"),
    ("overwrite_true_replaces_own_copy", ["train", *RUN, "model.family=schnet", "overwrite=true",
                                          "out={own:overwrite}"], "overwritten"),
    ("out_is_a_file", ["train", *RUN, "out={data}/a_file"], r"is a file, not a folder"),
    ("out_not_writable", ["train", *RUN, "out={readonly}"], r"cannot (create|write)"),
    # MD settings
    ("md_flies_apart_at_1e9_K", ["md", *RUN, "model_path={model}", "md.temperature=1e9", "out={new}"], "blown_up"),
    ("md_temperature_nan", ["md", *RUN, "md.temperature=nan", "out={new}"], r"md\.temperature.*finite"),
    ("md_temperature_inf", ["md", *RUN, "md.temperature=.inf", "out={new}"], r"md\.temperature.*finite"),
    ("md_temperature_negative", ["md", *RUN, "md.temperature=-10", "out={new}"], r"md\.temperature"),
    ("md_timestep_zero", ["md", *RUN, "md.timestep_fs=0", "out={new}"], r"md\.timestep_fs"),
    ("md_timestep_negative", ["md", *RUN, "md.timestep_fs=-0.5", "out={new}"], r"md\.timestep_fs"),
    ("md_steps_negative", ["md", *RUN, "md.steps=-5", "out={new}"], r"md\.steps"),
    ("md_friction_negative", ["md", *RUN, "md.friction=-1", "out={new}"], r"md\.friction"),
    ("md_traj_interval_zero", ["md", *RUN, "md.traj_interval=0", "out={new}"], r"md\.traj_interval"),
    ("md_ensemble_unknown", ["md", *RUN, "md.ensemble=npt", "out={new}"], r"md\.ensemble"),
    ("md_bond_tolerance_negative", ["md", *RUN, "md.bond_tolerance=-1", "out={new}"], r"md\.bond_tolerance"),
    ("md_start_missing", ["md", *RUN, "md.start={data}/nope.xyz", "out={new}"], r"nope\.xyz.*not found"),
    ("md_checkpoint_random_bytes", ["md", *RUN, "out={own:md_ckpt}"], r"md_checkpoint\.npz cannot be read.*delete"),
    # model settings
    ("features_zero", ["train", "model.features=0", "out={new}"], r"features=0 must be a whole number"),
    ("features_negative", ["train", "model.features=-3", "out={new}"], r"features=-3"),
    ("features_fractional", ["train", "model.features=2.5", "out={new}"], r"features=2\.5"),
    ("layers_zero", ["train", "model.layers=0", "out={new}"], r"layers=0 must be a whole number"),
    ("n_rbf_zero", ["train", "model.n_rbf=0", "out={new}"], r"n_rbf=0"),
    ("cutoff_zero", ["train", "model.cutoff=0", "out={new}"], r"model\.cutoff"),
    ("cutoff_negative", ["train", "model.cutoff=-2", "out={new}"], r"model\.cutoff"),
    ("family_unknown", ["train", "model.family=transformer9000", "out={new}"], r"transformer9000"),
    # a setting outside a family's own range is a clean error, not a traceback
    ("mace_correlation_4", ["train", "model.family=mace", "model.correlation=4", "out={new}"],
     r"model family 'mace'.*correlation must be 1, 2 or 3"),
    ("ace_cutoff_3_beyond_cutoff", ["train", "model.family=ace", "model.cutoff_3=9", "out={new}"],
     r"model family 'ace'.*cutoff_3 \(9\.0 Å\) must not exceed"),
    ("ace_ridge_zero", ["train", "model.family=ace", "model.ridge=[0]", "out={new}"], r"ridge must be"),
    ("dispersion_unknown", ["train", "model.dispersion=notafunctional", "out={new}"], r"notafunctional"),
    ("prior_package_missing", ["train", "model.prior={data}/nope.safetensors", "out={new}"],
     r"nope\.safetensors not found"),
    # training settings
    ("lr_zero", ["train", "train.lr=0", "out={new}"], r"train\.lr"),
    ("lr_nan", ["train", "train.lr=nan", "out={new}"], r"train\.lr.*finite"),
    ("batch_size_zero", ["train", "train.batch_size=0", "out={new}"], r"train\.batch_size"),
    ("epochs_zero", ["train", "train.epochs=0", "out={new}"], r"train\.epochs"),
    ("unknown_key", ["train", "train.epoch=3", "out={new}"], r"train\.epoch"),
    ("truncated_train_checkpoint", ["train", *RUN, "out={own:truncated}"],
     r"checkpoint\.pt cannot be read.*corrupt or truncated.*Delete it"),
    ("pickle_in_train_checkpoint", ["train", *RUN, "out={own:pickle}"],
     r"checkpoint\.pt holds objects other than tensors.*does not load it"),
    # devices
    ("train_device_cuda", ["train", "train.device=cuda", "out={new}"], r"CUDA is not available"),
    ("eval_device_cuda", ["eval", *RUN, "eval.device=cuda:0", "out={new}"], r"CUDA is not available"),
    ("md_device_unknown", ["md", *RUN, "md.device=tpu", "out={new}"], r"device 'tpu'"),
    # config files
    ("two_config_files", ["train", "{data}/list.yaml", "{data}/broken.yaml"], r"at most one config file"),
    ("config_missing", ["train", "{data}/nope.yaml"], r"nope\.yaml does not exist"),
    ("config_is_a_folder", ["train", "{data}"], r"is a folder, not a file"),
    ("config_binary", ["train", "{data}/binary.yaml"], r"binary\.yaml is not valid YAML"),
    ("config_is_a_list", ["train", "{data}/list.yaml"], r"list\.yaml must hold a mapping"),
    ("override_without_value", ["train", "train.epochs"], r"at most one config file|does not exist"),
    # other commands
    ("label_yaml_list", ["label", "{data}/list.yaml"], r"list\.yaml must hold a mapping"),
    ("label_yaml_broken", ["label", "{data}/broken.yaml"], r"broken\.yaml is not valid YAML"),
    ("label_yaml_missing", ["label", "{data}/nope.yaml"], r"nope\.yaml does not exist"),
    ("bench_config_missing", ["bench", "{data}/nope.yaml"], r"nope\.yaml"),
    ("active_yaml_broken", ["active", "{data}/broken.yaml"], r"broken\.yaml"),
    ("eval_package_missing", ["eval", *RUN, "model_path={data}/nope.safetensors", "out={new}"],
     r"nope\.safetensors not found"),
    ("eval_package_random_bytes", ["eval", *RUN, "model_path={data}/random.safetensors", "out={new}"],
     r"random\.safetensors is corrupt"),
    ("export_openmm_of_a_painn_package", ["export-openmm", "{model}", "{data}/../victim/md/trajectory.extxyz",
                                          "--out", "{new}/system.xml"], r"graph-learned MM"),
]


def _expand(arg: str, paths: dict, case: str) -> str:
    def sub(m):
        key = m.group(1)
        if key.startswith("own:"):
            return str(paths["own"][key[4:]])
        return str(paths[key] / case if key == "new" else paths[key])

    return re.sub(r"\{([a-z_:]+)\}", sub, arg)


@pytest.fixture(scope="module")
def paths(area, victim, foreign, protected, data, own):
    return {"victim": victim, "foreign": foreign, "data": data, "own": own, "new": area / "new",
            "readonly": _readonly_folder(area), "model": victim / "train" / "model.safetensors"}


@pytest.mark.parametrize("case,args,expected", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, args, expected, paths):
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if case == "export_openmm_of_a_painn_package":
        pytest.importorskip("openmm")
    result = cli(*[_expand(a, paths, case) for a in args])
    output = result.output
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if expected == "blown_up":
        assert result.exit_code == 0, output
        summary = json.loads((paths["new"] / case / "md" / "summary.json").read_text())
        assert summary["status"] == "blown_up" and "bond" in summary["report"]["reason"]
        assert (paths["new"] / case / "md" / "blowup.json").exists()
    elif expected == "overwritten":
        assert result.exit_code == 0, output
        config = (paths["own"]["overwrite"] / "train" / "config.yaml").read_text()
        assert "family: schnet" in config
    else:
        assert result.exit_code == 2, output
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert errors and re.search(expected, output, re.S), output


# --------------------------------------------------------------------------------------------------------------
# Python API cases


@pytest.fixture(scope="module")
def potential(victim):
    from ffspace.potential import Potential

    return Potential.load(victim / "train" / "model.safetensors", dtype=torch.float64)


@pytest.fixture(scope="module")
def ethanol(potential):
    from ffspace.data import read_dataset

    return read_dataset(BUILTIN)[0]


@pytest.mark.parametrize("setting", [{"timestep_fs": 50.0}, {"init_temperature": 1e6}, {"temperature": 1e9}],
                         ids=["timestep_50_fs", "init_temperature_1e6", "temperature_1e9"])
def test_run_md_reports_a_molecule_that_flew_apart(setting, potential, ethanol):
    from ffspace.md import run_md

    result = run_md(potential, ethanol, steps=200, ensemble="nve", **setting)
    assert result.status == "blown_up", result.report
    assert result.final is None and result.report["reason"]


@pytest.mark.parametrize("setting,field", [({"temperature": float("nan")}, "temperature"),
                                           ({"temperature": float("inf")}, "temperature"),
                                           ({"temperature": -1.0}, "temperature"),
                                           ({"timestep_fs": 0.0}, "timestep_fs"),
                                           ({"steps": -1}, "steps"),
                                           ({"ensemble": "npt"}, "ensemble"),
                                           ({"friction": float("nan")}, "friction"),
                                           ({"init_temperature": float("inf")}, "init_temperature"),
                                           ({"traj_interval": 0}, "traj_interval")],
                         ids=["temperature_nan", "temperature_inf", "temperature_negative", "timestep_zero",
                              "steps_negative", "ensemble_npt", "friction_nan", "init_temperature_inf",
                              "traj_interval_zero"])
def test_run_md_validates_like_the_cli(setting, field, potential, ethanol):
    from ffspace.md import run_md

    args = {"steps": 10, **setting}
    with pytest.raises(ConfigError, match=rf"MD settings: {field}"):
        run_md(potential, ethanol, **args)


def test_run_md_refuses_an_ase_atoms_start(potential, ethanol):
    from ffspace.md import run_md

    with pytest.raises(ConfigError, match="Structure.from_ase"):
        run_md(potential, ethanol.to_ase(), steps=1)


def test_run_md_refuses_another_runs_md_folder(victim, ethanol):
    from ffspace.md import run_md
    from ffspace.models import SchNet
    from ffspace.potential import Potential

    other = Potential(SchNet([1, 6, 8], cutoff=4.0, features=8, layers=1), dtype=torch.float64)
    with pytest.raises(ConfigError, match="another run"):
        run_md(other, ethanol, steps=5, out_dir=victim / "md")


def test_trainer_refuses_another_runs_folder(victim):
    from ffspace.data import read_dataset
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    data = read_dataset(BUILTIN)
    model = build_model_for_data({"family": "schnet", "features": 8, "layers": 1}, data[:20])
    with pytest.raises(ConfigError, match="different configuration"):
        Trainer(model, data[:20], data[20:25], TrainConfig(epochs=1, progress=False), run_dir=victim / "train")


def test_trainer_refuses_constant_labels(tmp_path):
    from ffspace.data import Dataset, read_dataset
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    data = Dataset([s.copy(forces=np.zeros_like(s.forces)) for s in read_dataset(BUILTIN)[:25]], "zeros")
    with pytest.raises(DataError, match="every force") as info:
        model = build_model_for_data({"family": "schnet", "features": 8, "layers": 1}, data[:20])
        Trainer(model, data[:20], data[20:], TrainConfig(epochs=1, progress=False), run_dir=tmp_path)
    assert info.value.file == "zeros" and not any(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs,message", [({"device": "cuda"}, "CUDA is not available"),
                                            ({"device": "quantum"}, "not a device"),
                                            ({"dtype": "float16"}, "dtype must be one of")],
                         ids=["device_cuda", "device_unknown", "dtype_float16"])
def test_potential_refuses_devices_and_dtypes(kwargs, message):
    from ffspace.models import SchNet
    from ffspace.potential import Potential

    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match=message):
        Potential(SchNet([1, 6, 8], features=8, layers=1), **kwargs)


def test_structure_refuses_a_charge_that_is_not_a_number():
    from ffspace.data import Structure

    with pytest.raises(DataError) as info:
        Structure(numbers=[8, 1, 1], positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]],
                  info={"charge": float("nan")}, source="w.xyz", frame=3)
    assert info.value.field == "charge" and info.value.frame == 3


def test_read_dataset_warns_instead_when_asked(data):
    from ffspace.data import read_dataset
    from ffspace.data.label_check import LabelUnitWarning

    with pytest.warns(LabelUnitWarning, match="look like eV"):
        read_dataset(data / "ev.npz", unit_check="warn")


def test_a_pickle_named_safetensors_is_refused_unread(tmp_path):
    from ffspace.potential import load_package

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"run": Path("/")}))
    with pytest.raises(ModelPackageError, match="corrupt"):
        load_package(path)


def test_build_model_refuses_zero_layers(ethanol):
    from ffspace.data import read_dataset
    from ffspace.train import build_model_for_data

    with pytest.raises(ConfigError, match="layers=0"):
        build_model_for_data({"family": "painn", "layers": 0}, read_dataset(BUILTIN)[:5])


def test_outputs_get_the_umask_permissions(tmp_path):
    """model.safetensors was written 0600 (safetensors' own writer), every other output 0644."""
    from ffspace.models import SchNet
    from ffspace.outputs import atomic_write
    from ffspace.potential import save_package

    mask = os.umask(0o022)
    try:
        package = save_package(tmp_path / "m.safetensors", SchNet([1, 8], features=8, layers=1))
        text = atomic_write(tmp_path / "t.txt", "x")
    finally:
        os.umask(mask)
    assert package.stat().st_mode & 0o777 == 0o644
    assert text.stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------------------------------------------

def test_zz_no_file_of_another_run_was_modified(victim, foreign, protected):
    """Runs last in this module (pytest keeps the order of definition): every case above ran next to the
    victim's and the foreign folder, several pointed at them; none changed, added or removed a file there."""
    assert _tree_hashes(victim, foreign) == protected
