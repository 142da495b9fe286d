"""Write the labels an `ffspace active` run added, read back from its store, as one extxyz file (issue 30).

The frames its finished rounds picked and labelled (never the start labels, never a frame twice: every label is
read from the run's crash-safe store, none is computed again), with the round and temperature each came from, so
that a model can be trained on the start data plus these (a bench dataset's ``train: [start file, this file]``):

    python benchmarks/al_added_labels.py benchmarks/configs/active_stability_3bpa.yaml \\
        --out benchmarks/data/3bpa_al/added_labels.extxyz

The labels are written under ``--energy-key`` / ``--forces-key`` (default the start dataset's own keys, taken from
the run's ``initial_keys``), in eV and eV/Å. A round that has not finished is left out and said so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ffspace.active.config import load_active_config
from ffspace.active.loop import _labeled_picks
from ffspace.data.writers import write_extxyz
from ffspace.reference.store import LabelStore


def added_labels(cfg) -> list:
    """The labelled picks of every finished round of the run in ``cfg.out``, in round order."""
    out, labeler = Path(cfg.out), cfg.labeler.build()
    store, frames = LabelStore(out / "store"), []
    for folder in sorted(out.glob("round_*")):
        if not (folder / "summary.json").exists():
            print(f"{folder.name}: not finished, left out", file=sys.stderr)
            continue
        picks = json.loads((folder / "picked.json").read_text())
        labelled = list(_labeled_picks(folder, labeler, store))
        print(f"{folder.name}: {len(labelled)} labelled of {len(picks)} picks", file=sys.stderr)
        frames += labelled
    return frames


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path, help="the run's `ffspace active` config")
    ap.add_argument("--out", type=Path, required=True, help="extxyz file to write")
    ap.add_argument("--energy-key", default=None)
    ap.add_argument("--forces-key", default=None)
    args = ap.parse_args(argv)
    cfg = load_active_config(args.config)
    keys = cfg.initial_keys or {}
    frames = added_labels(cfg)
    if not frames:
        raise SystemExit(f"{cfg.out}: no finished round has labels to write")
    write_extxyz(args.out, frames, energy_key=args.energy_key or keys.get("energy_key", "REF_energy"),
                 forces_key=args.forces_key or keys.get("forces_key", "REF_forces"))
    print(f"wrote {len(frames)} labelled frames to {args.out}")


if __name__ == "__main__":
    main()
