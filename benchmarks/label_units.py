"""The label unit check (ffspace.data.label_check) on every public dataset in ../shared/data: the bond stiffness k
and the verdict in the declared unit, and for every rMD17 file the verdicts when read in the wrong unit.

    python benchmarks/label_units.py [--data ../shared/data]

Prints two markdown tables (docs/benchmarks.md, "Label unit check"). About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ffspace import units
from ffspace.data import Dataset, read_dataset
from ffspace.data.label_check import K_ERROR, K_WARN, label_statistics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.test_label_check import _shared_files  # noqa: E402 - the same list of files the test reads


def _row(name, data, unit, seconds):
    s = label_statistics(data, unit)
    f = [x.forces for x in data if x.forces is not None]
    rms = f"{np.sqrt(np.mean(np.concatenate(f) ** 2)):.2f}" if f else "–"
    k = f"{s['k']:.1f}" if s["k"] is not None else "–"
    return f"| {name} | {len(data)} | {k} | {rms} | {s.get('energy_ratio', float('nan')):.3g} | {s['status']} | " \
           f"{1000 * seconds:.0f} |"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    print(f"Error outside k ∈ {list(K_ERROR)} eV/Å², warning outside {list(K_WARN)}.\n")
    print("| dataset (declared unit) | frames | k (eV/Å²) | force RMS (eV/Å) | \\|E\\| / bound | verdict | check ms |")
    print("|---|---|---|---|---|---|---|")
    for name, options in _shared_files():
        data = read_dataset(args.data / name, unit_check="off", **options)
        unit = options.get("energy_unit", "kcal/mol" if name.endswith(".npz") else "eV")
        t0 = time.perf_counter()
        label_statistics(data, unit)
        print(_row(f"{name} ({unit})", data, unit, time.perf_counter() - t0))
    print("\nrMD17 in the wrong unit (the labels rescaled as a reader told the wrong unit would leave them):\n")
    print("| file | read as eV (kcal/mol data): k, verdict, likely unit | eV data read as kcal/mol: k, verdict, "
          "likely unit |")
    print("|---|---|---|")
    for path in sorted((args.data / "rmd17").glob("*.npz")):
        data = read_dataset(path, unit_check="off")
        cells = []
        for factor, declared in ((1 / units.kcal_per_mol, "eV"), (units.kcal_per_mol, "kcal/mol")):
            scaled = Dataset([s.copy(energy=s.energy * factor, forces=s.forces * factor) for s in data])
            st = label_statistics(scaled, declared)
            cells.append(f"{st['k']:.3g}, {st['status']}, {st['likely_unit']}")
        print(f"| {path.name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
