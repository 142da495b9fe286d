"""Does ffspace's PySCF labeler reproduce a dataset's level of theory? Relabel a few of its frames, print the
force error and the energy difference per frame (issue 30: 3BPA's ωB97X/6-31G(d) before making hot test sets).

    OMP_NUM_THREADS=2 python benchmarks/check_level_of_theory.py ../shared/data/3bpa/train_300K.xyz \\
        --functional wb97x --basis 6-31G* --frames 0 250 --energy-key energy --forces-key forces
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ffspace.data.readers import read_dataset
from ffspace.reference.dft import PySCFLabeler
from ffspace.units import meV


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--functional", required=True)
    ap.add_argument("--basis", required=True)
    ap.add_argument("--frames", type=int, nargs="+", default=[0])
    ap.add_argument("--energy-key", default=None)
    ap.add_argument("--forces-key", default=None)
    ap.add_argument("--no-density-fit", action="store_true")
    args = ap.parse_args()
    data = read_dataset(args.dataset, energy_key=args.energy_key, forces_key=args.forces_key)
    labeler = PySCFLabeler(args.functional, args.basis, density_fit=not args.no_density_fit)
    print(f"{labeler.method} against {args.dataset}")
    print("| frame | force MAE (meV/Å) | max |ΔF| (meV/Å) | energy − dataset's (meV) | wall time (s) |")
    print("|---|---|---|---|---|")
    for k in args.frames:
        t0 = time.perf_counter()
        ours = labeler.label(data[k])
        df = ours.forces - data[k].forces
        print(f"| {k} | {np.abs(df).mean() / meV:.2f} | {np.abs(df).max() / meV:.1f} | "
              f"{(ours.energy - data[k].energy) / meV:.1f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
