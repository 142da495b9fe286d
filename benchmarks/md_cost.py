"""Full MD steps of an ffspace model against classical MM in OpenMM, on the same molecule, in one run (issue 29,
acceptance 1: "costs ≤ 10× OpenMM's cost per atom-step ..., both timed as full MD steps").

    OMP_NUM_THREADS=2 python benchmarks/md_cost.py [--package benchmarks/results/linear_ace/aspirin_ace.safetensors]
        [--mm benchmarks/results/bench_aspirin/aspirin/graph_mm/train/model.safetensors] [--rounds 3] [--threads 2]

In one process, on frame 0 of rmd17_aspirin_test_01 (21 atoms), alternating ``--rounds`` times:
- OpenMM: the graph-learned MM package exported to OpenMM standard forces (the bench's MM reference), CPU platform,
  velocity Verlet 0.5 fs, median of 5 × 500 steps after 500 warm-up steps (`ffspace.bench.openmm_reference`), with
  ``--threads`` threads and with one (the faster of the two is the reference: a 21-atom system gains nothing from
  threads);
- ffspace: `run_md` with the package (float32), velocity Verlet 0.5 fs with the Verlet neighbour list and the blow-up
  monitor, nothing written (as OpenMM writes nothing), ``--steps`` steps after a 200-step warm-up: with the default
  fast path (`Potential(fast="auto")`: linear ACE's C kernel) and eagerly (autograd);
- and `ffspace md`'s default Langevin run with its outputs (thermo every step, trajectory every 10) for reference.
Each cost is the fastest round's; glibc keeps freed memory as in `ffspace bench`. The package's accuracy is measured in the same run on all 1000 test frames
(its training is reused, as the issue allows). Writes JSON to ``--out`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def md_step_ms(potential, start, steps: int, ensemble: str, out_dir=None) -> float:
    """ms per step of ``steps`` steps of `run_md` (after a 200-step warm-up run)."""
    from ffspace.md.simulation import run_md

    kwargs = dict(ensemble=ensemble, temperature=300.0, bond_tolerance=None, min_distance=0.1, max_force=1e4)
    run_md(potential, start, steps=200, **kwargs)
    t0 = time.perf_counter()
    result = run_md(potential, start, steps=steps, out_dir=out_dir, **kwargs)
    wall = time.perf_counter() - t0
    if result.status != "completed":
        raise RuntimeError(f"MD {result.status}: {result.report}")
    return wall / steps * 1e3


def main(argv=None):
    from ffspace.bench import openmm_reference
    from ffspace.data.readers import read_md17_npz
    from ffspace.evaluate import error_metrics, predict
    from ffspace.potential import Potential
    from ffspace.potential.package import versions

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", type=Path, default=ROOT / "benchmarks/results/linear_ace/aspirin_ace.safetensors")
    p.add_argument("--mm", type=Path, default=ROOT / "benchmarks/results/bench_aspirin/aspirin/graph_mm/train/"
                                                    "model.safetensors", help="graph-learned MM package for OpenMM")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rmd17")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/md_cost.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ffspace import runtime

    kept = runtime.keep_freed_memory()  # as `ffspace bench` runs (its default), for OpenMM and ffspace alike
    test_file = args.data / "rmd17_aspirin_test_01.npz"
    if not test_file.exists():
        sys.exit(f"rMD17 data not found at {test_file} (expected ../shared/data/rmd17 next to the repo)")
    if not openmm_reference.available():
        sys.exit("OpenMM is not installed (pip install openmm): it is the reference of this benchmark")
    test = read_md17_npz(test_file)
    start = test[0]
    n = start.n_atoms

    fast = Potential.load(args.package, dtype="float32")
    eager = Potential.load(args.package, dtype="float32", fast=False)
    metrics = error_metrics(predict(fast, test), test)
    path = ("C kernel (linear ACE)" if fast.fast and fast.fast.state != "off" and fast.fast.native
            else (fast.fast.state if fast.fast else "eager"))
    print(f"{args.package.name} on {len(test)} test frames: F MAE {metrics['forces_mae_meV_A']:.1f} meV/Å, "
          f"E MAE {metrics['energy_mae_meV']:.1f} meV (fast path: {path})", file=sys.stderr)
    rows = {"openmm_mm": [], "openmm_mm_1_thread": [], "ffspace_fast_nve": [], "ffspace_eager_nve": [], "ffspace_fast_langevin_written": []}
    for r in range(args.rounds):
        rows["openmm_mm"].append(openmm_reference.molecule_cost(args.mm, start, args.threads)["ms_per_step"])
        rows["openmm_mm_1_thread"].append(openmm_reference.molecule_cost(args.mm, start, 1)["ms_per_step"])
        rows["ffspace_fast_nve"].append(md_step_ms(fast, start, args.steps, "nve"))
        rows["ffspace_eager_nve"].append(md_step_ms(eager, start, max(args.steps // 5, 200), "nve"))
        with tempfile.TemporaryDirectory() as out:
            rows["ffspace_fast_langevin_written"].append(md_step_ms(fast, start, args.steps, "nvt", out))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.3f} ms" for k, v in rows.items()), file=sys.stderr)
    best = {k: min(v) for k, v in rows.items()}
    mm = min(best["openmm_mm"], best["openmm_mm_1_thread"])  # the reference: OpenMM at its fastest
    results = {"benchmark": "md_cost", "package": str(args.package), "mm_package": str(args.mm), "n_atoms": n,
               "molecule": "rMD17 aspirin, test frame 0", "threads": args.threads, "steps": args.steps,
               "rounds": args.rounds, "freed_memory_kept": kept, "test_metrics": metrics, "fast_path": path, "ms_per_step_rounds": rows,
               "ms_per_step": best, "us_per_atom_step": {k: v * 1e3 / n for k, v in best.items()},
               "times_openmm": {k: v / mm for k, v in best.items()}, "machine": platform.processor() or platform.machine(),
               "versions": versions(),
               "command": "python benchmarks/md_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"\nrMD17 aspirin ({n} atoms), {args.threads} threads, fastest of {args.rounds} rounds; linear ACE test F MAE "
          f"{metrics['forces_mae_meV_A']:.1f} meV/Å\n")
    print("| MD step | ms/step | µs/atom-step | × OpenMM MM |\n|---|---|---|---|")
    names = {"openmm_mm": f"OpenMM, graph-learned MM (velocity Verlet, {args.threads} threads)",
             "openmm_mm_1_thread": "OpenMM, graph-learned MM (velocity Verlet, 1 thread)",
             "ffspace_fast_nve": "ffspace md, linear ACE, fast path (velocity Verlet, nothing written)",
             "ffspace_eager_nve": "ffspace md, linear ACE, eager autograd (velocity Verlet, nothing written)",
             "ffspace_fast_langevin_written": "ffspace md, linear ACE, fast path (Langevin, thermo + trajectory written)"}
    for k, v in best.items():
        print(f"| {names[k]} | {v:.3f} | {v * 1e3 / n:.1f} | {v / mm:.1f} |")


if __name__ == "__main__":
    main()
