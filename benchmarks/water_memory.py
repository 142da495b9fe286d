"""Peak memory and cost of freshly built models on the replicated water boxes of `ffspace bench`, one call each.

    python benchmarks/water_memory.py --replicas 2 --models painn delta_mm_painn      # 1536 atoms
    python benchmarks/water_memory.py --replicas 3 --dtype float64                    # 5184 atoms, every model
    python benchmarks/water_memory.py --replicas 3 --models mace --repeats 3 --return-freed-memory
                                                                # timed with glibc's default allocator

Cost and memory do not depend on the weights, so the models are built (not trained) for 50 rMD17 aspirin
frames, with the settings of benchmarks/configs/bench_aspirin.yaml. Each call runs in its own process under the
bench's memory cap (`ffspace.bench.speed.measure`): the peak resident memory above the loaded model, and
"out of memory" with the bytes asked for when a size does not fit. With --repeats 0 only the first (cold) call
is made: a memory check, not a timing.

    python benchmarks/water_memory.py --replicas 2 --models painn --blocks 40000   # what chunking costs in time

    python benchmarks/water_memory.py --replicas 5 --models schnet --repeats 3 --order spatial   # cache locality

--order permutes the box's atoms before the call: "replica" (the bench's order: replica after replica of the
192-atom cell, so an atom's neighbours across a z face are n² × 192 indices away), "spatial" (sorted along a
Morton curve of 4 Å cells, so neighbours are near in memory) or "random" (no locality at all).

--blocks N instead times each model in this process, three calls in one piece and three in blocks of at most
N edges (ffspace.models.chunking), to show what recomputing the messages costs.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from ffspace.bench import speed, systems
from ffspace.config import resolve_data_path
from ffspace.data import read_dataset
from ffspace.potential.package import save_package
from ffspace.train import build_model_for_data

CONFIG = Path(__file__).resolve().parent / "configs" / "bench_aspirin.yaml"


def main(argv=None):
    models = {m["name"]: m["model"] for m in yaml.safe_load(CONFIG.read_text())["models"]}
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=2, help="n×n×n copies of the 192-atom water cell")
    p.add_argument("--models", nargs="+", default=[n for n in models if n not in ("graph_mm",)],
                   choices=sorted(models))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=0, help="timed calls after the first (0: memory only)")
    p.add_argument("--memory-limit-gb", type=float, default=None, help="cap (default: 85 %% of the machine)")
    p.add_argument("--blocks", type=int, default=None, help="time in one piece against blocks of this many edges")
    p.add_argument("--return-freed-memory", action="store_true",
                   help="time with the C library's default (freed large blocks go back to the kernel) instead of "
                        "keeping freed memory for reuse as the ffspace command does (ffspace.runtime)")
    p.add_argument("--order", default="replica", choices=["replica", "spatial", "random"],
                   help="atom order of the box (cache locality of the per-edge gathers and scatters)")
    args = p.parse_args(argv)
    data = read_dataset(resolve_data_path("../shared/data/rmd17/rmd17_aspirin_train_01.npz"))[:50]
    box = _reorder(systems.replicate(systems.water_cell()[0], args.replicas), args.order)
    if args.blocks:
        return _compare_blocks(models, args, data, box)
    with tempfile.TemporaryDirectory() as tmp:
        system = speed.save_system(box, Path(tmp) / "water.npz")
        print(f"| model | atoms | edges | dtype | peak above the loaded model (MB) | ms per call ({'cold' if not args.repeats else 'warm median'}) |")
        print("|---|---|---|---|---|---|")
        for name in args.models:
            package = save_package(Path(tmp) / f"{name}.safetensors", build_model_for_data(models[name], data))
            limit = int(args.memory_limit_gb * 2**30) if args.memory_limit_gb else None
            r = speed.measure(package, system, args.dtype, args.threads, max(args.repeats, 1),
                              max_call_s=1e-9 if not args.repeats else 300.0, memory_limit_bytes=limit,
                              keep_freed_memory=not args.return_freed_memory)
            if r["status"] == "ok":
                print(f"| {name} | {box.n_atoms} | {r['n_edges']} | {args.dtype} | "
                      f"{r['peak_memory_mb'] - r['baseline_memory_mb']:.0f} | {r['ms_per_step']:.0f} |", flush=True)
            else:
                asked = f", asked for {r['requested_bytes'] / 2**30:.1f} GiB" if r.get("requested_bytes") else ""
                print(f"| {name} | {box.n_atoms} | {r.get('n_edges', '')} | {args.dtype} | {r['status']}{asked} | |",
                      flush=True)


def _reorder(box, order: str):
    """The box with its atoms permuted (see --order)."""
    import numpy as np

    from ffspace.data import Structure

    n = box.n_atoms
    if order == "replica":
        return box
    if order == "random":
        perm = np.random.default_rng(0).permutation(n)
    else:
        frac = np.linalg.solve(box.cell.T, box.positions.T).T % 1.0
        cells = np.floor(frac * np.maximum(1, np.floor(np.linalg.norm(box.cell, axis=1) / 4.0))).astype(np.int64)
        code = np.zeros(n, dtype=np.int64)
        for bit in range(10):  # interleave the bits of the three cell indices (Morton / Z order)
            for axis in range(3):
                code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + axis)
        perm = np.argsort(code, kind="stable")
    return Structure(numbers=box.numbers[perm], positions=box.positions[perm], cell=box.cell, pbc=box.pbc,
                     source=f"{box.source}, {order} order")


def _compare_blocks(models, args, data, box):
    import time

    import torch

    from ffspace.graph.batch import batch_structures
    from ffspace.potential import Potential

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print("| model | atoms | calls in one piece (s) | calls in blocks of at most {} edges (s) |".format(args.blocks))
    print("|---|---|---|---|")
    for name in args.models:
        pot = Potential(build_model_for_data(models[name], data), dtype=dtype)
        batch = batch_structures([box], pot.cutoff, dtype=dtype, labels=False)
        times = {}
        for limit in (None, args.blocks):
            for module in pot.model.modules():  # the message-passing terms read it (chunking.edge_blocks)
                module.max_edges_per_block = limit
            times[limit] = []
            for _ in range(3):
                t0 = time.perf_counter()
                pot.compute(batch, forces=True)
                times[limit].append(time.perf_counter() - t0)
        print(f"| {name} | {box.n_atoms} | " + " | ".join(", ".join(f"{t:.2f}" for t in times[k])
                                                      for k in (None, args.blocks)) + " |", flush=True)


if __name__ == "__main__":
    main()
