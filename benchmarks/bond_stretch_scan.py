"""Energy along one bond's stretch: model packages against GFN2-xTB and DFT (issue 30: where does MD break a bond?).

The bond i–j of a start structure is lengthened by moving the fragment on j's side (every atom bonded to j without
passing through i) along the bond, rigidly, so only that bond and the non-bonded contacts across it change. Each
method's energy is printed relative to its own at the start length (eV). A model much softer than the reference
here lets Langevin MD at high temperature pull the bond apart. DFT points cost minutes each: ask for a few.

    OMP_NUM_THREADS=2 python benchmarks/bond_stretch_scan.py ../shared/data/3bpa/train_mixedT.xyz --frame 0 \\
        --bond 5 13 --package benchmarks/results/bench_stability_al_3bpa_108/3bpa/mace_mm_morse_al/train/model.safetensors \\
        --xtb --dft wb97x 6-31G* --dft-at 0.3 0.5 --stretch 0 0.1 0.2 0.3 0.4 0.5 0.6

Negative stretches compress the bond; ``--lengths`` gives absolute bond lengths instead. ``--by-term`` also splits
each package's energy into its terms (reference energies, the learned network, priors such as ZBL or the MM prior),
each relative to its own value at the start length: where a prior and the network cancel, and where the network
extrapolates into a hole, shows there (issue 30, Deliver 4: the ZBL table of docs/benchmarks.md):

    OMP_NUM_THREADS=1 python benchmarks/bond_stretch_scan.py ../shared/data/rmd17/rmd17_aspirin_test_01.npz \\
        --bond 1 15 --lengths 0.6 0.7 0.8 0.85 0.9 1.0 1.1 --by-term \\
        --package runs/bench_stability_priors/aspirin/mace_zbl/train/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
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


def scan_points(d0: float, stretch, lengths=None, dft_at=None):
    """(stretches, shown, dft) for a bond of start length ``d0``: ``stretches`` the frames to compute, the start
    geometry (0) first as every column's reference; ``shown`` the indices into them to print, in the order asked
    for; ``dft`` the stretches to label by DFT (``dft_at`` in the units asked for: lengths with ``lengths``; None:
    all). A length within 1e-6 Å of the start is the start itself."""
    asked = [x - d0 for x in lengths] if lengths is not None else list(stretch)
    asked = [0.0 if abs(s) < 1e-6 else float(s) for s in asked]
    stretches = [0.0] + [s for s in dict.fromkeys(asked) if s != 0.0]
    shown = [stretches.index(s) for s in dict.fromkeys(asked)]
    if dft_at is None:
        dft = set(asked)
    else:
        dft = {0.0 if abs(s) < 1e-6 else s for s in ([x - d0 for x in dft_at] if lengths is not None else dft_at)}
    return stretches, shown, dft | {0.0}


def read_options(path, energy_key, forces_key) -> dict:
    """`read_dataset` options for the start structure: its labels are not used, so an extxyz file needs none."""
    from ffspace.data.readers import guess_format

    keys = {k: v for k, v in (("energy_key", energy_key), ("forces_key", forces_key)) if v is not None}
    return {**keys, "required": ()} if guess_format(path) == "extxyz" else keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("structures")
    ap.add_argument("--frame", type=int, default=0)
    ap.add_argument("--energy-key", default=None, help="an extxyz file's energy key (its labels are not used)")
    ap.add_argument("--forces-key", default=None)
    ap.add_argument("--bond", type=int, nargs=2, required=True, metavar=("I", "J"))
    ap.add_argument("--stretch", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                    help="Å added to the bond (negative: compressed); energies are relative to the start length")
    ap.add_argument("--lengths", type=float, nargs="+", default=None,
                    help="absolute bond lengths (Å) instead of --stretch (not both)")
    ap.add_argument("--by-term", action="store_true", help="also each package's energy term by term")
    ap.add_argument("--package", action="append", default=[], help="a model package (repeatable)")
    ap.add_argument("--xtb", action="store_true", help="also GFN2-xTB (tblite)")
    ap.add_argument("--dft", nargs=2, metavar=("FUNCTIONAL", "BASIS"), default=None)
    ap.add_argument("--dft-at", type=float, nargs="+", default=None,
                    help="stretches (with --lengths: lengths) labelled by DFT (default: all)")
    args = ap.parse_args()
    if args.lengths is not None and "--stretch" in sys.argv[1:]:
        raise SystemExit("give --stretch or --lengths, not both")
    start = read_dataset(args.structures, **read_options(args.structures, args.energy_key, args.forces_key))[args.frame]
    i, j = args.bond
    side = fragment(start, i, j)
    d0 = np.linalg.norm(start.positions[j] - start.positions[i])
    stretches, shown, dft_points = scan_points(d0, args.stretch, args.lengths, args.dft_at)
    frames = [stretched(start, i, j, side, s) for s in stretches]
    columns, by_term = {}, {}
    for path in args.package:
        from ffspace.potential import Potential

        potential = Potential.load(path, dtype="float64")
        e = np.asarray(potential.predict(frames)["energy"])
        name = Path(path).parent.parent.name if Path(path).parent.name == "train" else Path(path).stem
        columns[name] = e - e[0]
        if args.by_term:
            by_term[name] = energy_by_term(potential, frames)
    if args.xtb:
        from ffspace.reference.xtb import XTBLabeler

        e = np.array([XTBLabeler().label(f).energy for f in frames])
        columns["GFN2-xTB"] = e - e[0]
    if args.dft:
        from ffspace.reference.dft import PySCFLabeler

        labeler = PySCFLabeler(args.dft[0], args.dft[1], density_fit=True)
        e = np.array([labeler.label(f).energy if s in dft_points else np.nan for s, f in zip(stretches, frames)])
        columns[labeler.method] = e - e[0]
    from ase.data import chemical_symbols

    pair = f"{chemical_symbols[start.numbers[i]]}-{chemical_symbols[start.numbers[j]]}"
    print(f"bond {i}–{j} ({pair}), start length {d0:.3f} Å, "
          f"{len(side)} atoms moved; energy relative to the start length (eV)")
    print("| stretch (Å) | length (Å) | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for k in shown:
        cells = " | ".join("—" if np.isnan(v[k]) else f"{v[k]:.3f}" for v in columns.values())
        print(f"| {stretches[k]:.2f} | {d0 + stretches[k]:.3f} | {cells} |")
    for name, terms in by_term.items():
        print(f"\n{name}: energy by term relative to its own value at the start length (eV)")
        print("| length (Å) | " + " | ".join(terms) + " |")
        print("|---|" + "---|" * len(terms))
        for k in shown:
            print(f"| {d0 + stretches[k]:.3f} | " + " | ".join(f"{v[k]:.4g}" for v in terms.values()) + " |")


def energy_by_term(potential, frames) -> dict:
    """{term name: its energy (eV) on each frame, relative to frame 0} for a package whose model is a `Sum` of terms
    (a single-term model: that term). Names are the terms' registered families, numbered where one repeats."""
    import torch

    from ffspace.potential.potential import structure_totals

    model = potential.model
    model.train(False)  # as `predict` evaluates it (the MM terms differ between training and evaluation)
    terms = list(model.terms) if hasattr(model, "terms") else [model]
    out = {}
    with torch.no_grad():
        batch = potential.batch(frames)
        for term in terms:
            e = structure_totals(term(batch), batch).cpu().numpy()
            name = getattr(term, "family", None) or type(term).__name__
            while name in out:
                name += "'"
            out[name] = e - e[0]
    return out


if __name__ == "__main__":
    main()
