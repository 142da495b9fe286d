"""A Deep Potential package against its compressed copy on rMD17 aspirin: accuracy and cost (issue 29, item 3).

    OMP_NUM_THREADS=2 python benchmarks/dp_compress.py runs/rmd17_dp/model.safetensors [--calls 200]

Compresses the package (`ffspace.models.deep_potential.compress_package`: embedding nets → quintic tables), then on
all 1000 frames of rmd17_aspirin_test_01 gives both packages' force MAE and their largest difference, and times one
energy + forces call on test frame 0 (float32, eager autograd; with ``--compile`` also ``fast=True``, the
torch.compile'd graph), calls alternating between the variants, median. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    from ffspace.data.readers import read_md17_npz
    from ffspace.evaluate import error_metrics, predict
    from ffspace.models.deep_potential import compress_package
    from ffspace.potential import Potential

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("package", type=Path)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rmd17")
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also time both through torch.compile (fast=True)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    test_file = args.data / "rmd17_aspirin_test_01.npz"
    if not test_file.exists():
        sys.exit(f"rMD17 data not found at {test_file}")
    test = read_md17_npz(test_file)
    with tempfile.TemporaryDirectory() as tmp:
        compressed = compress_package(args.package, Path(tmp) / "compressed.safetensors")
        variants = {"nets": Potential.load(args.package, dtype="float32"),
                    "compressed": Potential.load(compressed, dtype="float32")}
        if args.compile:
            variants.update({"nets, compiled": Potential.load(args.package, dtype="float32", fast=True),
                             "compressed, compiled": Potential.load(compressed, dtype="float32", fast=True)})
        preds = {k: predict(variants[k], test) for k in ("nets", "compressed")}
    metrics = {k: error_metrics(v, test) for k, v in preds.items()}
    df = abs(preds["nets"]["forces"] - preds["compressed"]["forces"]).max()
    batch = variants["nets"].batch([test[0]])
    times = {k: [] for k in variants}
    for pot in variants.values():  # warm-up (and compiling)
        pot.compute(batch)
    for _ in range(args.calls):
        for name, pot in variants.items():
            t0 = time.perf_counter()
            pot.compute(batch)
            times[name].append(time.perf_counter() - t0)
    print(f"\nrMD17 aspirin, {args.package}; {len(test)} test frames; max |ΔF| nets vs compressed {df:.2e} eV/Å\n")
    print("| variant | test F MAE (meV/Å) | ms per call | µs per atom-step | fast path |\n|---|---|---|---|---|")
    for name, pot in variants.items():
        ms = statistics.median(times[name]) * 1e3
        mae = metrics[name.split(",")[0]]["forces_mae_meV_A"]
        state = pot.fast.state if pot.fast else "off"
        print(f"| {name} | {mae:.1f} | {ms:.2f} | {ms * 1e3 / test[0].n_atoms:.0f} | {state} |")


if __name__ == "__main__":
    main()
