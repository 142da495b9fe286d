"""Regenerate the dataset that ships with ffspace and that `ffspace run` trains on.

    python -m ffspace.reference.default_dataset

Ethanol, GFN2-xTB (tblite), frames from xTB-driven Langevin MD at 300 K and 600 K (so the set
covers both thermal and stretched geometries), labeled with energies and forces in eV and eV/Å
under the keys REF_energy / REF_forces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.structure import Structure
from ..data.writers import write_extxyz
from .sampling import md_sample
from .xtb import XTBLabeler

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "datasets" / "ethanol_gfn2xtb.extxyz"


def make(path=DEFAULT_PATH, n_per_temperature: int = 200, temperatures=(300.0, 600.0), seed: int = 0):
    from ase.build import molecule

    labeler = XTBLabeler()
    start = Structure.from_ase(molecule("CH3CH2OH"))
    frames = []
    for k, temperature in enumerate(temperatures):
        sampled = md_sample(start, labeler.calculator(), n_per_temperature, temperature=temperature, interval=20,
                            seed=seed + k, progress=True)
        frames += [labeler.label(s) for s in sampled]
    for s in frames:
        s.info.pop("label_wall_s", None)  # keep the shipped file byte-for-byte reproducible
    write_extxyz(path, frames)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_PATH)
    p.add_argument("--n-per-temperature", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(make(args.out, args.n_per_temperature, seed=args.seed))


if __name__ == "__main__":
    main()
