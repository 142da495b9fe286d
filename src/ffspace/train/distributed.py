"""Data-parallel training with torch.distributed: ``train.workers`` processes each compute part of every batch.

Every worker holds the whole model and data set and walks the same shuffled batches; worker r takes every
``workers``-th frame of each batch. Each worker scales its loss terms by its share of the batch (frames for
energy, atoms for forces), so the gradients summed over workers by one all-reduce are the gradient of the
whole batch: the trajectory is the single-process one up to floating-point summation order. Parameters, EMA
weights and the optimizer then stay identical on every worker without being sent. Worker 0 validates, writes
the metrics, checkpoints and the model, and broadcasts the validation loss and the epoch time, so every worker
takes the same schedule and stopping decisions. Gloo serves CPU workers, NCCL CUDA ones (one device each).

Started by torchrun instead (``torchrun --nproc-per-node=2 -m ffspace.cli train ...``, or across nodes with
``--nnodes``/``--rdzv-endpoint``), every process reads the data and builds the same model itself (the same seed),
joins the launcher's process group (env://) and runs the same epochs: the trajectory of ``train.workers`` with
as many workers. Only rank 0 claims the output folder and writes.

With ``train.workers``, the workers are separate Python processes (``python -m ffspace.train.worker``, started through
`ffspace.workers`) that rebuild the trainer from files nothing executes on loading; their thread count and
gloo's network interface go into their environment, so the caller's process is left as it was. The model's family must be
registered (a package must be able to rebuild it). Worker start-up (a few seconds) is not counted in the time
budget. Only the process group a worker joins here is used: a caller's own torch.distributed group is never touched.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..workers import run_workers, worker_env, write_inputs

# Set by `join`, in the worker processes only: a process group someone else made is not ours to use.
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


def launched() -> bool:
    """True in a process that a launcher started as one of several (torchrun: the env:// variables set)."""
    env = os.environ
    return int(env.get("WORLD_SIZE", "1")) > 1 and "RANK" in env and "MASTER_ADDR" in env


def launched_rank() -> int:
    """This process's rank under a launcher (0 otherwise): only rank 0 claims folders and writes."""
    return int(os.environ["RANK"]) if launched() else 0


def launched_device(device: str) -> str:
    """Under a launcher, a CUDA run takes the GPU of its local rank (one per process)."""
    if launched() and device.startswith("cuda"):  # (an explicit cuda:N would put every process on one GPU)
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def join_launched(device: str):
    """Join the process group a launcher (torchrun) describes in the environment: gloo on CPU, NCCL on CUDA."""
    global _IN_WORKER
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method="env://",
                            timeout=_TIMEOUT)
    _IN_WORKER = True
    # Every process has built its trainer (rank 0 has claimed the folder, and with overwrite removed the old
    # checkpoint) before any reads a checkpoint: NCCL's group may return before the others arrive.
    dist.barrier()


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


def agree(tensors: list[torch.Tensor], state: dict) -> None:
    """Check that every worker starts from the same ``state`` (epoch, settings and data, the tensors' shapes, a
    checkpoint problem met), then put worker 0's ``tensors`` (the model's parameters and buffers, the EMA weights) on
    every worker. Under torchrun each process builds its model and reads the checkpoint itself: reference energies
    fitted or refitted by running code whose last bits depend on the machine can differ between nodes, and a node
    that does not see the run folder's checkpoint would start at epoch 0 beside the others, summing gradients of
    other batches. The states are compared first, so a mismatch raises on every worker (no worker is left waiting
    in a collective) before tensors of other shapes are sent. Identity outside a process group."""
    if not active():
        return
    state = {**state, "tensors": [(tuple(t.shape), str(t.dtype)) for t in tensors]}
    states = [None] * world_size()
    dist.all_gather_object(states, state)
    differ = [r for r, s in enumerate(states) if s != states[0]]
    if differ:
        shown = {k: (states[differ[0]][k], states[0][k]) for k in state if states[differ[0]][k] != states[0][k]}
        raise ConfigError(f"training workers {differ} start from another point than worker 0 ("
                          + "; ".join(f"{k}: {a} against {b}" for k, (a, b) in shown.items() if k != "tensors")
                          + ("; other parameter shapes" if "tensors" in shown else "")
                          + "): every process must see the same data, configuration and run folder (a shared file "
                          "system for the checkpoint when the workers are on several nodes)")
    with torch.no_grad():  # one collective per dtype, on contiguous copies
        for dtype in sorted({t.dtype for t in tensors}, key=str):  # the same order on every worker
            group = [t for t in tensors if t.dtype == dtype]
            flat = torch.cat([t.detach().reshape(-1) for t in group])
            dist.broadcast(flat, src=0)
            start = 0
            for t in group:
                t.copy_(flat[start:start + t.numel()].view_as(t))
                start += t.numel()


def device_for(device: str, worker: int) -> str:
    """Worker r of a CUDA run gets cuda:r; CPU workers share the host."""
    return f"cuda:{worker}" if device.startswith("cuda") else device


def join(folder: Path, worker: int, workers: int, device: str):
    """Join the workers' process group (called by each worker process, once)."""
    global _IN_WORKER
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    store = dist.FileStore(str(folder / "store"), workers)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", store=store, rank=worker,
                            world_size=workers, timeout=_TIMEOUT)
    _IN_WORKER = True


def barrier():
    dist.barrier()


def leave():
    global _IN_WORKER
    _IN_WORKER = False
    dist.destroy_process_group()


def spawn(trainer, workers: int):
    """Run the trainer's epochs in ``workers`` processes (`ffspace.workers`); returns when all have finished.
    The first worker that fails stops the others, and its exception is raised here (with its own type for the
    library's and the common built-in errors)."""
    device = str(trainer.potential.device)
    if device.startswith("cuda") and workers > torch.cuda.device_count():
        raise ConfigError(f"train.workers={workers} on CUDA needs one GPU per worker; this machine has "
                          f"{torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory(prefix="ffspace_workers_") as tmp:  # local: a file store needs file locks
        folder = Path(tmp)
        write_inputs(folder, trainer.model, trainer.train_set, trainer.val_set,
                     {"config": trainer.config.model_dump(), "run_dir": str(Path(trainer.run_dir).resolve()),
                      "extra_config": trainer.extra_config, "owner": trainer.owner})
        env = worker_env(workers)
        # The workers share one host: gloo talks over loopback (the host name may resolve to an interface
        # that is down or firewalled).
        loopback = [name for _, name in socket.if_nameindex() if name in ("lo", "lo0")]
        if loopback:
            env.setdefault("GLOO_SOCKET_IFNAME", loopback[0])
        # All at once: every worker waits in the process group for the others.
        run_workers([(["ffspace.train.worker", str(folder), str(r), str(workers)], folder / f"error_{r}.json")
                     for r in range(workers)], parallel=workers, env=env, what="training worker")
