"""One model, two engines: µs per atom-step of an ffspace package in OpenMM (PythonForce) against ffspace's own MD,
in one process, on frame 0 of rMD17 aspirin (issue 32, acceptance 2).

    OMP_NUM_THREADS=2 python benchmarks/openmm_ml_cost.py \
        --package benchmarks/results/bench_aspirin/aspirin/mace/train/model.safetensors [--steps 500] [--rounds 3]

Both run velocity Verlet at 0.5 fs with the same package in float32 (OpenMM's VerletIntegrator on its CPU platform;
ffspace's `run_md`, NVE, nothing written, its default fast path) after a warm-up, alternating ``--rounds`` times;
each cost is the fastest round's. Prints a markdown row per engine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def openmm_ms(package, start, steps: int, dtype: str) -> float:
    import openmm
    from openmm import unit

    from ffspace.interfaces.openmm_ml import openmm_positions, openmm_system

    system = openmm_system(package, start, dtype=dtype)
    integrator = openmm.VerletIntegrator(0.0005 * unit.picoseconds)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(openmm_positions(start))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    integrator.step(100)  # warm-up (the fast path builds and checks itself on the first calls)
    t0 = time.perf_counter()
    integrator.step(steps)
    return (time.perf_counter() - t0) / steps * 1000


def ffspace_ms(package, start, steps: int, dtype: str) -> float:
    from ffspace.md.simulation import run_md
    from ffspace.potential import Potential

    pot = Potential.load(package, dtype=dtype)
    kwargs = dict(ensemble="nve", temperature=300.0, timestep_fs=0.5, bond_tolerance=None)
    run_md(pot, start, steps=100, **kwargs)
    t0 = time.perf_counter()
    run_md(pot, start, steps=steps, **kwargs)
    return (time.perf_counter() - t0) / steps * 1000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default=str(ROOT / "benchmarks/results/bench_aspirin/aspirin/mace/train/"
                                            "model.safetensors"))
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/rmd17/rmd17_aspirin_test_01.npz"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    from ffspace.data import read_dataset

    start = read_dataset(args.data)[0]
    best = {"OpenMM (PythonForce)": float("inf"), "ffspace run_md": float("inf")}
    for r in range(args.rounds):
        best["OpenMM (PythonForce)"] = min(best["OpenMM (PythonForce)"],
                                           openmm_ms(args.package, start, args.steps, args.dtype))
        best["ffspace run_md"] = min(best["ffspace run_md"], ffspace_ms(args.package, start, args.steps, args.dtype))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f} ms/step" for k, v in best.items()), file=sys.stderr)
    print(f"| engine | ms/step | µs/atom-step ({start.n_atoms} atoms, {args.dtype}) |\n|---|---|---|")
    for name, ms in best.items():
        print(f"| {name} | {ms:.3f} | {ms * 1000 / start.n_atoms:.1f} |")


if __name__ == "__main__":
    main()
