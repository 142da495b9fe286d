"""Committee members trained side by side: ``python -m ffspace.active.member_worker FOLDER`` trains one member
(started by `train_in_processes`, not by hand).

Each member is a worker process of `ffspace.workers`: it rebuilds its trainer from files nothing executes on
loading (the start model as a package, the data as exact arrays, the settings as JSON), runs on its share of
the caller's threads, and dies with its parent (Linux). The member writes its checkpoints into its own run
folder, so a killed committee resumes exactly as after sequential training, and no orphan is left writing
checkpoints that a resumed run reads.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from ..workers import die_with_parent, read_inputs, read_spec, run_workers, worker_env, worker_main, write_inputs


def train_in_processes(jobs, workers: int) -> None:
    """Train ``jobs`` — ``(run folder, model, train set, validation set, TrainConfig)`` each — in at most
    ``workers`` processes at a time, each with ``max(1, threads // workers)`` CPU threads of this process's
    ``threads``. Returns when all have finished; the first failure stops the others and is raised here."""
    with tempfile.TemporaryDirectory(prefix="ffspace_members_") as tmp:
        folders = []
        for k, (run_dir, model, train_set, val_set, config) in enumerate(jobs):
            folder = Path(tmp) / str(k)
            folder.mkdir()
            write_inputs(folder, model, train_set, val_set,
                         {"config": config.model_dump(), "run_dir": str(Path(run_dir).resolve())})
            folders.append(folder)
        run_workers([(["ffspace.active.member_worker", str(f)], f / "error.json") for f in folders],
                    parallel=workers, env=worker_env(workers), what="committee member")


def run(folder: Path) -> None:
    from ..train.config import TrainConfig
    from .committee import _train_member

    spec = read_spec(folder)
    die_with_parent(spec["parent"])
    config = TrainConfig(**spec["config"])
    model, train_set, val_set, _ = read_inputs(folder, config.dtype)
    _train_member(Path(spec["run_dir"]), model, train_set, val_set, config)


def main(argv=None):
    folder = Path((argv or sys.argv[1:])[0])
    worker_main(lambda: run(folder), folder / "error.json")


if __name__ == "__main__":
    main()
