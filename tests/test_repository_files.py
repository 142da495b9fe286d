"""What the repository ships stays within its limits: files of at most 5 MiB (results, labels and models are
kept in the repository so that later sessions and users need not recompute them), and every label store it keeps
reads back whole."""

import shutil
import subprocess
from pathlib import Path

import pytest

from ffspace.reference.store import LabelStore

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 5 * 2**20


def _tracked() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return [ROOT / n.decode() for n in names if n]


def test_every_tracked_file_is_at_most_5_mib():
    big = [f"{p.relative_to(ROOT)} ({p.stat().st_size / 2**20:.1f} MiB)" for p in _tracked()
           if p.is_file() and p.stat().st_size > LIMIT]
    assert not big, f"files over 5 MiB (shard or compress them): {big}"


def test_kept_label_stores_read_back():
    """Each kept store (its labels.jsonl and sealed shards) loads, and every label has energy and forces for
    each atom."""
    folders = sorted({p.parent for p in _tracked()
                      if p.name == "labels.jsonl" or (p.name.startswith("labels-") and p.name.endswith(".jsonl.gz"))})
    assert folders, "no label store is kept in the repository"
    for folder in folders:
        store = LabelStore(folder, shard_bytes=None)
        assert len(store) > 0, folder
        for key in list(store.labels)[:: max(1, len(store) // 20)]:  # a sample: the whole store is loaded anyway
            s = store.get(key)
            assert s.energy is not None and s.forces is not None and s.forces.shape == (s.n_atoms, 3), (folder, key)
