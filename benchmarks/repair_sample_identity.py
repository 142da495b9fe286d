"""Give the MD frames of a samples file made before sampled frames carried their molecule's identity the SMILES,
name, charge and conformer of their start (one-off repair of `benchmarks/data/druglike/store_pbe`, stop 58).

`sample_start` seeds start k's sampler j with ``seed + 1000 k + j``, so every frame's ``sampler_seed`` names its
start; the start's normal-mode frames (sampled after the identity was kept) carry it. Frames of a start without any
frame that knows it stay as they are and are counted. Positions are written back unchanged (the store's keys hash
them): the script checks that every frame's geometry is bit-identical after the rewrite, and writes through a
temporary file.

    python benchmarks/repair_sample_identity.py benchmarks/data/druglike/store_pbe/samples-7a96cba6d7b92b1f.extxyz \\
        --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ffspace.data.readers import read_extxyz
from ffspace.data.writers import write_extxyz
from ffspace.outputs import atomic_path
from ffspace.reference.runner import IDENTITY
from ffspace.reference.store import structure_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", type=Path)
    ap.add_argument("--seed", type=int, default=0, help="the label config's seed")
    args = ap.parse_args()
    frames = list(read_extxyz(args.samples, required=()))
    start = [(int(f.info["sampler_seed"]) - args.seed) // 1000 if "sampler_seed" in f.info else None for f in frames]
    known = {}
    for k, f in zip(start, frames):
        if k is not None and "smiles" in f.info:
            ident = {key: f.info[key] for key in IDENTITY if key in f.info}
            if known.setdefault(k, ident) != ident:
                raise SystemExit(f"{args.samples}: start {k} has frames of two molecules ({known[k]} and {ident})")
    numbers = {}
    for k, f in zip(start, frames):  # one start, one molecule: the same atoms in every frame
        if k is not None and numbers.setdefault(k, f.numbers.tolist()) != f.numbers.tolist():
            raise SystemExit(f"{args.samples}: start {k}'s frames have different atoms: not one molecule")
    repaired = unknown = 0
    for k, f in zip(start, frames):
        if "smiles" in f.info:
            continue
        if k in known:
            f.info.update(known[k])
            repaired += 1
        else:
            unknown += 1
    with atomic_path(args.samples) as tmp:
        write_extxyz(tmp, frames)
        back = list(read_extxyz(tmp, required=()))
        for i, (a, b) in enumerate(zip(frames, back)):
            if structure_key(a, {}) != structure_key(b, {}):  # what a store key hashes of a frame
                raise SystemExit(f"frame {i}: the geometry would change on rewriting; nothing written")
    print(f"{args.samples}: {repaired} frames given their molecule's identity, {unknown} left without (no frame of "
          f"their start knew it), {len(frames) - repaired - unknown} had it")


if __name__ == "__main__":
    main()
