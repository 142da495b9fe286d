"""Linear ACE on water boxes: eager (autograd forces) against the fast path (hand-derived forces), one call each.

    OMP_NUM_THREADS=2 python benchmarks/ace_fast_path_water.py runs/water_ace/model.safetensors [--replicas 2 5]

The package is a water model from `benchmarks/water_ace.py`; the box is frame 0 of DeePMD water data_3 repeated
n×n×n (2: 1 536 atoms, 5: 24 000). Median of 3 warm calls per path (float32, 2 threads); the fast path's state
says whether its first-call check against the eager model accepted it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    from ffspace.bench.systems import replicate
    from ffspace.data.readers import read_deepmd
    from ffspace.data.structure import Structure
    from ffspace.evaluate.speed import model_cost
    from ffspace.potential import Potential

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", type=Path)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "deepmd_water" / "data_3")
    p.add_argument("--replicas", type=int, nargs="+", default=[2, 5])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    first = read_deepmd(args.data)[0]
    cell = Structure(numbers=first.numbers, positions=first.positions, cell=first.cell, pbc=True)
    print("| atoms | eager (ms/call) | fast path (ms/call) | fast path state |\n|---|---|---|---|")
    for n in args.replicas:
        box = replicate(cell, n)
        eager = model_cost(Potential.load(args.package, dtype="float32"), box, repeats=3, warmup=1)
        fast_pot = Potential.load(args.package, dtype="float32", fast=True)
        fast = model_cost(fast_pot, box, repeats=3, warmup=1)
        print(f"| {box.n_atoms} | {eager['ms_per_step']:.0f} | {fast['ms_per_step']:.0f} | {fast_pot.fast.state} |")


if __name__ == "__main__":
    main()
