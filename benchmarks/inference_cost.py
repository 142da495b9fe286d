"""Inference cost of trained model packages, measured side by side in one run (ratios are what count).

    python benchmarks/inference_cost.py runs/bench_aspirin_*/model.safetensors [--molecule aspirin]

One energy + forces call on frame 0 of rMD17 <molecule> test_01, float32, warm, median of 50, 2 threads,
graph built once (as in MD between Verlet-list rebuilds). Prints µs per atom-step and ms per step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ffspace.data import read_dataset
from ffspace.evaluate.speed import model_cost
from ffspace.potential import Potential
from ffspace.potential.package import read_metadata

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rmd17"


def describe(path) -> str:
    meta = read_metadata(path)["model"]
    terms = meta.get("terms", [meta])
    return " + ".join(t["family"] for t in terms if t["family"] != "reference")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("packages", nargs="+", type=Path)
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = read_dataset(args.data / f"rmd17_{args.molecule}_test_01.npz")[0]
    rows = []
    print(f"{args.molecule} ({s.n_atoms} atoms), energy + forces, float32, {args.threads} threads, warm median\n")
    print("| package | model | µs/atom-step | ms/step |\n|---|---|---|---|")
    for path in args.packages:
        cost = model_cost(Potential.load(path, dtype=torch.float32), s, repeats=50)
        rows.append({"package": str(path), "model": describe(path), **cost})
        print(f"| {path} | {rows[-1]['model']} | {cost['us_per_atom_step']:.0f} | {cost['ms_per_step']:.2f} |",
              flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
