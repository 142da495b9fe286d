"""Committee members trained side by side: ``python -m ffspace.active.member_worker FOLDER`` trains one member
(started by `train_in_processes`, not by hand).

Each member is a separate Python process that rebuilds its trainer from files nothing executes on loading
(like `ffspace.train.worker`): the start model as a package, the data as exact arrays, the settings as JSON.
Its thread count goes into its environment, so the caller's process is left as it was. The member writes its
checkpoints into its own run folder, so a killed committee resumes exactly as after sequential training; a
member process also dies with its parent (Linux), so a killed run leaves no orphan writing checkpoints that a
resumed run reads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path


def train_in_processes(jobs, workers: int, poll_s: float = 0.2) -> None:
    """Train ``jobs`` — ``(run folder, model, train set, validation set, TrainConfig)`` each — in at most
    ``workers`` processes at a time, each with ``max(1, threads // workers)`` CPU threads of this process's
    ``threads``. Returns when all have finished; the first failure stops the others and is raised here."""
    from ..train.distributed import _raise_worker_error, worker_env, write_worker_inputs

    env = worker_env(workers)
    with tempfile.TemporaryDirectory(prefix="ffspace_members_") as tmp:
        inputs = []
        for k, (run_dir, model, train_set, val_set, config) in enumerate(jobs):
            folder = Path(tmp) / str(k)
            folder.mkdir()
            write_worker_inputs(folder, model, train_set, val_set,
                                {"config": config.model_dump(), "run_dir": str(Path(run_dir).resolve()),
                                 "parent": os.getpid()})
            inputs.append(folder)
        waiting, running = list(range(len(inputs))), {}
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    k = waiting.pop(0)
                    running[k] = subprocess.Popen([sys.executable, "-m", "ffspace.active.member_worker",
                                                   str(inputs[k])], env=env)
                for k, proc in list(running.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    del running[k]
                    if code != 0:
                        _raise_worker_error(inputs[k], 0, code)
                time.sleep(poll_s)
        finally:
            for proc in running.values():  # a failure or the caller's interrupt must not leave members running
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent dies (a killed run must not leave a member writing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def run(folder: Path) -> None:
    from ..data.readers import read_arrays
    from ..potential.package import load_package
    from ..train.config import TrainConfig
    from .committee import _train_member

    spec = json.loads((folder / "spec.json").read_text())
    _die_with_parent(spec["parent"])
    config = TrainConfig(**spec["config"])
    model, _ = load_package(folder / "model.safetensors", dtype=config.dtype)
    _train_member(Path(spec["run_dir"]), model, read_arrays(folder / "train.npz"), read_arrays(folder / "val.npz"),
                  config)


def main(argv=None):
    folder = Path((argv or sys.argv[1:])[0])
    try:
        run(folder)
    except BaseException as exc:
        (folder / "error_0.json").write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


if __name__ == "__main__":
    main()
