"""Worker processes that rebuild their job from safe files: the one mechanism behind data-parallel training
(`ffspace.train.distributed.spawn`) and committee members trained side by side
(`ffspace.active.member_worker.train_in_processes`).

A worker is a separate Python process (``python -m <module> FOLDER ...``). It rebuilds its work from files
nothing executes on loading: the model as a package (safetensors + JSON), the data as exact arrays
(`data.writers.write_arrays`, no pickles), the settings as JSON. Its thread count goes into its environment, so
the caller's process is left as it was. A failing worker writes its exception to a JSON file, and the caller
raises it with its own type (for the library's errors and the common built-in ones). The first failure stops
the other workers; so does the caller's interrupt; and on Linux a worker dies with its parent, so a killed run
leaves no orphan writing checkpoints that a resumed run reads.

The timing child of `ffspace.bench.speed` is not one of these: it is one short-lived measurement whose timeout
and out-of-memory death are results to classify, not failures to raise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, DataError, FFSpaceError, ModelPackageError

# Exceptions a worker reports that the caller gets back with their own type.
_ERRORS = {cls.__name__: cls for cls in (ConfigError, DataError, ModelPackageError, FFSpaceError, FloatingPointError,
                                         ValueError, TypeError, KeyError, MemoryError)}


def write_inputs(folder: Path, model, train_set, val_set, spec: dict) -> None:
    """What a worker process rebuilds its training from: the model as a package, the data as exact arrays,
    ``spec`` (settings, run folder) as JSON. The caller's process id goes into the spec (`die_with_parent`)."""
    from .data.writers import write_arrays
    from .potential.package import save_package

    save_package(folder / "model.safetensors", model)
    for name, data in (("train", train_set), ("val", val_set)):
        if hasattr(data, "store"):  # on disk (HDF5): the workers open the same file, the view's indices
            np.save(folder / f"{name}.indices.npy", data.indices)
            (folder / f"{name}.hdf5.json").write_text(json.dumps(
                {"path": str(Path(data.store.path).resolve()), "cache_mb": data.store.cache_bytes / 2**20,
                 "name": data.name}))
        else:
            write_arrays(folder / f"{name}.npz", data)
    (folder / "spec.json").write_text(json.dumps({**spec, "parent": os.getpid()}, default=str))


def read_spec(folder: Path) -> dict:
    """The settings `write_inputs` wrote (and the caller's process id, ``parent``)."""
    return json.loads((folder / "spec.json").read_text())


def read_inputs(folder: Path, dtype: str):
    """The model (in ``dtype``), train and validation sets and the spec written by `write_inputs`."""
    from .potential.package import load_package

    model, _ = load_package(folder / "model.safetensors", dtype=dtype)
    return model, _read_set(folder, "train"), _read_set(folder, "val"), read_spec(folder)


def _read_set(folder: Path, name: str):
    from .data.readers import read_arrays

    ref = folder / f"{name}.hdf5.json"
    if not ref.exists():
        return read_arrays(folder / f"{name}.npz")
    from .data.hdf5 import HDF5Dataset

    spec = json.loads(ref.read_text())
    return HDF5Dataset(spec["path"], cache_mb=spec["cache_mb"], name=spec["name"],
                       indices=np.load(folder / f"{name}.indices.npy"))


def worker_env(workers: int) -> dict:
    """The environment of a worker process: an equal share of this process's threads (at least one), and
    the package this process runs from first on the path, so the workers import the same ffspace."""
    threads = str(max(1, torch.get_num_threads() // workers))
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1])] +
                                          [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def run_workers(jobs: list[tuple[list[str], Path]], parallel: int, env: dict, what: str = "worker",
                poll_s: float = 0.2) -> None:
    """Run ``jobs`` — ``(python -m arguments, error file)`` each — at most ``parallel`` at a time; returns when
    all have finished with status 0. The first failure kills the running ones and is raised here (see
    `raise_worker_error`); so is the caller's interrupt, after the workers are killed."""
    waiting, running = list(range(len(jobs))), {}
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                k = waiting.pop(0)
                running[k] = subprocess.Popen([sys.executable, "-m", *jobs[k][0]], env=env)
            for k, proc in list(running.items()):
                code = proc.poll()
                if code is None:
                    continue
                del running[k]
                if code != 0:
                    raise_worker_error(jobs[k][1], f"{what} {k}", code)
            time.sleep(poll_s)
    finally:
        for proc in running.values():  # a failed worker leaves the others waiting (in a collective, say);
            if proc.poll() is None:     # a caller's interrupt must not leave them running either
                proc.kill()
            proc.wait()


def raise_worker_error(error_file: Path, who: str, code: int):
    """Raise what a worker reported in ``error_file`` (its own type where known), or say it died."""
    if error_file.exists():
        err = json.loads(error_file.read_text())
        cls = _ERRORS.get(err["type"])
        if cls is not None:
            raise cls(err["message"]) from None
        raise RuntimeError(f"{who} failed: {err['type']}: {err['message']}")
    raise RuntimeError(f"{who} exited with code {code} (its traceback is above)")


def die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when its parent dies (a killed run must not leave a worker writing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def worker_main(run, error_file: Path) -> None:
    """Call ``run()`` in a worker process: an exception goes to ``error_file`` (for `raise_worker_error`) and
    the traceback to stderr. The process then leaves without the interpreter's teardown: gloo's background
    threads can abort a process in static destructors ("terminate called without an active exception")."""
    try:
        run()
    except BaseException as exc:
        error_file.write_text(json.dumps({"type": type(exc).__name__, "message": str(exc)}))
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
