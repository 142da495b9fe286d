"""Speed and memory of one model on one system, each measurement in its own process.

A fresh process per (model, system, dtype) gives a clean peak-memory figure (the peak resident set of
a process only grows) and lets a size that does not fit fail without taking the benchmark down: once
the model is loaded, the process runs under an address-space cap that leaves the calls what is left of
the memory limit, so an allocation that would exceed it fails with the number of bytes asked for, which
is reported. Timed calls are warm energy + forces on a graph built once
(as MD does between neighbour-list rebuilds); the neighbour-list build is timed separately.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..data.structure import Structure


def save_system(structure: Structure, path: Path) -> Path:
    """Write a structure for a timing process (plain arrays: nothing to parse, nothing executed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, numbers=structure.numbers, positions=structure.positions, cell=structure.cell, pbc=structure.pbc)
    return path


def machine_memory_bytes() -> int:
    """Physical memory, or the container's cgroup limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


OOM_PATTERNS = ("out of memory", "can't allocate memory", "cannot allocate memory", "bad_alloc",
                "memory allocation", "memoryerror")


def is_out_of_memory(text: str) -> bool:
    text = text.lower()
    return any(p in text for p in OOM_PATTERNS)


def measure(model_path, system_path, dtype: str = "float32", threads: int = 2, repeats: int = 5,
            max_call_s: float = 60.0, memory_limit_bytes: int | None = None, device: str = "cpu",
            timeout_s: float | None = None, time_budget_s: float = float("inf"), keep_freed_memory: bool = True) -> dict:
    """Run `_worker` in a child process and return its figures (or why there are none): the median of up to
    ``repeats`` warm calls, fewer once the timed calls add up to ``time_budget_s`` (at least one).
    ``keep_freed_memory``: the child keeps freed memory for reuse (`ffspace.runtime.keep_freed_memory`), as the
    ``ffspace`` command does; False times the C library's default."""
    args = {"model": str(model_path), "system": str(system_path), "dtype": dtype, "threads": threads,
            "repeats": repeats, "max_call_s": max_call_s, "device": device, "time_budget_s": time_budget_s,
            "keep_freed_memory": keep_freed_memory,
            "memory_limit_bytes": memory_limit_bytes or int(0.85 * machine_memory_bytes())}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))  # the child's torch starts with this many threads
    try:
        proc = subprocess.run([sys.executable, "-m", "ffspace.bench.speed", json.dumps(args)], capture_output=True,
                              text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "detail": f"no result within {timeout_s:.0f} s"}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if lines:
        return json.loads(lines[-1])
    if proc.returncode in (-9, 137):
        return {"status": "out of memory", "detail": "killed by the system (SIGKILL) before it could report"}
    detail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    # Native libraries (OpenBLAS, libstdc++) may abort on a failed allocation instead of raising.
    return {"status": "out of memory" if is_out_of_memory(proc.stderr) else "error", "detail": detail,
            "memory_limit_bytes": args["memory_limit_bytes"]}


def _worker(args: dict) -> dict:
    import resource

    import torch

    from ..errors import DataError
    from ..graph.batch import collate, graph_of
    from ..potential import Potential
    from ..runtime import keep_freed_memory

    kept = keep_freed_memory() if args.get("keep_freed_memory", True) else False
    data = np.load(args["system"])
    structure = Structure(numbers=data["numbers"], positions=data["positions"], cell=data["cell"], pbc=data["pbc"])
    n = structure.n_atoms
    dtype = {"float32": torch.float32, "float64": torch.float64}[args["dtype"]]
    pot = Potential.load(args["model"], dtype=dtype, device=args["device"])
    try:
        pot.check_elements([structure])
    except DataError as exc:
        return {"status": "not applicable", "detail": str(exc), "n_atoms": n}
    sync = torch.cuda.synchronize if pot.device.type == "cuda" else (lambda: None)
    nl_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        graph = graph_of(structure, pot.cutoff)
        nl_times.append(time.perf_counter() - t0)
    batch = collate([graph], dtype=dtype, device=pot.device, labels=False)
    # Start the thread pool before the cap (creating threads later could fail under it for other reasons).
    torch.ones(256, 256) @ torch.ones(256, 256)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Cap what the calls may add: resident total ≈ memory_limit. The cap is on address space, so it is
    # the current virtual size plus that allowance (libraries reserve far more address space than they use).
    # Not on CUDA (its driver reserves huge address ranges) nor where /proc does not tell the virtual size.
    virtual = _virtual_size()
    if virtual and pot.device.type != "cuda":
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = virtual + max(0, args["memory_limit_bytes"] - baseline)
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    times = []
    try:
        for k in range(args["repeats"] + 1):  # the first call is the warm-up
            sync()
            t0 = time.perf_counter()
            pot.compute(batch, forces=True)
            sync()
            times.append(time.perf_counter() - t0)
            if times[-1] > args["max_call_s"]:  # too slow to repeat: report what one call cost
                break
            # Calls of seconds vary by a few per cent: after time_budget_s of timed calls, stop repeating (a
            # 24 000-atom box would otherwise take tens of minutes per model and dtype).
            if k >= 1 and sum(times[1:]) > args["time_budget_s"]:
                break
    except (RuntimeError, MemoryError) as exc:
        text = str(exc) or type(exc).__name__
        asked = re.search(r"allocate (\d+) bytes", text)
        if is_out_of_memory(text) or isinstance(exc, MemoryError):
            return {"status": "out of memory", "n_atoms": n, "n_edges": int(len(graph.i)),
                    "requested_bytes": int(asked.group(1)) if asked else None,
                    "memory_limit_bytes": args["memory_limit_bytes"], "baseline_memory_mb": baseline / 2**20,
                    "detail": text.splitlines()[0][:300]}
        return {"status": "error", "n_atoms": n, "detail": text.splitlines()[0][:300]}
    except ValueError as exc:  # e.g. a molecules-only model given a periodic cell
        return {"status": "not applicable", "n_atoms": n, "detail": str(exc)[:300]}
    timed = times[1:] or times  # only the warm-up call when it alone took longer than max_call_s: flagged
    median = statistics.median(timed)
    memory = {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "baseline_memory_mb": baseline / 2**20}  # resident set of the process (Linux ru_maxrss: KiB)
    if pot.device.type == "cuda":
        memory["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return {"status": "ok", "n_atoms": n, "n_edges": int(len(graph.i)), "ms_per_step": median * 1e3,
            "us_per_atom_step": median * 1e6 / n, "neighbor_list_ms": statistics.median(nl_times) * 1e3,
            "calls": len(timed), "warm": len(times) > 1, **memory, "dtype": args["dtype"], "threads": torch.get_num_threads(),
            "device": args["device"], "freed_memory_kept": kept}


def _virtual_size() -> int:
    """This process's virtual memory size in bytes (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fit_exponent(sizes, costs, min_atoms: int = 0) -> float | None:
    """Slope of log(cost) against log(size) by least squares, over sizes ≥ ``min_atoms`` (None if < 2)."""
    pts = [(n, c) for n, c in zip(sizes, costs) if n >= min_atoms and c and c > 0]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


if __name__ == "__main__":
    result = _worker(json.loads(sys.argv[1]))
    print(json.dumps(result))
