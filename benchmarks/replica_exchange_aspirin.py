"""Temperature replica exchange of aspirin with an ffspace model in OpenMM through openmmtools, and the 300 K
profile of the carboxylic-acid torsion it samples beside the metadynamics one (issue 32, Deliver 5).

    OMP_NUM_THREADS=2 python benchmarks/replica_exchange_aspirin.py [--iterations 200] \
        [--package benchmarks/results/bench_stability_priors/aspirin/mace_mm/train/model.safetensors] \
        [--out benchmarks/results/remd_aspirin]

Four replicas at 300, 370, 460 and 570 K from rMD17 aspirin's first test frame, Langevin 0.5 fs (1/ps), an exchange
attempt every 250 fs (500 steps), ``--iterations`` attempts (200: 50 ps per replica). The storage resumes a killed
run. Prints the neighbour acceptance and writes ``remd.json``; with ``--metad`` (the metadynamics example's
``metad.json`` for the same model) the figure ``profile.png`` sets −kT ln p(φ) of the 300 K state beside the
metadynamics profile.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIHEDRAL = (6, 5, 10, 7)  # as in metadynamics_aspirin.py
KB_KCAL = 0.0019872041  # kcal/mol/K


def profile(angles, temperature: float, bins: int = 36):
    h, edges = np.histogram(angles, bins=bins, range=(-180, 180))
    centres = 0.5 * (edges[1:] + edges[:-1])
    with np.errstate(divide="ignore"):
        f = -KB_KCAL * temperature * np.log(h / h.sum())
    return centres, f - f[np.isfinite(f)].min()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default=str(ROOT / "benchmarks/results/bench_stability_priors/aspirin/mace_mm/train/"
                                            "model.safetensors"))
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/rmd17/rmd17_aspirin_test_01.npz"))
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--temperatures", type=float, nargs="+", default=[300, 370, 460, 570])
    p.add_argument("--metad", default=str(ROOT / "benchmarks/results/metad_aspirin/mace_style___mm_prior/metad.json"))
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/remd_aspirin"))
    args = p.parse_args(argv)
    from ffspace.data import read_dataset
    from ffspace.interfaces.openmm_ml import openmm_system
    from ffspace.interfaces.openmm_remd import run_temperature_replica_exchange

    start = read_dataset(args.data)[0]
    system = openmm_system(args.package, start, dtype="float32")
    out = Path(args.out)
    result = run_temperature_replica_exchange(system, start, args.temperatures, args.iterations, out,
                                              steps_per_iteration=500, timestep_fs=0.5, dihedral=DIHEDRAL)
    result["package"] = args.package
    (out / "remd.json").write_text(json.dumps(result, indent=2))
    print(f"{result['iterations']} iterations, {result['ps_per_replica']:.0f} ps per replica")
    print("| temperatures (K) | acceptance |\n|---|---|")
    for k, a in enumerate(result["neighbour_acceptance"]):
        print(f"| {args.temperatures[k]:.0f} ↔ {args.temperatures[k + 1]:.0f} | {a:.2f} |")
    print("visits of each state per replica:", result["replica_state_visits"])
    if Path(args.metad).exists():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metad = json.loads(Path(args.metad).read_text())
        centres, f = profile(result["coldest_dihedral_deg"], args.temperatures[0])
        fig, ax = plt.subplots(figsize=(6.5, 4))
        ax.plot(metad["grid_deg"], metad["fes_kcal_mol"], label=f"metadynamics ({metad['time_ps']:.0f} ps)")
        ax.plot(centres, f, "o-", ms=3, label=f"replica exchange, 300 K state ({result['ps_per_replica']:.0f} ps "
                                                 f"per replica, {len(result['coldest_dihedral_deg'])} samples)")
        ax.set_xlabel("dihedral C6–C5–C10–O7 (°)")
        ax.set_ylabel("free energy (kcal/mol)")
        ax.set_xlim(-180, 180)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "profile.png", dpi=130)
        print(f"wrote {out / 'profile.png'}")


if __name__ == "__main__":
    main()
