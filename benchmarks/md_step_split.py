"""Where an MD step's time goes, for one small molecule (issue 29, "The MD step without overhead").

    python benchmarks/md_step_split.py [--steps 400] [--threads 2] [--data ../shared/data] [--families ace mace ...]

Runs ``run_md`` (Langevin 300 K, 0.5 fs, float32, thermo every step, trajectory every 10 steps and checkpoints
every 500 into a temporary folder: the `ffspace md` defaults) on the first rMD17 aspirin frame (21 atoms) with
untrained models of the bench_aspirin sizes (cost does not depend on the weights), and times each part of the
step by wrapping it: the model call (`Potential.compute`: energy and forces, by autograd or the family's fast path), the neighbour list
(Verlet list with a 1 Å skin), building the batch (`StructureBatcher`), copying forces back to numpy, the blow-up monitor,
writing (thermo, trajectory, checkpoints) and the integrator with everything else (the rest of the wall time).
Prints a markdown table in µs per step and per cent of the step.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "mm": {"family": "mm", "cutoff": 6.0},
    "schnet": {"family": "schnet", "features": 128, "layers": 3, "cutoff": 5.0},
    "painn": {"family": "painn", "features": 128, "layers": 3, "cutoff": 5.0},
    "mace": {"family": "mace", "channels": 48, "hidden_lmax": 1, "lmax": 2, "layers": 2, "correlation": 3,
             "cutoff": 5.0},
    "ace": {"family": "ace", "cutoff": 5.0},  # linear ACE (its C kernel: the default fast path, as `ffspace md` runs it)
}
PARTS = ["model call", "neighbour list", "graph and batch", "forces to numpy", "monitor", "writing"]


@contextlib.contextmanager
def _timed(owner, name: str, part: str, clock: dict):
    """Replace ``owner.name`` by a wrapper that adds its wall time to ``clock[part]``."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock[part] += time.perf_counter() - t0

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def split(potential, start, steps: int) -> dict:
    """Seconds per part of ``steps`` MD steps, and the wall time."""
    import ffspace.md.simulation as sim
    from ffspace.graph.neighbors import VerletList
    from ffspace.md.monitor import BlowUpMonitor
    from ffspace.md.output import MDOutput
    from ffspace.potential.fast import FastForces

    clock = defaultdict(float)
    real_direct, direct_calls = FastForces.direct, []

    def timed_direct(self, *args):  # linear ACE's C kernel called from numpy: a model call too
        evaluate = real_direct(self, *args)
        if evaluate is None:
            return None

        def timed(*a):
            direct_calls.append(1)
            t0 = time.perf_counter()
            try:
                return evaluate(*a)
            finally:
                clock["model call"] += time.perf_counter() - t0
        return timed

    with contextlib.ExitStack() as stack:
        stack.enter_context(_timed(potential, "compute", "model call", clock))
        stack.callback(setattr, FastForces, "direct", real_direct)
        FastForces.direct = timed_direct
        stack.enter_context(_timed(VerletList, "update", "neighbour list", clock))
        stack.enter_context(_timed(sim.StructureBatcher, "__call__", "graph and batch", clock))
        stack.enter_context(_timed(BlowUpMonitor, "check", "monitor", clock))
        for name in ("record", "step_done", "open", "close"):
            stack.enter_context(_timed(MDOutput, name, "writing", clock))
        # forces to numpy: what PotentialForces does after the model call, measured on the same call's output
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            result = sim.run_md(potential, start, steps=steps, ensemble="nvt", temperature=300.0, out_dir=out,
                                bond_tolerance=None, min_distance=0.1, max_force=1e4)
            wall = time.perf_counter() - t0
    if result.status != "completed":
        raise RuntimeError(f"MD {result.status}: {result.report}")
    batch = potential.batch([start])
    out = potential.compute(batch, forces=True)
    t0 = time.perf_counter()
    for _ in range(200):
        out["forces"].double().cpu().numpy()
    # steps through `Potential.compute` convert torch forces to numpy; the direct kernel returns numpy already
    clock["forces to numpy"] = (time.perf_counter() - t0) / 200 * (steps + 1 - len(direct_calls))
    clock["wall"] = wall
    return clock


def main(argv=None):
    from ffspace.data import read_dataset
    from ffspace.potential import Potential
    from ffspace.train import build_model_for_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--families", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = read_dataset(args.data / "rmd17" / "rmd17_aspirin_train_01.npz")[:50]
    start = frames[0]
    print(f"rMD17 aspirin ({start.n_atoms} atoms), {args.steps} Langevin steps, float32, {args.threads} threads; "
          "µs per step (% of the step)\n")
    print("| model | step | " + " | ".join(PARTS) + " | integrator and rest |")
    print("|---|---|" + "---|" * (len(PARTS) + 1))
    for name in args.families:
        config = MODELS[name]
        pot = Potential(build_model_for_data(config, frames, seed=0), dtype="float32")
        split(pot, start, 20)  # warm-up
        c = split(pot, start, args.steps)
        n = args.steps
        rest = c["wall"] - sum(c[k] for k in PARTS)
        cells = [f"{1e6 * c[k] / n:.0f} ({100 * c[k] / c['wall']:.0f} %)" for k in PARTS]
        print(f"| {name} | {1e6 * c['wall'] / n:.0f} | " + " | ".join(cells) +
              f" | {1e6 * rest / n:.0f} ({100 * rest / c['wall']:.0f} %) |")


if __name__ == "__main__":
    main()
