"""Write the labels an `ffspace active` run added, read back from its store, as one extxyz file (issue 30).

The frames its finished rounds picked and labelled (never the start labels, never a frame twice: every label is
read from the run's crash-safe store, none is computed again), with the round and temperature each came from, so
that a model can be trained on the start data plus these (a bench dataset's ``train: [start file, this file]``):

    python benchmarks/al_added_labels.py benchmarks/configs/active_stability_3bpa.yaml \\
        --out benchmarks/data/3bpa_al/added_labels.extxyz

``--last-round N`` leaves out the later rounds, so the training set of an earlier acceptance run can be remade. The
labels are written under ``--energy-key`` / ``--forces-key`` (default the start dataset's own keys, taken from the
run's ``initial_keys``), in eV and eV/Å. A round that has not finished is left out and said so.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ffspace.active.config import load_active_config
from ffspace.data.readers import read_extxyz
from ffspace.data.writers import write_extxyz
from ffspace.reference.store import LabelStore, structure_key


def added_labels(cfg, last_round: int | None = None) -> list:
    """The labelled picks of every finished round of the run in ``cfg.out`` (up to ``last_round`` when given), in
    round order, read from its store.
    A pick the store lacks (neither labelled nor failed: another labeler's settings or program version) is an
    error, never a new calculation: this script must not spend hours of DFT by accident."""
    out, method = Path(cfg.out), cfg.labeler.build().provenance()
    store, frames = LabelStore(out / "store"), []
    rounds = sorted((int(m[1]), f) for f in out.glob("round_*") if (m := re.fullmatch(r"round_(\d+)", f.name)))
    for k, folder in rounds:
        if last_round is not None and k > last_round:
            continue
        if not (folder / "summary.json").exists():
            print(f"{folder.name}: not finished, left out", file=sys.stderr)
            continue
        path = folder / "picked.extxyz"
        picks = list(read_extxyz(path, required=())) if path.exists() and path.stat().st_size else []
        keys = [structure_key(s, method) for s in picks]
        missing = [i for i, k in enumerate(keys) if k not in store and k not in store.failures]
        if missing:
            raise SystemExit(f"{path}: picks {missing} are not in {store.folder} under this labeler "
                             f"({method}); was the run labelled with other settings or program versions?")
        labelled = [store.get(k, frame=i) for i, k in enumerate(keys) if k in store]
        for s, pick in zip(labelled, [p for p, k in zip(picks, keys) if k in store]):
            s.info = {**pick.info, **s.info}  # the pick's round, trajectory and temperature with the label
        print(f"{folder.name}: {len(labelled)} labelled of {len(picks)} picks "
              f"({len(picks) - len(labelled)} failed)", file=sys.stderr)
        frames += labelled
    return frames


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path, help="the run's `ffspace active` config")
    ap.add_argument("--out", type=Path, required=True, help="extxyz file to write")
    ap.add_argument("--last-round", type=int, default=None,
                    help="leave out the rounds after this one (to remake an earlier training set)")
    ap.add_argument("--energy-key", default=None)
    ap.add_argument("--forces-key", default=None)
    args = ap.parse_args(argv)
    cfg = load_active_config(args.config)
    keys = cfg.initial_keys or {}
    frames = added_labels(cfg, args.last_round)
    if not frames:
        raise SystemExit(f"{cfg.out}: no finished round has labels to write")
    write_extxyz(args.out, frames, energy_key=args.energy_key or keys.get("energy_key", "REF_energy"),
                 forces_key=args.forces_key or keys.get("forces_key", "REF_forces"))
    print(f"wrote {len(frames)} labelled frames to {args.out}")


if __name__ == "__main__":
    main()
