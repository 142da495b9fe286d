"""What a prior beside the MACE-style C kernel costs an MD step (issue 30, stability by construction).

Times full force calls of `ffspace.md.MoleculeCopies` (what MD and the stability protocol call every step) on rMD17
aspirin for the MACE-style model of bench_aspirin (48 channels, 2 layers; weights as initialised: the cost does not
depend on them), alone and with a classical MM Δ prior or ZBL beside it, on the direct numpy path
(`ffspace.potential.direct_priors`) and on the batch path (priors by autograd on a torch batch), for one molecule
and for 10 copies at once.

    OMP_NUM_THREADS=2 python benchmarks/prior_md_cost.py [--steps 200]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ffspace.data import read_dataset
from ffspace.md.copies import MoleculeCopies
from ffspace.models import ZBL, ClassicalMM
from ffspace.models.base import build_model
from ffspace.models.composite import AtomicReference, Sum
from ffspace.potential import Potential

ASPIRIN = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "rmd17" / "rmd17_aspirin_test_01.npz"


def model(elements, prior: str | None):
    torch.manual_seed(0)
    mace = build_model({"family": "mace", "elements": elements, "channels": 48, "hidden_lmax": 1, "lmax": 2,
                        "layers": 2, "correlation": 3, "cutoff": 5.0, "avg_neighbors": 15.0})
    terms = [AtomicReference({z: 0.0 for z in elements}), mace]
    if prior == "mm":
        terms.insert(1, ClassicalMM(elements, cutoff=6.0))
    elif prior == "zbl":
        terms.append(ZBL(cutoff=3.0))
    return Sum(terms).eval()


def ms_per_call(pot, structure, copies: int, steps: int, direct: bool) -> float:
    rng = np.random.default_rng(0)
    c = MoleculeCopies.thermal(pot, structure, copies, 300.0, rng)
    if not direct:
        c._direct = False  # the batch path: a torch batch per call, priors by autograd
    start = c.state.positions.copy()
    for _ in range(5):
        c(start + 0.01 * rng.standard_normal(start.shape))
    moved = [start + 0.01 * rng.standard_normal(start.shape) for _ in range(steps)]
    t = time.perf_counter()
    for p in moved:
        c(p)
    return (time.perf_counter() - t) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ASPIRIN))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--one", nargs=3, metavar=("PRIOR", "PATH", "COPIES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    structure = read_dataset(args.data)[0]
    elements = sorted(set(structure.numbers.tolist()))
    if args.one:  # one measurement, in a process of its own (kernels and thread pools of other models not loaded)
        prior, path, copies = args.one
        pot = Potential(model(elements, None if prior == "none" else prior), dtype=torch.float32)
        print(ms_per_call(pot, structure, int(copies), args.steps, path == "direct"))
        return
    print(f"aspirin ({structure.n_atoms} atoms), {torch.get_num_threads()} torch threads, float32, "
          f"{args.steps} calls each, each row in a fresh process\n")
    print("| model | path | copies | ms per call | µs per atom-step |")
    print("|---|---|---|---|---|")
    for prior in ("none", "mm", "zbl"):
        for path in (("direct",) if prior == "none" else ("direct", "batch")):
            for copies in (1, 10):
                out = subprocess.run([sys.executable, __file__, "--data", args.data, "--steps", str(args.steps),
                                      "--one", prior, path, str(copies)], capture_output=True, text=True, check=True)
                ms = float(out.stdout.split()[-1])
                name = "MACE-style" + (f" + {prior.upper()} prior" if prior != "none" else "")
                where = "direct (numpy + C)" if path == "direct" else "batch (autograd prior)"
                print(f"| {name} | {where} | {copies} | {ms:.2f} | {ms * 1e3 / (copies * structure.n_atoms):.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
