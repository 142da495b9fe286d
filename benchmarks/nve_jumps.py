"""Does a model conserve energy where MD breaks it? Hot NVE with every step's total energy (issue 30).

A model whose energy is discontinuous somewhere (a prior whose topology switches, a cutoff without a smooth envelope)
pumps energy into an NVE trajectory at each crossing: the total energy jumps in one step instead of fluctuating by
meV. This script starts ``--seeds`` copies of a bench config's start structure (its first test frame) with
Maxwell–Boltzmann velocities at ``--temperature`` K, runs velocity-Verlet NVE (0.5 fs) with the protocol's failure
rules, and prints per copy: when it failed and how, the largest one-step change of its total energy, when that came,
and the spread of the total energy before the failure.

    OMP_NUM_THREADS=2 python benchmarks/nve_jumps.py benchmarks/configs/bench_stability_al_3bpa.yaml \\
        --package benchmarks/results/bench_stability_al_3bpa_108/3bpa/mace_mm_morse_al/train/model.safetensors \\
        --temperature 2400 --time-ps 10
"""

from __future__ import annotations

import argparse

import numpy as np

from ffspace import units
from ffspace.bench.config import load_bench_config
from ffspace.bench.runner import splits
from ffspace.md import failure as rules
from ffspace.md.copies import MoleculeCopies
from ffspace.md.integrators import VelocityVerlet
from ffspace.potential import Potential
from ffspace.progress import progress as progress_bar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a bench config: its first dataset's first test frame is the start")
    ap.add_argument("--package", required=True)
    ap.add_argument("--temperature", type=float, default=2400.0,
                    help="K of the starting velocities (NVE shares them with the potential energy: ~half remains)")
    ap.add_argument("--time-ps", type=float, default=10.0)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = load_bench_config(args.config)
    c = cfg.stability
    _, _, test = splits(cfg.datasets[0])
    start = test[0]
    pot = Potential.load(args.package, dtype="float64")
    copies = MoleculeCopies.thermal(pot, start, args.seeds, args.temperature, np.random.default_rng(args.seed))
    bonds, d0 = rules.start_bonds(start)
    integrator = VelocityVerlet(c.timestep_fs)
    steps = int(round(args.time_ps * units.ps / c.timestep_fs))
    totals = np.full((steps + 1, args.seeds), np.nan)
    totals[0] = copies.energies + copies.kinetic()
    failed, why = np.full(args.seeds, -1), [None] * args.seeds
    for step in progress_bar(range(steps), desc=f"NVE {args.seeds} copies", log_every_s=60.0):
        integrator.step(copies.state, copies)
        total = copies.energies + copies.kinetic()
        alive = failed < 0
        totals[step + 1, alive] = total[alive]
        bad = rules.failed(copies.positions(), copies.energies, bonds, d0, c.bond_tolerance, c.min_distance) & alive
        for k in np.nonzero(bad)[0]:
            failed[k] = step + 1
            why[k] = rules.why(copies.positions()[k], copies.energies[k], start.numbers, bonds, d0, c.bond_tolerance)
        if (failed >= 0).all():
            break
    ps = c.timestep_fs * units.fs / units.ps  # one step in ps
    print(f"NVE from {args.temperature:g} K, {args.seeds} copies × {args.time_ps:g} ps, {c.timestep_fs:g} fs, "
          f"{args.package}")
    print("| copy | failed | largest one-step change of the total energy (meV) | at (ps) | total energy spread "
          "before (meV, 5–95 %) |")
    print("|---|---|---|---|---|")
    for k in range(args.seeds):
        e = totals[:, k][np.isfinite(totals[:, k])]
        steps_k = np.diff(e)
        at = int(np.argmax(np.abs(steps_k))) if len(steps_k) else 0
        what = "no" if failed[k] < 0 else f"{rules.describe_failure({**(why[k] or {}), 'time_ps': failed[k] * ps})}"
        spread = np.percentile(e, 95) - np.percentile(e, 5)
        print(f"| {k} | {what} | {steps_k[at] / units.meV:+.1f} | {(at + 1) * ps:.3f} | {spread / units.meV:.1f} |")


if __name__ == "__main__":
    main()
