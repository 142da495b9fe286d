"""The AL benchmark's random pool reuse: an earlier pool is kept only if its file is the fingerprint of the same
sampling settings and it still holds 2x the draw (benchmarks/active_learning.py `_kept_pool`)."""

import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from ffspace.data import Structure
from ffspace.reference.config import LabelConfig, SamplerConfig
from ffspace.reference.job import samples_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from active_learning import _kept_pool  # noqa: E402

WATER = Structure(numbers=np.array([8, 1, 1]),
                  positions=np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], float))
TEMPS = [300.0, 600.0]


def _job(per_t):
    return LabelConfig(input={"file": "x.xyz"}, seed=1, progress=False,
                       samplers=[SamplerConfig(kind="md", n_frames=per_t, temperature=t, interval=20) for t in TEMPS])


def _pool(folder, per_t, path=None):
    path = path or samples_path(_job(per_t), folder, [WATER])
    write(path, [Atoms("OH2", positions=WATER.positions)] * (per_t * len(TEMPS)), format="extxyz")


def test_kept_pool_needs_twice_the_draw_and_the_same_settings(tmp_path):
    kept = lambda needed, minimum=10: _kept_pool(tmp_path, _job, [WATER], len(TEMPS), needed, minimum)  # noqa: E731
    assert kept(50) is None
    _pool(tmp_path, 30)  # 60 frames: less than 2 x 50
    assert kept(50) is None
    _pool(tmp_path, 60)
    _pool(tmp_path, 80)
    assert kept(50) == 80  # the largest that qualifies
    _pool(tmp_path, 200, tmp_path / "samples-0123456789abcdef.extxyz")  # other settings: never reused
    assert kept(50) == 80
    assert kept(50, minimum=70) == 80
    assert kept(90) is None  # 160 frames < 2 x 90: a new pool is made


def test_draws_are_named_and_grouped_by_pool():
    # Draw 0 keeps the original folder name, so a benchmark rerun with --draws reads its committees back.
    from active_learning import _baseline_name, _pools_of
    names = [_baseline_name(tag, d) for tag in ("", "_300K") for d in range(3)]
    assert names == ["random", "random_draw1", "random_draw2", "random_300K", "random_300K_draw1",
                     "random_300K_draw2"]
    assert _pools_of(names, 3) == {"random": names[:3], "random_300K": names[3:]}
    assert _pools_of(["random"], 1) == {"random": ["random"]}
