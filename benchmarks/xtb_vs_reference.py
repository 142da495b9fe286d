"""Is GFN2-xTB softer or stiffer than a dataset's reference where bonds stretch? (issue 30, the oracle bound)

`oracle_stability.py` runs the MD stability protocol on GFN2-xTB. Whether its survival bounds a model of the
dataset's own level (3BPA: ωB97X/6-31G(d)) from above or below depends on how the two methods price a stretched
bond. This script relabels frames of a labeled file with GFN2-xTB and prints, binned by each frame's largest bond
stretch, xTB's energy minus the reference's, with each file's mean offset over its unstretched frames removed (two
files may come from different programs at the same level): negative means
xTB makes stretching cheaper than the reference. Each file's bonds are those most of its frames have (a frame with a
broken bond loses one; files may order their atoms differently), at their median length over the file.

    OMP_NUM_THREADS=2 python benchmarks/xtb_vs_reference.py benchmarks/data/3bpa_al/added_labels.extxyz \\
        --energy-key energy --forces-key forces --also ../shared/data/3bpa/train_300K.xyz --also-frames 50
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from ffspace.data.bonds import covalent_bonds
from ffspace.data.readers import read_dataset
from ffspace.reference.base import LabelFailure
from ffspace.reference.xtb import XTBLabeler
from ffspace.units import meV

BINS = (0.0, 0.15, 0.25, 0.35, 0.5, 10.0)  # Å of the largest bond stretch


def typical_bonds(frames) -> tuple[np.ndarray, np.ndarray]:
    """(B, 2) the bonds most of ``frames`` have, and (B,) their median lengths (Å) over the frames."""
    sets = Counter()
    for f in frames:
        i, j, _ = covalent_bonds(f.numbers, f.positions)
        sets[tuple(sorted(zip(i.tolist(), j.tolist())))] += 1
    bonds = np.array(sets.most_common(1)[0][0])
    pos = np.stack([f.positions for f in frames])
    return bonds, np.median(np.linalg.norm(pos[:, bonds[:, 1]] - pos[:, bonds[:, 0]], axis=-1), axis=0)


def largest_stretch(frame, bonds: np.ndarray, d0: np.ndarray) -> tuple[float, str]:
    """The largest |bond length − start length| (Å) of ``frame`` and which bond it is."""
    d = np.linalg.norm(frame.positions[bonds[:, 1]] - frame.positions[bonds[:, 0]], axis=-1)
    k = int(np.argmax(np.abs(d - d0)))
    return float(abs(d[k] - d0[k])), f"{bonds[k, 0]}–{bonds[k, 1]}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("labeled", help="frames with reference energies (eV) and forces (eV/Å)")
    ap.add_argument("--energy-key", default="energy")
    ap.add_argument("--forces-key", default="forces")
    ap.add_argument("--also", default=None, help="a second labeled file at the same level (e.g. the training set)")
    ap.add_argument("--also-frames", type=int, default=50, help="evenly spaced frames taken from --also")
    args = ap.parse_args()
    keys = dict(energy_key=args.energy_key, forces_key=args.forces_key)
    files = [list(read_dataset(args.labeled, **keys))]
    if args.also:
        extra = read_dataset(args.also, **keys)
        files.append([extra[int(k)] for k in np.linspace(0, len(extra) - 1, args.also_frames).round()])
    labeler = XTBLabeler()
    rows, failed = [], 0  # (stretch Å, bond, xTB − reference − the file's offset eV, force MAE eV/Å)
    for n, group in enumerate(files):
        bonds, d0 = typical_bonds(group)
        mine = []
        for f in group:
            stretch, bond = largest_stretch(f, bonds, d0)
            try:
                xtb = labeler.label(f)
            except LabelFailure as exc:
                print(f"xTB failed on {f.source} frame {f.frame}: {exc}")
                failed += 1
                continue
            mine.append((stretch, bond, xtb.energy - f.energy, np.abs(xtb.forces - f.forces).mean()))
        calm = [d for st, _, d, _ in mine if st < BINS[1]]
        if not calm:
            raise SystemExit(f"file {n + 1}: no frame with every bond within {BINS[1]} Å of its median length, "
                             "so no offset between the methods can be fixed")
        offset = float(np.mean(calm))
        print(f"file {n + 1}: {len(mine)} frames, offset (xTB − reference, {len(calm)} frames stretched < "
              f"{BINS[1]} Å) {offset:.4f} eV")
        rows += [(st, b, d - offset, fm) for st, b, d, fm in mine]
    if failed:
        print(f"{failed} frame(s) xTB could not label (left out)")
    stretch = np.array([r[0] for r in rows])
    diff = np.array([r[2] for r in rows])
    print("| largest bond stretch (Å) | frames | xTB − reference, offset removed: mean / min / max (meV) "
          "| force MAE xTB vs reference (meV/Å) |")
    print("|---|---|---|---|")
    for lo, hi in zip(BINS[:-1], BINS[1:]):
        m = (stretch >= lo) & (stretch < hi)
        if not m.any():
            continue
        d = diff[m] / meV
        fmae = np.mean([r[3] for r, ok in zip(rows, m) if ok]) / meV
        print(f"| {lo:.2f}–{hi if hi < 10 else '∞'} | {m.sum()} | {d.mean():.0f} / {d.min():.0f} / {d.max():.0f} "
              f"| {fmae:.0f} |")
    print("\nmost stretched frames:")
    for k in np.argsort(-stretch)[:8]:
        print(f"  bond {rows[k][1]} +{stretch[k]:.2f} Å: xTB − reference {diff[k] / meV:.0f} meV")


if __name__ == "__main__":
    main()
