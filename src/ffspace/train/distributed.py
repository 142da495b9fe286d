"""Data-parallel training with torch.distributed: ``train.workers`` processes each compute part of every batch.

Every worker holds the whole model and data set and walks the same shuffled batches; worker r takes every
``workers``-th frame of each batch. Each worker scales its loss terms by its share of the batch (frames for
energy, atoms for forces), so the gradients summed over workers by one all-reduce are the gradient of the
whole batch: the trajectory is the single-process one up to floating-point summation order. Parameters, EMA
weights and the optimizer then stay identical on every worker without being sent. Worker 0 validates, writes
the metrics, checkpoints and the model, and broadcasts the validation loss and the epoch time, so every worker
takes the same schedule and stopping decisions. Gloo serves CPU workers, NCCL CUDA ones (one device each).

The workers are started with the "spawn" method and receive the trainer as plain pickled bytes, so no tensor
storage is shared between them (torch.multiprocessing would put it in shared memory, and every worker's
optimizer would then update the same weights). What "spawn" implies: the model's class must be importable
(not defined in ``__main__`` or a notebook), and a script that trains with workers must guard its entry point
with ``if __name__ == "__main__":``. Worker start-up (a few seconds) is not counted in the time budget. Only
the process group made here is used: a caller's own torch.distributed group is never touched.
"""

from __future__ import annotations

import datetime
import os
import pickle
import shutil
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import ConfigError

# Set in the workers `spawn` starts, and only there: a process group someone else made is not ours to use.
_IN_WORKER = False
# Only worker 0 validates while the others wait in a broadcast: allow long validations.
_TIMEOUT = datetime.timedelta(hours=6)


def active() -> bool:
    """True inside a data-parallel worker started by `spawn`."""
    return _IN_WORKER and dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sum each tensor over the workers with one collective (flattened); identity outside a process group."""
    if not active():
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start:start + t.numel()].view_as(t))
        start += t.numel()
    return out


def broadcast_floats(values: list[float], device) -> list[float]:
    """Worker 0's ``values`` on every worker (identity outside a process group)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def device_for(device: str, worker: int) -> str:
    """Worker r of a CUDA run gets cuda:r; CPU workers share the host."""
    return f"cuda:{worker}" if device.startswith("cuda") else device


def _error_file(folder: str, worker: int) -> Path:
    return Path(folder) / f"error_{worker}.pkl"


def _worker(worker: int, payload: bytes, workers: int, threads: int, folder: str):
    """One spawned worker: join the group, run the trainer's loop, leave. An exception is also pickled to a
    file, so that the caller gets it with its own type (a ConfigError stays a ConfigError)."""
    global _IN_WORKER
    # This process is ours: its thread count is set so the workers together use the caller's threads, and
    # gloo talks over the loopback interface (the workers share one host; the host name may resolve to an
    # interface that is down or firewalled).
    torch.set_num_threads(threads)
    loopback = [name for _, name in socket.if_nameindex() if name in ("lo", "lo0")]
    if loopback:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback[0])
    try:
        trainer = pickle.loads(payload)
        device = device_for(trainer.config.device, worker)
        if device.startswith("cuda"):
            torch.cuda.set_device(device)
        backend = "nccl" if device.startswith("cuda") else "gloo"
        store = dist.FileStore(str(Path(folder) / "store"), workers)
        dist.init_process_group(backend, store=store, rank=worker, world_size=workers, timeout=_TIMEOUT)
        _IN_WORKER = True
        try:
            trainer.to_device(device)
            trainer.fit_loop()
        finally:
            _IN_WORKER = False
            dist.destroy_process_group()
    except BaseException as exc:
        try:
            _error_file(folder, worker).write_bytes(pickle.dumps(exc))
        except Exception:  # an exception that does not pickle: the traceback below still tells
            pass
        raise


def spawn(trainer, workers: int):
    """Run ``trainer.fit_loop()`` in ``workers`` processes; returns when all have finished. An exception in a
    worker is raised here, with its own type when it pickles."""
    import torch.multiprocessing as mp

    device = str(trainer.potential.device)
    if device.startswith("cuda") and workers > torch.cuda.device_count():
        raise ConfigError(f"train.workers={workers} on CUDA needs one GPU per worker; this machine has "
                          f"{torch.cuda.device_count()}")
    trainer.to_device("cpu")  # the workers unpickle onto the CPU, then move to their own device
    try:
        payload = pickle.dumps(trainer)
    except Exception as exc:
        raise TypeError(f"train.workers > 1 sends the trainer to worker processes, but it cannot be pickled "
                        f"({exc}); define the model in an importable module or use train.workers=1") from exc
    finally:
        trainer.to_device(device)
    threads = max(1, torch.get_num_threads() // workers)
    folder = tempfile.mkdtemp(prefix="ffspace_workers_")  # local: a file store needs working file locks
    try:
        mp.start_processes(_worker, args=(payload, workers, threads, folder), nprocs=workers, join=True,
                           start_method="spawn")
    except mp.ProcessRaisedException:
        for worker in range(workers):
            path = _error_file(folder, worker)
            if path.exists():
                try:
                    original = pickle.loads(path.read_bytes())
                except Exception:
                    break
                raise original from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
