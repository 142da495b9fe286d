"""Where a model's training and validation force errors sit: on the frames of one training file against the rest
(issue 30, acceptance 2: the 3BPA models trained on `train_300K` plus the active-learning labels).

The bench config's own split (its first dataset, `ffspace bench`'s seed and validation size) is rebuilt; each frame
of the training and validation sets is put in the group of the training file it came from (matched by positions),
and each package's force RMSE (meV/Å) is printed per set and group: a gap between training and validation error
that only one group shows is where that model runs short of data.

    python benchmarks/split_errors.py benchmarks/configs/bench_3bpa_acc2_seed1.yaml \\
        --package ours=benchmarks/results/bench_3bpa_acc2_seed1/3bpa/mace_mm_morse_64_xtb/train/model.safetensors \\
        --package mace-torch=benchmarks/results/bench_3bpa_acc2_seed1/3bpa/mace_torch_al/train/model.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np

from ffspace.bench import load_bench_config
from ffspace.bench.runner import splits
from ffspace.data.readers import read_dataset
from ffspace.potential import Potential


def _key(structure) -> bytes:
    return np.round(structure.positions, 5).tobytes()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a bench config; its first dataset is split as the bench splits it")
    ap.add_argument("--package", action="append", required=True, help="NAME=PATH of a model package (repeatable)")
    args = ap.parse_args()

    ds = load_bench_config(args.config).datasets[0]
    files = ds.train if isinstance(ds.train, list) else [ds.train]
    train, val, _ = splits(ds)
    origin = {}
    for path in files:
        for s in read_dataset(path, energy_key=ds.energy_key, forces_key=ds.forces_key):
            origin.setdefault(_key(s), path)
    print(f"{'package':<14} {'set':<6} {'all':>7}  " + "  ".join(f"{p.split('/')[-1]:>28}" for p in files))
    for spec in args.package:
        name, path = spec.split("=", 1)
        pot = Potential.load(path, dtype="float64")
        for label, subset in (("train", list(train)), ("val", list(val))):
            pred = pot(subset)["forces"]
            sq = np.array([((f - s.forces) ** 2).mean() for f, s in zip(pred, subset)])
            group = np.array([origin.get(_key(s), "?") for s in subset])
            cells = []
            for p in files:
                m = group == p
                cells.append(f"{1000 * np.sqrt(sq[m].mean()):7.1f} ({m.sum():3d} frames)" if m.any() else "–")
            print(f"{name:<14} {label:<6} {1000 * np.sqrt(sq.mean()):7.1f}  " + "  ".join(f"{c:>28}" for c in cells))


if __name__ == "__main__":
    main()
