"""Energy along one bond's stretch: model packages against GFN2-xTB and DFT (issue 30: where does MD break a bond?).

The bond i–j of a start structure is lengthened by moving the fragment on j's side (every atom bonded to j without
passing through i) along the bond, rigidly, so only that bond and the non-bonded contacts across it change. Each
method's energy is printed relative to its own at the start length (eV). A model much softer than the reference
here lets Langevin MD at high temperature pull the bond apart. DFT points cost minutes each: ask for a few.

    OMP_NUM_THREADS=2 python benchmarks/bond_stretch_scan.py ../shared/data/3bpa/train_mixedT.xyz --frame 0 \\
        --bond 5 13 --package benchmarks/results/bench_stability_al_3bpa_108/3bpa/mace_mm_morse_al/train/model.safetensors \\
        --xtb --dft wb97x 6-31G* --dft-at 0.3 0.5 --stretch 0 0.1 0.2 0.3 0.4 0.5 0.6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ffspace.data.bonds import covalent_bonds
from ffspace.data.readers import read_dataset


def fragment(structure, i: int, j: int) -> np.ndarray:
    """Indices of the atoms reached from j through bonds without passing i (j included); an error if i is among
    them (the bond is in a ring: no rigid fragment can move along it)."""
    a, b, _ = covalent_bonds(structure.numbers, structure.positions)
    neighbours = {k: set() for k in range(structure.n_atoms)}
    for p, q in zip(a.tolist(), b.tolist()):
        neighbours[p].add(q)
        neighbours[q].add(p)
    if j not in neighbours[i]:
        raise SystemExit(f"atoms {i} and {j} are not bonded in the start structure")
    seen, todo = {j}, [j]
    while todo:
        for n in neighbours[todo.pop()] - seen - {i}:
            seen.add(n)
            todo.append(n)
    if i in seen:
        raise SystemExit(f"bond {i}–{j} is in a ring: no rigid fragment moves along it")
    return np.array(sorted(seen))


def stretched(structure, i: int, j: int, side: np.ndarray, by: float):
    """A copy with the atoms ``side`` moved ``by`` Å along the unit vector i → j."""
    u = structure.positions[j] - structure.positions[i]
    pos = structure.positions.copy()
    pos[side] += by * u / np.linalg.norm(u)
    return structure.copy(positions=pos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("structures")
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--energy-key", default="energy", help="the file's energy key (its labels are not used)")
    ap.add_argument("--forces-key", default="forces")
    ap.add_argument("--bond", type=int, nargs=2, required=True, metavar=("I", "J"))
    ap.add_argument("--stretch", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                    help="Å added to the bond (0 first: the reference point)")
    ap.add_argument("--package", action="append", default=[], help="a model package (repeatable)")
    ap.add_argument("--xtb", action="store_true", help="also GFN2-xTB (tblite)")
    ap.add_argument("--dft", nargs=2, metavar=("FUNCTIONAL", "BASIS"), default=None)
    ap.add_argument("--dft-at", type=float, nargs="+", default=None, help="stretches labelled by DFT (default: all)")
    args = ap.parse_args()
    if args.stretch[0] != 0.0:
        raise SystemExit("--stretch must start at 0 (each method's energy is relative to the start length)")
    start = read_dataset(args.structures, energy_key=args.energy_key, forces_key=args.forces_key)[args.frame]
    i, j = args.bond
    side = fragment(start, i, j)
    frames = [stretched(start, i, j, side, s) for s in args.stretch]
    d0 = np.linalg.norm(start.positions[j] - start.positions[i])
    columns = {}
    for path in args.package:
        from ffspace.potential import Potential

        e = np.asarray(Potential.load(path, dtype="float64").predict(frames)["energy"])
        columns[Path(path).parent.parent.name if Path(path).parent.name == "train" else Path(path).stem] = e - e[0]
    if args.xtb:
        from ffspace.reference.xtb import XTBLabeler

        e = np.array([XTBLabeler().label(f).energy for f in frames])
        columns["GFN2-xTB"] = e - e[0]
    if args.dft:
        from ffspace.reference.dft import PySCFLabeler

        labeler = PySCFLabeler(args.dft[0], args.dft[1], density_fit=True)
        want = set(args.dft_at if args.dft_at is not None else args.stretch) | {0.0}
        e = np.array([labeler.label(f).energy if s in want else np.nan for s, f in zip(args.stretch, frames)])
        columns[labeler.method] = e - e[0]
    from ase.data import chemical_symbols

    pair = f"{chemical_symbols[start.numbers[i]]}-{chemical_symbols[start.numbers[j]]}"
    print(f"bond {i}–{j} ({pair}), start length {d0:.3f} Å, "
          f"{len(side)} atoms moved; energy relative to the start length (eV)")
    print("| stretch (Å) | length (Å) | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for k, s in enumerate(args.stretch):
        cells = " | ".join("—" if np.isnan(v[k]) else f"{v[k]:.3f}" for v in columns.values())
        print(f"| {s:.2f} | {d0 + s:.3f} | {cells} |")


if __name__ == "__main__":
    main()
