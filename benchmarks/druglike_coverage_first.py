"""The frames that widen a label store's coverage first: for every molecule of a label recipe with no label yet, its
normal-mode frame (issue 31: a transferable model needs many molecules more than many frames of few; the recipe
labels its samples in list order, molecule by molecule).

The frames are copied from the recipe's own samples file with their geometry unchanged, so a label made from them
(`benchmarks/configs/label_druglike_pbe_coverage.yaml`: the same store and labeler, `samplers: [none]`) has the key
the recipe's frame has, and the recipe never labels it again.

    python benchmarks/druglike_coverage_first.py benchmarks/configs/label_druglike_pbe.yaml \\
        --out benchmarks/data/druglike/coverage_first_frames.extxyz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from ffspace.data.readers import read_extxyz
from ffspace.data.writers import write_extxyz
from ffspace.outputs import atomic_path
from ffspace.reference.config import LabelConfig
from ffspace.reference.job import samples_path
from ffspace.reference.store import LabelStore, structure_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="the label recipe (its samples must exist in its store)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sampler", default="normal_modes", help="which sampler's frame stands for a molecule")
    args = ap.parse_args()
    cfg = LabelConfig(**yaml.safe_load(Path(args.config).read_text()))
    samples = samples_path(cfg, cfg.store)
    if not samples.is_file():
        raise SystemExit(f"{samples}: not sampled yet (run the recipe once)")
    method, store = cfg.labeler.build().provenance(), LabelStore(cfg.store)
    frames = list(read_extxyz(samples, required=()))
    anonymous = sum("smiles" not in f.info for f in frames)
    if anonymous:
        raise SystemExit(f"{samples}: {anonymous} frames do not say their molecule (benchmarks/repair_sample_identity.py)")
    labelled = {f.info["smiles"] for f in frames if structure_key(f, method) in store}
    picked, seen = [], set()
    for f in frames:
        smiles = f.info["smiles"]
        if smiles in labelled or smiles in seen or f.info.get("sampler") != args.sampler:
            continue
        seen.add(smiles)
        picked.append(f)
    with atomic_path(args.out) as tmp:
        write_extxyz(tmp, picked)
    molecules = len({f.info["smiles"] for f in frames})
    print(f"{args.out}: {len(picked)} frames, one per molecule without a label ({len(labelled)} of {molecules} "
          f"molecules have one)")


if __name__ == "__main__":
    main()
