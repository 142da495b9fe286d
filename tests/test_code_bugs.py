"""Regression tests for four bugs found by reading the code (issue 28). Each failed on the code before the fix."""

import platform
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


# 1. The `ffspace` command never kept freed memory: the console script called `app`, not `main`.

def test_console_script_is_main_which_applies_the_process_settings(monkeypatch):
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ffspace"]
    assert script.value == "ffspace.cli.main:main"
    from ffspace import runtime

    called = []
    monkeypatch.setattr(runtime, "keep_freed_memory", lambda: called.append(True) or True)
    monkeypatch.setattr(sys, "argv", ["ffspace", "--help"])
    with pytest.raises(SystemExit) as exit_:
        script.load()()
    assert exit_.value.code == 0 and called == [True]


def test_python_m_ffspace_cli_applies_the_process_settings():
    """``python -m ffspace.cli`` (the module form of the command) goes through `main` as well."""
    code = ("import runpy, sys\n"
            "from ffspace import runtime\n"
            "called = []\n"
            "runtime.keep_freed_memory = lambda: called.append(1) or True\n"
            "sys.argv = ['ffspace', '--help']\n"
            "try:\n"
            "    runpy.run_module('ffspace.cli', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            "print('keep_freed_memory called', len(called), 'time(s)')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "called 1 time(s)" in out, out


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
@pytest.mark.parametrize("how", ["module", "script"])
def test_the_command_reports_freed_memory_kept(how):
    script = Path(sys.executable).with_name("ffspace")
    if how == "script" and not script.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    cmd = [sys.executable, "-m", "ffspace.cli", "info"] if how == "module" else [str(script), "info"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert any(line.startswith("keep freed memory") and " on " in line + " " for line in out.splitlines()), out


# 2. `Potential.load` rounded a float64 package through float32.

def test_a_float64_package_loads_exactly(tmp_path):
    from ffspace.models import PaiNN
    from ffspace.potential import Potential, load_package, save_package

    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], cutoff=4.0, features=8, layers=1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)  # not representable in float32
    path = save_package(tmp_path / "m.safetensors", model)
    for load in (lambda: Potential.load(path, dtype=torch.float64).model, lambda: load_package(path)[0],
                 lambda: Potential.load(path, dtype="float64").model):
        loaded = load()
        for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert b.dtype == torch.float64 and torch.equal(a, b), name


# 3. The ASE calculator dropped atoms.info["charge"]: charge-aware models saw a cation as neutral.

@pytest.fixture(scope="module")
def coulomb_package(tmp_path_factory):
    from ffspace.models import AtomicReference, LearnedCoulomb, Sum
    from ffspace.potential import save_package

    torch.manual_seed(0)
    coulomb = LearnedCoulomb([1, 6, 8], cutoff=3.5, features=8, layers=1)
    model = Sum([AtomicReference({1: -13.6, 6: -1029.0, 8: -2041.0}), coulomb])
    return save_package(tmp_path_factory.mktemp("coulomb") / "m.safetensors", model.double())


@pytest.mark.parametrize("convention", ["info", "initial_charges"])
def test_ase_calculator_passes_the_total_charge(coulomb_package, convention):
    from ase.build import molecule

    from ffspace.data import Structure
    from ffspace.interfaces import FFSpaceCalculator
    from ffspace.potential import Potential

    atoms = molecule("CH3CH2OH")
    atoms.calc = FFSpaceCalculator(coulomb_package)
    neutral = atoms.get_potential_energy()
    if convention == "info":
        atoms.info["charge"] = 1
    else:
        charges = np.zeros(len(atoms))
        charges[0] = 1.0
        atoms.set_initial_charges(charges)
    cation = atoms.get_potential_energy()  # only the charge changed: the calculator must recompute
    expected = Potential.load(coulomb_package, dtype=torch.float64)(
        [Structure.from_ase(molecule("CH3CH2OH"), info={"charge": 1})])["energy"][0]
    assert abs(cation - neutral) > 1e-3
    assert cation == pytest.approx(expected, abs=1e-9)


# 4. `ffspace train model.family=mace` failed: PaiNN's settings of the default config leaked into the family.

@pytest.mark.parametrize("family", ["mace", "ani", "mm", "graph_mm", "schnet"])
def test_changing_the_family_brings_that_familys_defaults(family, ethanol_data):
    from ffspace.cli.main import DEFAULT_RUN
    from ffspace.config import load_config
    from ffspace.train import build_model_for_data

    if family == "mace":
        pytest.importorskip("e3nn")
    cfg = load_config(DEFAULT_RUN, [f"model.family={family}"])
    model = build_model_for_data(cfg.model.model_dump(), ethanol_data[:20])
    assert model.terms[-1].family == family
    # a setting given on the command line next to the family is kept
    if family == "schnet":
        cfg = load_config(DEFAULT_RUN, ["model.family=schnet", "model.features=24"])
        assert build_model_for_data(cfg.model.model_dump(), ethanol_data[:20]).terms[-1].config["features"] == 24


def test_train_command_with_another_family_runs(tmp_path):
    from typer.testing import CliRunner

    from ffspace.cli.main import app

    result = CliRunner().invoke(app, ["train", "model.family=mm", "train.epochs=1", "train.max_time_min=null",
                                      "train.progress=false", f"out={tmp_path / 'mm'}"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mm" / "train" / "model.safetensors").exists()
