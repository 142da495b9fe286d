"""Speed and memory of one model on one system, each measurement in its own process.

A fresh process per (model, system, dtype) gives a clean peak-memory figure (the peak resident set of
a process only grows) and lets a size that does not fit fail without taking the benchmark down: once
the model is loaded, the process runs under an address-space cap that leaves the calls what is left of
the memory limit, so an allocation that would exceed it fails with the number of bytes asked for, which
is reported. Timed calls are warm energy + forces on a graph built once
(as MD does between neighbour-list rebuilds); the neighbour-list build is timed separately.
`measure_interleaved` times several sizes in one process, in turn, for a cost-against-size slope that
the machine's slow phases do not bend.
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
            timeout_s: float | None = None, time_budget_s: float = float("inf"), keep_freed_memory: bool = True,
            md_steps: int = 0) -> dict:
    """Run `_worker` in a child process and return its figures (or why there are none): the median of up to
    ``repeats`` warm calls, fewer once the timed calls add up to ``time_budget_s`` (at least one).
    ``keep_freed_memory``: the child keeps freed memory for reuse (`ffspace.runtime.keep_freed_memory`), as the
    ``ffspace`` command does; False times the C library's default. ``md_steps`` > 0 also times that many full MD
    steps (`_md_cost`)."""
    args = {"model": str(model_path), "system": str(system_path), "dtype": dtype, "threads": threads,
            "repeats": repeats, "max_call_s": max_call_s, "device": device, "time_budget_s": time_budget_s,
            "keep_freed_memory": keep_freed_memory, "md_steps": md_steps,
            "memory_limit_bytes": memory_limit_bytes or int(0.85 * machine_memory_bytes())}
    return _run_child(args, timeout_s)


def _md_cost(pot, structure, steps: int) -> dict:
    """ms per full MD step of ``structure`` with ``pot`` (`run_md`: velocity Verlet 0.5 fs from 300 K, Verlet list,
    blow-up monitor, nothing written), after 50 warm-up steps; or why there is none."""
    from ..md.simulation import run_md

    kw = dict(ensemble="nve", temperature=300.0, bond_tolerance=None, min_distance=0.1, max_force=1e4)
    try:
        run_md(pot, structure, steps=50, **kw)
        t0 = time.perf_counter()
        result = run_md(pot, structure, steps=steps, **kw)
        wall = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - the call timing stands; say why the MD one is missing
        return {"md_status": f"error: {type(exc).__name__}: {str(exc)[:200]}"}
    if result.status != "completed":
        return {"md_status": f"{result.status} after {result.steps} steps"}
    return {"md_status": "ok", "md_steps": steps, "md_ms_per_step": wall / steps * 1e3,
            "md_us_per_atom_step": wall / steps * 1e6 / structure.n_atoms}


def measure_interleaved(model_path, system_paths, dtype: str = "float32", threads: int = 2, cycles: int = 3,
                        memory_limit_bytes: int | None = None, device: str = "cpu", timeout_s: float | None = None,
                        keep_freed_memory: bool = True) -> dict:
    """Time several systems with one model in one child process, in turn: a warm-up cycle (one call per
    system), then ``cycles`` cycles of one call per system, smallest to largest and back on alternate cycles.

    For a cost-against-size slope. Separate processes per size run minutes apart, and on a shared machine
    contention slows calls down for minutes at a time, so each size may meet a different machine; here every
    size meets the same phases. Returns every call's time per system (``calls_ms``) and its fastest call; peak
    memory is not per system here (measure each size on its own with `measure` for that)."""
    args = {"model": str(model_path), "systems": [str(p) for p in system_paths], "dtype": dtype, "threads": threads,
            "cycles": cycles, "device": device, "keep_freed_memory": keep_freed_memory, "mode": "interleaved",
            "memory_limit_bytes": memory_limit_bytes or int(0.85 * machine_memory_bytes())}
    return _run_child(args, timeout_s)


def _run_child(args: dict, timeout_s: float | None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args["threads"]))  # the child's torch starts with this many threads
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


def _load(args: dict):
    """The potential in the asked dtype and device, and whether freed memory is kept (done first, before the
    allocations it should govern)."""
    from ..potential import Potential, torch_dtype
    from ..runtime import keep_freed_memory

    kept = keep_freed_memory() if args.get("keep_freed_memory", True) else False
    dtype = torch_dtype(args["dtype"])
    return Potential.load(args["model"], dtype=dtype, device=args["device"]), dtype, kept


def _read_system(path: str) -> Structure:
    data = np.load(path)
    return Structure(numbers=data["numbers"], positions=data["positions"], cell=data["cell"], pbc=data["pbc"])


def _cap_address_space(args: dict, pot) -> int:
    """Cap what the calls may add, so that resident total ≈ memory_limit; returns the resident baseline (bytes).
    The cap is on address space, so it is the current virtual size plus that allowance (libraries reserve far
    more address space than they use). Not on CUDA (its driver reserves huge address ranges) nor where /proc
    does not tell the virtual size."""
    import resource

    import torch

    # Start the thread pool before the cap (creating threads later could fail under it for other reasons).
    torch.ones(256, 256) @ torch.ones(256, 256)
    # Load what large graphs import lazily (activation checkpointing in ffspace.models.chunking imports
    # torch._dynamo): a module import that fails under the cap dies with "SystemError: error return without
    # exception set" instead of a MemoryError, and the cap is for the calls' arrays, not for loading code.
    import torch._dynamo  # noqa: F401
    import torch.utils.checkpoint  # noqa: F401
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    virtual = _virtual_size()
    if virtual and pot.device.type != "cuda":
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = virtual + max(0, args["memory_limit_bytes"] - baseline)
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    return baseline


def _failure(exc: Exception, n: int, n_edges: int, args: dict, baseline: int) -> dict:
    """The row of a call that raised: out of memory (with the bytes asked for, when torch says), or an error."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ValueError):  # e.g. a molecules-only model given a periodic cell
        return {"status": "not applicable", "n_atoms": n, "detail": text[:300]}
    asked = re.search(r"allocate (\d+) bytes", text)
    if is_out_of_memory(text) or isinstance(exc, MemoryError):
        return {"status": "out of memory", "n_atoms": n, "n_edges": n_edges,
                "requested_bytes": int(asked.group(1)) if asked else None,
                "memory_limit_bytes": args["memory_limit_bytes"], "baseline_memory_mb": baseline / 2**20,
                "detail": text.splitlines()[0][:300]}
    return {"status": "error", "n_atoms": n, "detail": text.splitlines()[0][:300]}


