"""Does a model conserve energy where MD breaks it? Hot NVE, each copy's largest one-step energy change (issue 30).

A model whose energy is discontinuous somewhere (a prior whose topology switches, a cutoff without a smooth envelope)
pumps energy into an NVE trajectory at each crossing: the total energy jumps in one step instead of fluctuating by
meV. This script runs `ffspace.bench.stability.nve_drift` (velocity Verlet, the protocol's failure rules) on
``--seeds`` copies of a bench config's start structure (its first test frame) with Maxwell–Boltzmann velocities at
``--temperature`` K, and prints per copy: when it failed and how, the largest one-step change of its total energy,
when that came, and the geometry there (the most stretched bond and the closest unbonded pair, relative to
R_i + R_j: a topology rule perceives bonds below 1.2–1.35 ×).

    OMP_NUM_THREADS=2 python benchmarks/nve_jumps.py benchmarks/configs/bench_stability_al_3bpa.yaml \\
        --package benchmarks/results/bench_stability_al_3bpa_108/3bpa/mace_mm_morse_al/train/model.safetensors \\
        --temperature 2400 --time-ps 10
"""

from __future__ import annotations

import argparse
import json

from ffspace.bench import stability
from ffspace.bench.config import load_bench_config
from ffspace.bench.runner import splits
from ffspace.potential import Potential


def _pair(p: dict | None) -> str:
    if not p:
        return "—"
    i, j = p["atoms"]
    return f"{p['elements']} {i}–{j} {p['distance_A']:.3f} Å ({p['of_covalent_reach']:.3f} ×)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a bench config: its first dataset's first test frame is the start")
    ap.add_argument("--package", required=True)
    ap.add_argument("--temperature", type=float, default=2400.0,
                    help="K of the starting velocities (NVE shares them with the potential energy: ~half remains)")
    ap.add_argument("--time-ps", type=float, default=10.0)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args()
    cfg = load_bench_config(args.config)
    c = cfg.stability
    _, _, test = splits(cfg.datasets[0])
    pot = Potential.load(args.package, dtype="float64")
    r = stability.nve_drift(pot, test[0], args.temperature, args.seeds, args.time_ps, c.timestep_fs, seed=args.seed,
                            bond_tolerance=c.bond_tolerance, progress=True,
                            min_distance=c.min_distance)
    print(f"NVE from {args.temperature:g} K, {args.seeds} copies × {args.time_ps:g} ps, {c.timestep_fs:g} fs, "
          f"{args.package}")
    print("| copy | status | largest one-step change of the total energy (meV) | at (ps) | most stretched bond there "
          "| closest unbonded pair there |")
    print("|---|---|---|---|---|---|")
    for k in range(args.seeds):
        jump, at, geo = (r["largest_step_change_meV"][k], r["largest_step_change_at_ps"][k],
                         r["geometry_at_largest_change"][k] or {})
        print(f"| {k} | {r['per_seed_status'][k]} | {'—' if jump is None else f'{jump:+.1f}'} | "
              f"{'—' if at is None else f'{at:.4f}'} | {_pair(geo.get('most_stretched_bond'))} | "
              f"{_pair(geo.get('closest_unbonded'))} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({**r, "package": args.package, "config": args.config}, fh, indent=1)


if __name__ == "__main__":
    main()
