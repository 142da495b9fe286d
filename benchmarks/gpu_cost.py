"""What a trained ffspace package costs on a GPU: one molecule's MD step, many copies batched, and water boxes up to
~100 000 atoms (the CPU figures beside them are in docs/benchmarks.md; run the same script with ``--device cpu``).

    python benchmarks/gpu_cost.py [--package benchmarks/results/bench_aspirin/aspirin/mace/train/model.safetensors]
        [--frame aspirin.extxyz] [--device cuda] [--dtype float32] [--copies 1 10 100 1000] [--replicas 1 2 3 5 8]

1. ``run_md`` (velocity Verlet 0.5 fs, Verlet list, blow-up monitor, nothing written): 500 steps after 100 warm-up
   steps on the first frame of ``--frame`` (default: rMD17 aspirin test frame 0 from ../shared/data).
2. `MoleculeCopies` (the stability protocol's batch): one force call for n copies at 300 K positions, median of 20
   calls after 3 warm-ups.
3. Water: the 192-atom water cell (`ffspace.bench.systems.water_cell`) replicated r×r×r, one energy + forces call
   with the graph built beforehand (as between Verlet-list rebuilds), median of 10 calls after 2 warm-ups, and the
   device's peak memory.
Every call is synchronised (``torch.cuda.synchronize``) before the clock is read. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PACKAGE = ROOT / "benchmarks" / "results" / "bench_aspirin" / "aspirin" / "mace" / "train" / "model.safetensors"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(call, device: str, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        call()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def _first_frame(path: Path | None):
    from ffspace.data import read_dataset

    if path is None:
        path = ROOT.parent / "shared" / "data" / "rmd17" / "rmd17_aspirin_test_01.npz"
        if not path.exists():
            sys.exit(f"no --frame given and {path} is absent")
    return read_dataset(path)[0]


def md_step(pot, start, device: str) -> float:
    from ffspace.md.simulation import run_md

    kwargs = dict(ensemble="nve", temperature=300.0, timestep_fs=0.5, bond_tolerance=None)
    run_md(pot, start, steps=100, **kwargs)
    _sync(device)
    t0 = time.perf_counter()
    result = run_md(pot, start, steps=500, **kwargs)
    _sync(device)
    if result.status != "completed":
        raise RuntimeError(f"MD did not complete: {result.report}")
    return (time.perf_counter() - t0) / 500 * 1000


def copies_call(pot, start, n: int, device: str) -> float:
    from ffspace.md.copies import MoleculeCopies

    copies = MoleculeCopies.thermal(pot, start, n, 300.0, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    positions = copies.state.positions + rng.normal(scale=0.02, size=copies.state.positions.shape)
    return _median_ms(lambda: copies(positions), device, repeats=20, warmup=3)


def water_call(pot, replicas: int, device: str) -> tuple[int, float, float]:
    from ffspace.bench import systems
    from ffspace.graph.batch import batch_structures

    base, _ = systems.water_cell("generated")
    box = systems.replicate(base, replicas)
    batch = batch_structures([box], pot.cutoff, dtype=pot.dtype).to(device=pot.device, dtype=pot.dtype)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    ms = _median_ms(lambda: pot.compute(batch, forces=True), device, repeats=10, warmup=2)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return box.n_atoms, ms, peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    p.add_argument("--frame", type=Path, default=None, help="a file ffspace reads; its first frame is the molecule")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--copies", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3, 5, 8])
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    from ffspace.potential import Potential

    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; package {args.package}; {args.dtype}\n")
    pot = Potential.load(args.package, dtype=args.dtype, device=args.device)
    start = _first_frame(args.frame)
    atoms = start.n_atoms

    ms = md_step(pot, start, args.device)
    print(f"| run_md, 1 molecule ({atoms} atoms) | ms per step | µs per atom-step |\n|---|---|---|\n"
          f"| {args.device} | {ms:.3f} | {ms * 1000 / atoms:.1f} |\n", flush=True)

    print("| copies | ms per call | µs per atom-step |\n|---|---|---|")
    for n in args.copies:
        ms = copies_call(pot, start, n, args.device)
        print(f"| {n} | {ms:.3f} | {ms * 1000 / (n * atoms):.2f} |", flush=True)

    print("\n| water atoms | ms per call | µs per atom-step | peak memory (GiB) |\n|---|---|---|---|")
    for r in args.replicas:
        try:
            n_atoms, ms, peak = water_call(pot, r, args.device)
        except torch.OutOfMemoryError as exc:
            print(f"| {192 * r**3} | out of memory: {str(exc)[:80]} | | |", flush=True)
            break
        print(f"| {n_atoms} | {ms:.2f} | {ms * 1000 / n_atoms:.3f} | {peak:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
