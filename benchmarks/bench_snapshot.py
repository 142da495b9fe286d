"""Keep the finished steps of a benchmark run in the repository, and put them back.

The aspirin design-space benchmark takes longer than one working session on 2 cores, and a session's scratch
folder (runs/) does not outlive it. `save` copies every finished step of a run (the trained model packages,
their accuracy, timing and MD-survival JSON, the OpenMM references, the report) into a folder that is
committed; `restore` copies them back, after which rerunning the same `ffspace bench` command reads them back
and goes on where the run stopped. Timings (speed_*.json, the OpenMM references) are saved but not
restored: the session that finishes the run measures every cost again, so the report's cost ratios come from
one machine at one time. A model still training is left out (its checkpoint is large and a training
restarts under the whole budget anyway), as are checkpoints and half-written files.

    python benchmarks/bench_snapshot.py save    runs/bench_aspirin benchmarks/results/bench_aspirin
    python benchmarks/bench_snapshot.py restore runs/bench_aspirin benchmarks/results/bench_aspirin

What is read back is only reused when the bench's own cache keys match (same settings, same model weights).

`--kind active` does the same for the active-learning benchmark (benchmarks/active_learning.py --out runs/al_bench),
whose loop rounds, label stores, test set, random pools and committees take hours of 2-core CPU:

    python benchmarks/bench_snapshot.py save    runs/al_bench benchmarks/results/al_bench --kind active
    python benchmarks/bench_snapshot.py restore runs/al_bench benchmarks/results/al_bench --kind active

It keeps every label store (append-only, so a partial store is valid) and every committee member that finished
(its `done` file exists), and leaves out checkpoints, half-written files, members still training and the
exploration records (explored.json, megabytes per round; a round that had not finished explores again, with the
same seed, and a finished round does not read them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ffspace.outputs import is_atomic_temporary

SKIPPED = {"checkpoint.pt"}


def _half_written(path: Path) -> bool:
    """A temporary file: *.tmp, or one of ffspace's atomic writes in flight."""
    return path.suffix == ".tmp" or is_atomic_temporary(path)


def _is_timing(rel: Path) -> bool:
    return rel.name.startswith(("speed_", "openmm_")) or rel.parts[0] == "openmm_water"


def _finished_files(run: Path, timings: bool = True, into: Path | None = None):
    """The files of `run` that belong to finished steps (with or without the timings). ``into``: the folder they
    are restored into, whose own ``accuracy.json`` also says a training finished (a snapshot pruned of the files it
    shares with another one, restored first, keeps no copy of that model's accuracy.json)."""
    for path in sorted(run.rglob("*")):
        if not path.is_file() or path.name in SKIPPED or _half_written(path):
            continue
        rel = path.relative_to(run)
        if rel.parts[0] == "systems":  # water boxes: rebuilt from the cell on every run
            continue
        if not timings and _is_timing(rel):
            continue
        # <dataset>/<model>/...: only a model whose training finished (accuracy.json is written when it has)
        if len(rel.parts) >= 3 and rel.parts[0] != "openmm_water" \
                and not any((folder / rel.parts[0] / rel.parts[1] / "accuracy.json").exists()
                            for folder in (run, into) if folder is not None):
            continue
        yield rel


def _finished_active_files(run: Path, timings: bool = True, into: Path | None = None):
    """The files of an active-learning benchmark run worth keeping (`timings` does not apply)."""
    for path in sorted(run.rglob("*")):
        if not path.is_file() or path.name in SKIPPED or _half_written(path) or path.name == "explored.json":
            continue
        rel = path.relative_to(run)
        member = next((run.joinpath(*rel.parts[:i + 1]) for i, part in enumerate(rel.parts[:-1])
                       if part.startswith("member_")), None)
        if member is not None and not (member / "done").exists():  # a committee member still training
            continue
        yield rel


KINDS = {"bench": _finished_files, "active": _finished_active_files}


def copy(src: Path, dst: Path, timings: bool = True, kind: str = "bench") -> int:
    n = 0
    for rel in list(KINDS[kind](src, timings, into=None if timings else dst)):
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)
        n += 1
    return n


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["save", "restore"])
    p.add_argument("run", type=Path, help="the bench's out folder (runs/bench_aspirin)")
    p.add_argument("kept", type=Path, help="the committed copy (benchmarks/results/bench_aspirin)")
    p.add_argument("--kind", choices=sorted(KINDS), default="bench",
                   help="bench: an `ffspace bench` out folder; active: a benchmarks/active_learning.py --out folder")
    args = p.parse_args(argv)
    src, dst = (args.run, args.kept) if args.action == "save" else (args.kept, args.run)
    if not src.is_dir():
        sys.exit(f"{src}: no such folder")
    # Timings are not restored: every cost in the report is then measured by the session that finishes the
    # run, on one machine at one time (the trained models, accuracies and MD runs do not depend on that).
    print(f"{args.action}: {copy(src, dst, timings=args.action == 'save', kind=args.kind)} files {src} -> {dst}")


if __name__ == "__main__":
    main()
