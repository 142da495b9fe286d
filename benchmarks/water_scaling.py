"""Re-time the trained models of a `ffspace bench` run on its water boxes, every size in turn in one process
(`ffspace.bench.speed.measure_interleaved`), and print each model's cost per size (geometric mean of the calls)
and its exponent over the sizes ≥ 3000 atoms with a 95 % bootstrap interval: the same statistic as the bench's
water table, on fresh calls.

    OMP_NUM_THREADS=2 python benchmarks/water_scaling.py runs/bench_aspirin --models mm ani schnet painn mace \\
        delta_mm_painn --cycles 4 --dtype float32

The run folder must hold the trained models (`<run>/<dataset>/<model>/train/model.safetensors`) and the boxes
(`<run>/systems/water_<atoms>.npz`), as `ffspace bench` leaves them.

    python benchmarks/water_scaling.py --estimators benchmarks/results/bench_aspirin/report.json

times nothing: from a bench report's calls it prints each line's exponent ≥ 3000 atoms by three statistics of
the calls (geometric mean, as reported; fastest call; the median of the process per size), and the ratio of the
fastest call to the median of the calls at each size, averaged over every line timed there.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from ffspace.bench import speed


def estimators(report: Path) -> None:
    """The exponent of every water line of a bench report by three statistics of its calls."""
    water = json.loads(report.read_text())["water"]
    print("| model | dtype | geometric mean (reported) | fastest call | median of the process per size |")
    print("|---|---|---|---|---|")
    ratios = {}
    for name, per_dtype in water["models"].items():
        for dtype, d in per_dtype.items():
            ok = [r for r in d["rows"] if r["status"] == "ok" and r.get("interleaved_calls_ms")]
            if len(ok) < 2:
                continue
            atoms = [r["n_atoms"] for r in ok]
            by = [speed.fit_exponent(atoms, [r[key] for r in ok], 3000)
                  for key in ("ms_per_step", "fastest_ms", "single_process_ms_per_step")]
            print(f"| {name} | {dtype} | " + " | ".join("—" if x is None else f"{x:.2f}" for x in by) + " |")
            for r in ok:
                ratios.setdefault(r["n_atoms"], []).append(r["fastest_ms"] / statistics.median(r["interleaved_calls_ms"]))
    print("\nfastest call / median of the calls, mean over the lines timed at each size:")
    for n, v in sorted(ratios.items()):
        print(f"  {n} atoms: {statistics.mean(v):.3f} ({len(v)} lines, {min(v):.2f}–{max(v):.2f})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?", help="a `ffspace bench` output folder")
    ap.add_argument("--estimators", type=Path, metavar="REPORT_JSON", help="compare statistics of a report's calls")
    ap.add_argument("--models", nargs="+")
    ap.add_argument("--dataset", default=None, help="default: the run's only dataset folder")
    ap.add_argument("--cycles", type=int, default=4, help="timed cycles after a warm-up cycle")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.estimators:
        estimators(args.estimators)
        return 0
    if args.run is None or not args.models:
        ap.error("give a run folder and --models (or --estimators REPORT_JSON)")
    boxes = sorted((args.run / "systems").glob("water_*.npz"), key=lambda p: int(re.search(r"\d+", p.stem).group()))
    if not boxes:
        sys.exit(f"no water boxes in {args.run / 'systems'}: run `ffspace bench` on it first")
    folders = [d for d in args.run.iterdir() if d.is_dir() and (d / args.models[0] / "train").is_dir()]
    dataset = args.run / args.dataset if args.dataset else (folders[0] if len(folders) == 1 else None)
    if dataset is None:
        sys.exit(f"say which dataset with --dataset (found {[d.name for d in folders]})")
    print(f"| model | {' | '.join(p.stem.split('_')[1] + ' atoms (ms)' for p in boxes)} | exponent ≥ 3000 | 95 % interval |")
    print("|---|" + "---|" * (len(boxes) + 2))
    for name in args.models:
        package = dataset / name / "train" / "model.safetensors"
        if not package.exists():
            sys.exit(f"{package} does not exist (model {name!r} not trained in {dataset})")
        result = speed.measure_interleaved(package, boxes, args.dtype, args.threads, args.cycles)
        if result["status"] != "ok":
            print(f"| {name} | {result['status']}: {result.get('detail', '')} |", flush=True)
            continue
        rows = result["systems"]
        ok = [r for r in rows if r["status"] == "ok"]
        means = {r["n_atoms"]: speed.geometric_mean(r["calls_ms"]) for r in ok}
        x = speed.fit_exponent(list(means), list(means.values()), 3000)
        ci = speed.exponent_interval(list(means), [r["calls_ms"] for r in ok], 3000)
        cells = [f"{means[r['n_atoms']]:.4g}" if r["status"] == "ok" else r["status"] for r in rows]
        print(f"| {name} | {' | '.join(cells)} | {x:.2f} | {ci[0]:.2f}–{ci[1]:.2f} |" if x is not None and ci
              else f"| {name} | {' | '.join(cells)} | — | — |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
