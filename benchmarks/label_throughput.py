"""Labeling throughput: aspirin from SMILES, normal-mode sampling, GFN2-xTB labels, frames per second.

    python benchmarks/label_throughput.py --frames 1000 --workers 2

The clock covers everything: conformer, the xTB Hessian for normal-mode sampling, and labeling into a
fresh crash-safe store (each label fsync'ed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ffspace.reference import XTBLabeler
from ffspace.reference.inputs import from_smiles
from ffspace.reference.runner import label_structures
from ffspace.reference.sampling import normal_mode_sample
from ffspace.reference.store import LabelStore

ASPIRIN = "CC(=O)OC1=CC=CC=C1C(=O)O"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--temperature", type=float, default=500.0)
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="ffspace-label-bench-"))
    try:
        t0 = time.perf_counter()
        start = from_smiles(ASPIRIN)[0]
        labeler = XTBLabeler()
        frames = normal_mode_sample(start, labeler, args.frames, temperature=args.temperature, seed=0)
        t_sample = time.perf_counter() - t0
        data = label_structures(frames, labeler, LabelStore(folder / "store"), workers=args.workers,
                                progress=sys.stderr.isatty())
        total = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"aspirin ({start.n_atoms} atoms), GFN2-xTB, {len(data)} frames, {args.workers} worker(s)")
    print("| stage | seconds |\n|---|---|")
    print(f"| conformer + xTB Hessian + normal-mode sampling | {t_sample:.1f} |")
    print(f"| labeling (store fsync per label) | {total - t_sample:.1f} |")
    print(f"| total | {total:.1f} |")
    print(f"\nthroughput: {len(data) / total:.1f} frames/s overall, "
          f"{len(data) / (total - t_sample):.1f} frames/s labeling")


if __name__ == "__main__":
    main()
