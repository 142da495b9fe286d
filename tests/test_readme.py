"""The README's Python tour runs as written (examples that no test runs rot)."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        namespace = {"__name__": "__readme__"}  # later blocks continue the tour: they share one namespace
        for code in blocks:
            exec(compile(code, str(README), "exec"), namespace)
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "F MAE" in out and "completed" in out and "OpenMM" in out
    assert (tmp_path / "runs" / "api" / "md" / "thermo.csv").exists()