def _worker(args: dict) -> dict:
    import resource

    import torch

    from ..errors import DataError
    from ..graph.batch import collate, graph_of

    pot, dtype, kept = _load(args)
    structure = _read_system(args["system"])
    n = structure.n_atoms
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
    baseline = _cap_address_space(args, pot)
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
    except (RuntimeError, MemoryError, ValueError) as exc:
        return _failure(exc, n, int(len(graph.i)), args, baseline)
    timed = times[1:] or times  # only the warm-up call when it alone took longer than max_call_s: flagged
    median = statistics.median(timed)
    memory = {"peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "baseline_memory_mb": baseline / 2**20}  # resident set of the process (Linux ru_maxrss: KiB)
    if pot.device.type == "cuda":
        memory["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    md = _md_cost(pot, structure, args["md_steps"]) if args.get("md_steps") else {}
    return {"status": "ok", "n_atoms": n, "n_edges": int(len(graph.i)), "ms_per_step": median * 1e3,
            "us_per_atom_step": median * 1e6 / n, "neighbor_list_ms": statistics.median(nl_times) * 1e3,
            "calls": len(timed), "warm": len(times) > 1, **memory, "dtype": args["dtype"], "threads": torch.get_num_threads(),
            "device": args["device"], "freed_memory_kept": kept, "fast_path": pot.fast.state if pot.fast else "off",
            **md}


def _interleaved_worker(args: dict) -> dict:
    import resource

    import torch

    from ..graph.batch import collate, graph_of

    pot, dtype, kept = _load(args)
    structures = [_read_system(p) for p in args["systems"]]
    pot.check_elements(structures)  # the caller passes only systems this model has already been timed on
    order = sorted(range(len(structures)), key=lambda i: structures[i].n_atoms)
    graphs = [graph_of(s, pot.cutoff) for s in structures]
    batches = [collate([g], dtype=dtype, device=pot.device, labels=False) for g in graphs]
    baseline = _cap_address_space(args, pot)
    sync = torch.cuda.synchronize if pot.device.type == "cuda" else (lambda: None)
    calls = [[] for _ in structures]
    failed = {}
    for cycle in range(args["cycles"] + 1):  # cycle 0 warms every size up and is not kept
        for i in (order if cycle % 2 == 0 else order[::-1]):  # alternate: a drift within a cycle evens out
            if i in failed:
                continue
            try:
                sync()
                t0 = time.perf_counter()
                pot.compute(batches[i], forces=True)
                sync()
            except (RuntimeError, MemoryError, ValueError) as exc:
                failed[i] = _failure(exc, structures[i].n_atoms, int(len(graphs[i].i)), args, baseline)
                continue
            if cycle:
                calls[i].append((time.perf_counter() - t0) * 1e3)
    rows = []
    for i, s in enumerate(structures):
        if i in failed:
            rows.append(failed[i])
            continue
        rows.append({"status": "ok", "n_atoms": s.n_atoms, "n_edges": int(len(graphs[i].i)), "calls_ms": calls[i],
                     "fastest_ms": min(calls[i])})
    return {"status": "ok", "systems": rows, "cycles": args["cycles"], "dtype": args["dtype"],
            "threads": torch.get_num_threads(), "device": args["device"], "freed_memory_kept": kept,
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


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


def geometric_mean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def exponent_interval(sizes, calls, min_atoms: int = 0, level: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> list[float] | None:
    """Bootstrap interval of `fit_exponent` on per-size geometric means: each resample draws every size's calls
    with replacement. None with fewer than two sizes ≥ ``min_atoms``. Deterministic (fixed ``seed``)."""
    pts = [(n, np.asarray(c, dtype=float)) for n, c in zip(sizes, calls) if n >= min_atoms and len(c)]
    if len(pts) < 2:
        return None
    rng = np.random.default_rng(seed)
    x = np.log([n for n, _ in pts])
    slopes = [np.polyfit(x, [np.log(rng.choice(c, len(c))).mean() for _, c in pts], 1)[0] for _ in range(resamples)]
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(slopes, tail)), float(np.percentile(slopes, 100 - tail))]


if __name__ == "__main__":
    _args = json.loads(sys.argv[1])
    result = (_interleaved_worker if _args.get("mode") == "interleaved" else _worker)(_args)
    print(json.dumps(result))
