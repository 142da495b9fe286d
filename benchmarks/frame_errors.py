"""Where a model's force error sits, frame by frame: the worst frames of a labelled set and, in each, the atom with
the largest error and its most stretched bond (a neighbour within 1.35 × the sum of covalent radii, the MM prior's
rule), its length and its ratio to that sum.

    python benchmarks/frame_errors.py PACKAGE DATA [--energy-key REF_energy] [--forces-key REF_forces] [--worst 5]

Several packages may be given (`--package` repeated): one table each, on the same frames. Units: meV/Å, Å.
"""

from __future__ import annotations

import argparse

import numpy as np
from ase.data import chemical_symbols, covalent_radii

from ffspace.data.readers import read_dataset
from ffspace.potential import Potential


def frame_errors(package: str, structures) -> list[dict]:
    """Per frame: force RMSE and the atom with the largest error (meV/Å), and that atom's most stretched bond."""
    pot = Potential.load(package, dtype="float64")
    pred = pot(structures)
    rows = []
    for index, (s, forces) in enumerate(zip(structures, pred["forces"])):
        error = np.linalg.norm(forces - s.forces, axis=1)
        atom = int(error.argmax())
        distance = np.linalg.norm(s.positions - s.positions[atom], axis=1)
        ratio = distance / (covalent_radii[s.numbers[atom]] + covalent_radii[s.numbers])
        ratio[(ratio >= 1.35) | (np.arange(len(ratio)) == atom)] = -np.inf
        near = int(ratio.argmax())
        rows.append({"frame": index, "rmse": 1000 * float(np.sqrt(((forces - s.forces) ** 2).mean())),
                     "atom": atom, "error": 1000 * float(error[atom]), "near": near,
                     "pair": f"{chemical_symbols[s.numbers[atom]]}–{chemical_symbols[s.numbers[near]]}",
                     "distance": float(distance[near]), "stretch": float(ratio[near])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--package", action="append", required=True)
    parser.add_argument("--energy-key", default="REF_energy")
    parser.add_argument("--forces-key", default="REF_forces")
    parser.add_argument("--worst", type=int, default=5)
    args = parser.parse_args()
    structures = list(read_dataset(args.data, energy_key=args.energy_key, forces_key=args.forces_key))
    for package in args.package:
        rows = frame_errors(package, structures)
        rmse = np.array([r["rmse"] for r in rows])
        print(f"\n{package}: {len(rows)} frames, force RMSE {np.sqrt((rmse ** 2).mean()):.1f} meV/Å "
              f"(median frame {np.median(rmse):.1f}, worst {rmse.max():.1f})")
        print("| frame | force RMSE | worst atom | its error | bonded atom | bond | length (Å) | / (R_i + R_j) |")
        print("|---|---|---|---|---|---|---|---|")
        for r in sorted(rows, key=lambda r: -r["rmse"])[:args.worst]:
            print(f"| {r['frame']} | {r['rmse']:.1f} | {r['atom']} | {r['error']:.0f} | {r['near']} | {r['pair']} "
                  f"| {r['distance']:.3f} | {r['stretch']:.2f} |")


if __name__ == "__main__":
    main()
