"""Cost of one committee MD step for a batch of molecule copies (the exploration step of active learning).

    OMP_NUM_THREADS=2 python benchmarks/committee_md_cost.py runs/al_bench/active_diverse/round_05/committee \\
        runs/al_bench/test.extxyz --copies 4 16 --threads 1 2

Times Langevin steps of ``--copies`` copies of the first frame of STRUCTURES, driven by the committee in
COMMITTEE_DIR (``member_*/model.safetensors``), at each thread count; prints ms per step and per copy-step.
Exploration used to run one temperature's 4 seeds per batch; it now runs all temperatures' seeds in one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ffspace.active import Committee
from ffspace.data.readers import read_extxyz
from ffspace.md.copies import MoleculeCopies
from ffspace.md.integrators import Langevin


def step_cost(committee, start, copies: int, steps: int, warmup: int = 20) -> float:
    batch = MoleculeCopies.thermal(committee, start, copies, 300.0, np.random.default_rng(0))
    integrator = Langevin(0.5, 300.0, 0.01, seed=0, groups=batch.groups())
    for _ in range(warmup):
        integrator.step(batch.state, batch)
    t = time.perf_counter()
    for _ in range(steps):
        integrator.step(batch.state, batch)
    return (time.perf_counter() - t) / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("committee_dir", type=Path)
    p.add_argument("structures", type=Path, help="extxyz file; its first frame is the molecule")
    p.add_argument("--copies", type=int, nargs="+", default=[4, 16])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=200)
    args = p.parse_args(argv)
    paths = sorted(args.committee_dir.glob("member_*/model.safetensors"))
    if len(paths) < 2:
        raise SystemExit(f"{args.committee_dir}: expected member_*/model.safetensors (at least 2), found {len(paths)}")
    committee = Committee.load(paths)
    start = read_extxyz(args.structures)[0]
    print(f"{len(paths)}-member committee, {start.n_atoms} atoms, {args.steps} Langevin steps after 20 warm-up steps")
    print("| threads | copies | ms per step | ms per copy-step |")
    print("|---|---|---|---|")
    before = torch.get_num_threads()
    try:
        for threads in args.threads:
            torch.set_num_threads(threads)
            for n in args.copies:
                dt = step_cost(committee, start, n, args.steps)
                print(f"| {threads} | {n} | {dt * 1e3:.1f} | {dt * 1e3 / n:.2f} |")
    finally:
        torch.set_num_threads(before)


if __name__ == "__main__":
    main()
