"""How much of a model's single-molecule call is per-call overhead: the energy + forces call (and the energy alone)
per molecule, for one aspirin and for batches of them (issue 29: what a compiler could at most remove).

    python benchmarks/batch_cost.py [--family mace] [--batches 1 8 32] [--threads 2]

Untrained models of the bench_aspirin.yaml sizes (benchmarks/fast_path.py's table; cost does not depend on the
weights), eager, float32. In a large batch the per-call overhead is spread over many molecules: the per-molecule cost
there is the arithmetic of the implementation, and single-call cost / that is the most any removal of overhead (a
compiled graph, CUDA graphs) can gain. Median of 20 calls after 5 warm-ups; ms per molecule.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from fast_path import MODELS

    from ffspace.data import read_dataset
    from ffspace.potential import Potential
    from ffspace.train import build_model_for_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="mace", choices=list(MODELS))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = read_dataset(args.data / "rmd17" / "rmd17_aspirin_train_01.npz")[:max(args.batches)]
    model = build_model_for_data(MODELS[args.family], frames, seed=0)
    pot = Potential(model, fast=False)
    print(f"{args.family}, rMD17 aspirin, eager float32, {args.threads} threads; ms per molecule\n")
    print("| molecules per call | energy + forces | energy alone |\n|---|---|---|")
    for n in args.batches:
        batch = pot.batch(frames[:n])
        for _ in range(5):
            pot.compute(batch)
        full, energy = [], []
        for _ in range(20):
            t0 = time.perf_counter()
            pot.compute(batch)
            full.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            with torch.no_grad():
                pot.model(batch)
            energy.append(time.perf_counter() - t0)
        print(f"| {n} | {1e3 * statistics.median(full) / n:.2f} | {1e3 * statistics.median(energy) / n:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
