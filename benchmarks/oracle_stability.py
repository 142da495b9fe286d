"""The MD stability protocol run on a reference method itself: the oracle bound of the bond rule (issue 30).

The stability protocol of `ffspace bench` counts a run as failed when a bond leaves its start length by more than
`bond_tolerance` (0.5 Å). At 1200 K a weak bond may do that in a faithful potential too. This script runs the
protocol (same start structure: the bench's first test frame; same integrator, seeds, friction, time step and
failure rules) with GFN2-xTB through tblite in place of a model, so the survival a model can reach at most is
measured rather than assumed. Resumable: the run checkpoints every ps next to --out. Give each worker one OpenMP
thread (OMP_NUM_THREADS=1) and as many workers as cores.

    OMP_NUM_THREADS=1 python benchmarks/oracle_stability.py benchmarks/configs/bench_stability_al_3bpa.yaml \\
        --temperature 1200 --time-ps 20 --workers 2 --out benchmarks/results/oracle_stability_3bpa/xtb_1200K.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ffspace.bench import stability
from ffspace.bench.config import load_bench_config
from ffspace.bench.runner import splits
from ffspace.md.calculator_potential import CalculatorPotential
from ffspace.outputs import atomic_path
from ffspace.reference.xtb import XTBLabeler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a bench config: its first dataset's first test frame and stability settings")
    ap.add_argument("--temperature", type=float, required=True, help="K")
    ap.add_argument("--time-ps", type=float, default=None, help="default: the config's length at this temperature")
    ap.add_argument("--seeds", type=int, default=None, help="default: the config's")
    ap.add_argument("--workers", type=int, default=1, help="copies evaluated side by side (threads)")
    ap.add_argument("--out", required=True, help="result JSON (a .partial.npz checkpoint is kept beside it)")
    args = ap.parse_args()

    cfg = load_bench_config(args.config)
    c, ds = cfg.stability, cfg.datasets[0]
    # the bench's own split: the start is its first test structure, the reference distributions (and the dihedral
    # chosen from them) its training frames, as in runner._stability
    train, _, test = splits(ds)
    start, frames = test[0], list(train)
    dihedral = tuple(c.dihedral) if c.dihedral else stability.choose_dihedral(start, frames)
    reference = stability.reference_distributions(start, frames, dihedral)
    time_ps = args.time_ps or c.time_ps_at.get(args.temperature, c.time_ps)
    seeds = args.seeds or c.seeds
    labeler = XTBLabeler(charge=int(round(float(start.info.get("charge", 0.0)))))
    labeler.label(start)  # a setup error (elements, charge, no tblite) stops here with its own message
    potential = CalculatorPotential(labeler.calculator, workers=args.workers)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = stability.survival(potential, start, args.temperature, seeds, time_ps, c.timestep_fs, c.friction,
                                c.bond_tolerance, min_distance=c.min_distance, dihedral=dihedral,
                                sample_fs=c.sample_fs, reference=reference,
                                checkpoint=out.with_suffix(".partial.npz"), progress=True,
                                identity=json.dumps(labeler.provenance(), sort_keys=True))
    result.update(method=labeler.provenance(), start={"file": ds.test, "frame": 0}, config=args.config,
                  wall_s_this_process=round(time.perf_counter() - t0, 1))
    result["calculator_failures"] = [{"call": call, "copy_slot": k, "error": msg} for call, k, msg in potential.failures]
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=1))
    print(f"{labeler.method} at {args.temperature:g} K: {stability.verdict(result)}")


if __name__ == "__main__":
    main()
