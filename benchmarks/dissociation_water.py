"""Breaking a bond: water's O–H dissociation curve, labelled by ffspace and learned (issue 33, acceptance 3).

    OMP_NUM_THREADS=2 python benchmarks/dissociation_water.py [--minutes 5] [--out runs/dissociation_water]
        [--models mace,mace_morse,mace_mm]

1. Geometries (seeded, written to benchmarks/data/water_dissociation/): 80 water molecules near equilibrium
   (both O–H 0.85–1.15 Å, H–O–H 90–120°) and 160 with one O–H bond stretched anywhere in 0.7–4.3 Å (the other
   0.88–1.08 Å, angle 80–130°); the test curve: one O–H from 0.8 to 4.0 Å in 0.1 Å steps with the other bond at
   0.9686 Å and the angle at 104.0° (no frame of the pool lies on it: their other coordinates are drawn).
2. Labels: UKS PBE/def2-SVP (density fitting), the lower of two broken-symmetry starts each followed along its
   instabilities (`labeler.broken_symmetry`), the rMD17 level made able to break a bond homolytically (a restricted
   singlet would dissociate to ions, eV too high, and does not converge beyond ~2 Å); in the crash-safe store kept
   in the repository, so a rerun labels nothing again (273 labels in 52 min on one core, ~11 s each on
   average).
3. Models, each trained for ``--minutes`` on 200 frames of the pool (20 validate, 20 test), cutoff 5 Å: ours
   (MACE-style), ours + the reactive Morse prior (`model.prior: morse`), and ours + the fitted MM prior, whose
   bonds hold by design (it is the prior a reactive run must not use; here to measure what it costs).
4. Each model's energy along the curve against the labels: RMSE and largest error over the whole range (raw, and
   with the mean offset removed), force MAE on the pool's test frames; a plot.
Writes ``<out>/dissociation_water.json`` and ``.png``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "water_dissociation"
MODELS = {
    "mace": {"family": "mace", "channels": 32, "hidden_lmax": 1, "lmax": 2, "layers": 2, "correlation": 3},
    "mace_morse": {"family": "mace", "channels": 32, "hidden_lmax": 1, "lmax": 2, "layers": 2, "correlation": 3,
                   "prior": "morse"},
    "mace_mm": {"family": "mace", "channels": 32, "hidden_lmax": 1, "lmax": 2, "layers": 2, "correlation": 3,
                "prior": "mm"},
}


def water(r1: float, r2: float, angle_deg: float):
    """O at the origin, H1 along x at r1, H2 at r2 in the xy plane at the angle."""
    from ffspace.data.structure import Structure

    a = np.radians(angle_deg)
    return Structure(numbers=[8, 1, 1], positions=[[0, 0, 0], [r1, 0, 0], [r2 * np.cos(a), r2 * np.sin(a), 0]])


def geometries(seed: int = 0):
    """(pool, curve): the training pool and the test curve of the docstring."""
    rng = np.random.default_rng(seed)
    pool = [water(rng.uniform(0.85, 1.15), rng.uniform(0.85, 1.15), rng.uniform(90, 120)) for _ in range(80)]
    for _ in range(160):
        s = water(rng.uniform(0.7, 4.3), rng.uniform(0.88, 1.08), rng.uniform(80, 130))
        if rng.random() < 0.5:  # which hydrogen leaves
            s = s.copy(positions=s.positions[[0, 2, 1]])
        pool.append(s)
    curve = [water(r, 0.9686, 104.0) for r in np.round(np.arange(0.8, 4.0001, 0.1), 3)]
    return pool, curve


def label(structures, store_dir: Path):
    from ffspace.reference.dft import PySCFLabeler
    from ffspace.reference.runner import label_structures
    from ffspace.reference.store import LabelStore

    labeler = PySCFLabeler("PBE", "def2-SVP", density_fit=True, broken_symmetry=True)
    return label_structures(structures, labeler, LabelStore(store_dir), progress=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "dissociation_water")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from ffspace.data import Dataset
    from ffspace.data.writers import write_extxyz
    from ffspace.evaluate.metrics import error_metrics
    from ffspace.potential import Potential
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    pool, curve = geometries()
    t0 = time.perf_counter()
    pool, curve = list(label(pool, DATA / "store")), list(label(curve, DATA / "store"))
    write_extxyz(DATA / "pool_upbe_def2svp.extxyz", pool)
    write_extxyz(DATA / "curve_upbe_def2svp.extxyz", curve)
    print(f"labels: {len(pool)} pool + {len(curve)} curve frames ({pool[0].info.get('label_method')}), "
          f"{time.perf_counter() - t0:.0f} s\n", flush=True)
    order = np.random.default_rng(1).permutation(len(pool))
    train = Dataset([pool[k] for k in order[:200]], name="train")
    val = Dataset([pool[k] for k in order[200:220]], name="val")
    test = Dataset([pool[k] for k in order[220:]], name="test")
    r = np.array([np.linalg.norm(s.positions[1] - s.positions[0]) for s in curve])
    e_ref = np.array([s.energy for s in curve])
    results = {"level": pool[0].info.get("label_method"), "r_A": r.tolist(), "reference_eV": e_ref.tolist(),
               "minutes": args.minutes, "models": {}}
    for name in args.models.split(","):
        spec = {"cutoff": 5.0, **MODELS[name]}
        package = args.out / name / "model.safetensors"
        if not package.exists():
            model = build_model_for_data(spec, train, seed=0)
            cfg = TrainConfig(epochs=100000, max_time_min=args.minutes, batch_size=8, lr=5e-3, schedule="cosine",
                              progress=False, early_stop_patience=100000)
            Trainer(model, train, val, cfg, run_dir=args.out / name).fit()
        pot = Potential.load(package, dtype="float64")
        e = np.asarray(pot.predict(curve)["energy"], dtype=float)
        err = e - e_ref
        m = error_metrics(pot.predict(list(test)), list(test))
        results["models"][name] = {
            "energy_eV": e.tolist(), "curve_rmse_meV": 1e3 * float(np.sqrt(np.mean(err**2))),
            "curve_max_meV": 1e3 * float(np.abs(err).max()),
            "curve_rmse_offset_removed_meV": 1e3 * float(np.std(err)),
            "test_energy_mae_meV": m["energy_mae_meV"], "test_forces_mae_meV_A": m["forces_mae_meV_A"]}
        print(f"[{name}] curve RMSE {results['models'][name]['curve_rmse_meV']:.1f} meV", flush=True)
    (args.out / "dissociation_water.json").write_text(json.dumps(results, indent=1))

    print(f"\nO–H dissociation of water, {results['level']}, {len(curve)} points from {r[0]:.1f} to {r[-1]:.1f} Å "
          f"(binding energy along the curve {1e3 * (e_ref.max() - e_ref.min()):.0f} meV); models trained "
          f"{args.minutes:g} min on {len(train)} frames\n")
    print("| model | curve RMSE (meV) | curve max error (meV) | RMSE, offset removed (meV) | test E MAE (meV) | "
          "test F MAE (meV/Å) |\n|---|---|---|---|---|---|")
    for name, v in results["models"].items():
        print(f"| {name} | {v['curve_rmse_meV']:.1f} | {v['curve_max_meV']:.1f} | "
              f"{v['curve_rmse_offset_removed_meV']:.1f} | {v['test_energy_mae_meV']:.1f} | "
              f"{v['test_forces_mae_meV_A']:.1f} |")
    _plot(results, args.out / "dissociation_water.png")
    return 0


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = np.array(results["r_A"])
    ref = np.array(results["reference_eV"])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(r, ref - ref.min(), "k-", lw=2, label=f"{results['level']}")
    for name, v in results["models"].items():
        ax.plot(r, np.array(v["energy_eV"]) - ref.min(), "--", label=f"{name} ({v['curve_rmse_meV']:.0f} meV RMSE)")
    ax.set_xlabel("O–H distance (Å)")
    ax.set_ylabel("energy above the reference minimum (eV)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
