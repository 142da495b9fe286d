"""Linear ACE on liquid water (issue 29, "Water as a second system"): fit on the DeePMD-kit water example, test
on its held-out system, and time the model against OpenMM TIP3P/PME on the same 24 000-atom box, in one run.

    OMP_NUM_THREADS=2 python benchmarks/water_ace.py [--model cutoff=5.5 fit_force_atoms=8] [--replicas 5]

Data: ../shared/data/deepmd_water (64 H₂O, periodic, eV and Å): data_0, data_1 and data_2 (320 frames) train, 20 of
them (seeded) validate and pick the ridge strength, data_3 (80 frames, never seen) is the test set, as the DeePMD
docs split it. Cost: frame 0 of data_3 repeated n×n×n (5³ × 192 = 24 000 atoms); ffspace's energy + forces call
(float32, eager: autograd forces; with --fast, the default fast path: linear ACE's C kernel), ffspace's full MD step
with it (--md-steps) and OpenMM's TIP3P/PME MD step (CPU platform), the calls the median of a few warm repeats,
2 threads. --package reuses a fitted package (the costs are timed anew). Writes JSON to <run-dir>/results.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    from ffspace.bench import openmm_reference
    from ffspace.bench.systems import replicate
    from ffspace.config import parse_value
    from ffspace.data import Dataset
    from ffspace.data.readers import read_deepmd
    from ffspace.data.structure import Structure
    from ffspace.evaluate import error_metrics, format_metrics, predict
    from ffspace.evaluate.speed import model_cost
    from ffspace.potential import Potential
    from ffspace.potential.package import versions
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "deepmd_water")
    p.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE", help="linear ACE settings")
    p.add_argument("--replicas", type=int, default=5, help="box repeats per axis for the cost (5: 24 000 atoms)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fast", action="store_true", help="time the fast path (linear ACE's C kernel) instead of eager "
                   "autograd")
    p.add_argument("--run-dir", type=Path, default=Path("runs/water_ace"))
    p.add_argument("--md-steps", type=int, default=10, help="also time this many full MD steps of ffspace on the box "
                   "(velocity Verlet 0.5 fs, Verlet list, blow-up monitor, nothing written; 0: skip)")
    p.add_argument("--package", type=Path, help="reuse this fitted package (skip the fit; the costs are timed anew)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.data / "data_3").exists():
        sys.exit(f"DeePMD water data not found at {args.data} (expected ../shared/data/deepmd_water next to the repo)")

    train_val = Dataset([s for k in range(3) for s in read_deepmd(args.data / f"data_{k}")], name="deepmd water 0-2")
    train, val = train_val.split([-1, 20], seed=0)
    test = read_deepmd(args.data / "data_3")
    # the linear ACE basis of the kept fit (the family's defaults before the larger aspirin basis of 2026-12-03, and
    # a plain ridge): reruns reproduce benchmarks/results/linear_ace/water*.json
    model_cfg = {"family": "ace", "cutoff": 5.5, "fit_force_atoms": 8, "n_rbf_3": 4, "lmax_3": 2, "degree_3": 6,
                 "ridge_power": 0.0}
    for item in args.model:
        key, _, value = item.partition("=")
        model_cfg[key] = parse_value(value)
    if args.package:
        from ffspace.potential.package import read_metadata

        package = args.package
        meta = read_metadata(package)
        model_cfg = meta.get("model", model_cfg)
        extra = meta.get("extra") or {}
        summary = {"reused_package": str(package), "ridge": extra.get("ridge"), "val": extra.get("val")}
    else:
        model = build_model_for_data(model_cfg, train, seed=0)
        summary = Trainer(model, train, val, TrainConfig(progress=sys.stderr.isatty()), run_dir=args.run_dir).fit()
        package = args.run_dir / "model.safetensors"
    args.run_dir.mkdir(parents=True, exist_ok=True)
    pot = Potential.load(package, dtype="float32", fast="auto" if args.fast else False)
    metrics = error_metrics(predict(pot, test), test)

    first = test[0]
    box = replicate(Structure(numbers=first.numbers, positions=first.positions, cell=first.cell, pbc=True,
                              source=first.source), args.replicas)
    t0 = time.perf_counter()
    ours = model_cost(pot, box, repeats=3, warmup=1)
    ours["fast_path"] = pot.fast.state if pot.fast else "off"
    ours["wall_s"] = time.perf_counter() - t0
    if args.md_steps:
        from ffspace.md.simulation import run_md

        kw = dict(ensemble="nve", bond_tolerance=None, min_distance=0.1, max_force=1e4)
        run_md(pot, box, steps=2, **kw)  # warm-up (and the fast path's first-call check)
        t0 = time.perf_counter()
        md = run_md(pot, box, steps=args.md_steps, **kw)
        ours["md_ms_per_step"] = (time.perf_counter() - t0) / args.md_steps * 1e3
        ours["md_status"] = md.status
    reference = openmm_reference.water_cost(box, threads=args.threads, steps=20, repeats=3) \
        if openmm_reference.available() else {"status": "OpenMM not installed"}
    results = {"benchmark": "water_ace", "model": model_cfg, "fit": summary, "test_data_3": metrics,
               "n_train": len(train), "n_val": len(val), "n_test": len(test), "box_atoms": box.n_atoms,
               "ace_cost": ours, "openmm_tip3p_pme": reference, "threads": args.threads,
               "machine": platform.platform(), "versions": versions(),
               "command": "python benchmarks/water_ace.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    (args.run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))

    fitted = (f"fitted in {summary['time_s'] / 60:.1f} min" if "time_s" in summary
              else f"fit reused from {summary['reused_package']}")
    print(f"\nDeePMD water: {len(train)} train / {len(val)} val (data_0-2) / {len(test)} test (data_3); linear ACE "
          f"{fitted}; test: {format_metrics(metrics)}\n")
    print(f"| {box.n_atoms}-atom water box, {args.threads} threads | ms per step | µs per atom-step | × OpenMM |")
    print("|---|---|---|---|")
    omm = reference.get("ms_per_step")
    print(f"| ffspace linear ACE (energy + forces, float32, fast path {ours['fast_path']}) | {ours['ms_per_step']:.0f} | "
          f"{ours['us_per_atom_step']:.2f} | {ours['ms_per_step'] / omm:.1f} |" if omm else
          f"| ffspace linear ACE | {ours['ms_per_step']:.0f} | {ours['us_per_atom_step']:.2f} | – |")
    if "md_ms_per_step" in ours:
        md_ms = ours["md_ms_per_step"]
        print(f"| ffspace MD step with it (velocity Verlet, Verlet list, monitor) | {md_ms:.0f} | "
              f"{md_ms * 1e3 / box.n_atoms:.2f} | " + (f"{md_ms / omm:.1f} |" if omm else "– |"))
    if omm:
        print(f"| OpenMM TIP3P/PME MD step | {omm:.0f} | {reference['us_per_atom_step']:.2f} | 1 |")
    print(f"\nresults: {args.run_dir / 'results.json'}")


if __name__ == "__main__":
    main()
