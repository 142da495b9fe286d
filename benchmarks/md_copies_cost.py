"""The MD step of many copies of one molecule run as one batch (`ffspace.md.MoleculeCopies`: the bench's stability
runs, active learning's exploration), and what the model call is of it (issue 29, "The MD step without overhead").

    python benchmarks/md_copies_cost.py [--copies 1 4 10 20] [--steps 1000] [--threads 2] [--package P | --family F]

Langevin BAOAB at 300 K, 0.5 fs, on the first rMD17 aspirin frame (21 atoms), as `ffspace.bench.stability.survival`
steps it (integrator, one force call for all copies, the failure check of every copy each step), with the kept linear
ACE package fitted to aspirin (benchmarks/results/linear_ace/aspirin_ace_v2.safetensors, the default basis) or an
untrained model of a family's default size (``--family``; an untrained molecule may fly apart: the script stops). The model call is timed by wrapping the copies' force evaluation (linear ACE: its C
kernel from numpy after the first, checked, call); everything else (per-copy Verlet lists, pair selection,
integrator, failure checks) is the rest. Prints a markdown table: µs per step, per copy-step and per atom-step, and
the model call's share.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    from ffspace.bench.stability import _failed, covalent_bonds
    from ffspace.data import read_dataset
    from ffspace.md import Langevin, MoleculeCopies
    from ffspace.potential import Potential
    from ffspace.train import build_model_for_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", type=int, nargs="+", default=[1, 4, 10, 20])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--package", type=Path, default=ROOT / "benchmarks" / "results" / "linear_ace" /
                   "aspirin_ace_v2.safetensors", help="a trained model (default: the kept linear ACE on aspirin)")
    p.add_argument("--family", default=None, help="instead of --package: an untrained model of this family")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = read_dataset(args.data / "rmd17" / "rmd17_aspirin_train_01.npz")[:50]
    start = frames[0]
    if args.family:
        args.package = None
    if args.package:
        pot = Potential.load(args.package, dtype="float32")
    else:
        pot = Potential(build_model_for_data({"family": args.family, "cutoff": 5.0}, frames, seed=0), dtype="float32")
    bonds = covalent_bonds(start)
    d0 = np.linalg.norm(start.positions[bonds[:, 0]] - start.positions[bonds[:, 1]], axis=-1)
    print(f"rMD17 aspirin ({start.n_atoms} atoms), {args.family or args.package.name}, Langevin 300 K, {args.steps} steps, float32, "
          f"{args.threads} threads\n")
    print("| copies | step (µs) | per copy-step (µs) | per atom-step (µs) | model call | rest |")
    print("|---|---|---|---|---|---|")
    for n in args.copies:
        copies = MoleculeCopies.thermal(pot, start, n, 300.0, np.random.default_rng(0))
        integrator = Langevin(0.5, 300.0, 0.01, seed=1, groups=copies.groups())
        model_s = [0.0]
        integrator.step(copies.state, copies)  # the first step builds the direct evaluator (after the checked call)
        inner = copies._direct

        def timed(*a, inner=inner):
            t0 = time.perf_counter()
            try:
                return inner(*a)
            finally:
                model_s[0] += time.perf_counter() - t0
        if inner:
            copies._direct = timed
        else:  # no C kernel: time the batched `Potential.compute`
            real_evaluate = copies._evaluate

            def timed_evaluate(graphs):
                t0 = time.perf_counter()
                try:
                    return real_evaluate(graphs)
                finally:
                    model_s[0] += time.perf_counter() - t0
            copies._evaluate = timed_evaluate
        for _ in range(20):  # warm-up
            integrator.step(copies.state, copies)
        model_s[0] = 0.0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            integrator.step(copies.state, copies)
            if _failed(copies, bonds, d0, 0.5).any():
                raise RuntimeError("a copy failed: the benchmark needs intact molecules")
        wall = (time.perf_counter() - t0) / args.steps
        call = model_s[0] / args.steps
        print(f"| {n} | {1e6 * wall:.0f} | {1e6 * wall / n:.0f} | {1e6 * wall / (n * start.n_atoms):.1f} | "
              f"{1e6 * call:.0f} µs ({100 * call / wall:.0f} %) | {1e6 * (wall - call):.0f} µs "
              f"({100 * (wall - call) / wall:.0f} %) |", flush=True)


if __name__ == "__main__":
    main()
