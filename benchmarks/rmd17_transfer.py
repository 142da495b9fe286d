"""Transfer to unseen molecules: graph-learned MM vs per-molecule MM vs ML families on rMD17.

    python benchmarks/rmd17_transfer.py                      # defaults below, about 45 min on 2 cores

Transfer models (default: graph_mm and painn) train on eight rMD17 molecules at once (aspirin, benzene,
ethanol, malonaldehyde, naphthalene, salicylic acid, toluene, uracil; N frames of each one's
train_01 file) and are tested on two molecules they never saw (paracetamol, azobenzene: their test_01
files). Per-molecule models (default: mm, graph_mm, painn) train on N frames of the held-out molecule
itself: the upper bound a transferable model competes with. Reported per test molecule: energy MAE,
energy MAE after removing the mean offset (relative energies: what MM is judged on, since an unseen
molecule's absolute energy offset is not learnable from other molecules), force MAE, and the warm cost
of one energy + forces evaluation in ffspace (float32, 2 threads) — and, for graph-learned MM, of one MD
step of the exported OpenMM System (CPU platform, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
import torch

from ffspace.data import read_dataset
from ffspace.evaluate import error_metrics, predict
from ffspace.evaluate.speed import model_cost, openmm_cost
from ffspace.potential import Potential, load_package
from ffspace.potential.package import versions
from ffspace.train import Trainer, TrainConfig, build_model_for_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rmd17"
TRAIN_MOLECULES = ["aspirin", "benzene", "ethanol", "malonaldehyde", "naphthalene", "salicylic", "toluene", "uracil"]
HELD_OUT = ["paracetamol", "azobenzene"]
MODELS = {  # family → (model config, peak learning rate)
    "graph_mm": ({"family": "graph_mm", "features": 64, "layers": 3, "cutoff": 3.0}, 5e-3),
    "mm": ({"family": "mm", "cutoff": 6.0}, 1e-2),
    "painn": ({"family": "painn", "features": 64, "layers": 3, "cutoff": 5.0, "n_rbf": 8}, 1e-3),
    "schnet": ({"family": "schnet", "features": 64, "layers": 3, "cutoff": 5.0}, 1e-3),
    "ani": ({"family": "ani", "cutoff": 5.2}, 1e-3),
}


def frames(molecule, n_train, n_val, seed, data):
    ds = read_dataset(data / f"rmd17_{molecule}_train_01.npz")
    train, val, _ = ds.split([n_train, n_val, -1], seed=seed)
    return train, val


def fit(family, train, val, budget_min, run_dir, seed):
    cfg, lr = MODELS[family]
    model = build_model_for_data(cfg, train, seed=seed)
    tc = TrainConfig(epochs=100_000, batch_size=8, lr=lr, schedule="cosine", warmup_epochs=1, ema_decay=0.99,
                     early_stop_patience=100_000, max_time_min=budget_min, seed=seed, progress=sys.stderr.isatty())
    summary = Trainer(model, train, val, tc, run_dir=run_dir).fit()
    best, _ = load_package(run_dir / "model.safetensors")
    return best, summary


def score(model, test, family):
    pot = Potential(model, dtype=torch.float32)
    pred = predict(pot, test)
    m = error_metrics(pred, test)
    err = np.asarray(pred["energy"]) - np.array([s.energy for s in test])
    m["energy_mae_offset_removed_meV"] = float(np.abs(err - err.mean()).mean() * 1e3)
    m["energy_mean_offset_meV"] = float(err.mean() * 1e3)
    m["ffspace_cost"] = model_cost(pot, test[0])
    if family == "graph_mm":
        from ffspace.interfaces.openmm import export_openmm

        export = export_openmm(model, test[0])
        m["openmm_cost"] = openmm_cost(export, test[0], threads=2)
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--n-train", type=int, default=200, help="training frames per molecule")
    p.add_argument("--n-val", type=int, default=10, help="validation frames per molecule")
    p.add_argument("--n-test", type=int, default=1000, help="test frames per held-out molecule")
    p.add_argument("--transfer", nargs="*", default=["graph_mm", "painn"], choices=sorted(MODELS))
    p.add_argument("--per-molecule", nargs="*", default=["mm", "graph_mm", "painn"], choices=sorted(MODELS))
    p.add_argument("--budget-min", type=float, default=12.0, help="training budget of each transfer model")
    p.add_argument("--per-molecule-budget-min", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=Path("runs/bench_transfer"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    if not (args.data / "rmd17_paracetamol_test_01.npz").exists():
        sys.exit(f"rMD17 data not found in {args.data} (expected ../shared/data/rmd17 next to the repo)")

    parts = [frames(m, args.n_train, args.n_val, args.seed, args.data) for m in TRAIN_MOLECULES]
    train8, val8 = parts[0][0], parts[0][1]
    for tr, va in parts[1:]:
        train8, val8 = train8 + tr, val8 + va
    tests = {m: read_dataset(args.data / f"rmd17_{m}_test_01.npz")[:args.n_test] for m in HELD_OUT}
    rows = []
    for family in args.transfer:
        model, summary = fit(family, train8, val8, args.budget_min, args.run_dir / f"transfer_{family}", args.seed)
        for mol, test in tests.items():
            rows.append({"molecule": mol, "family": family, "trained_on": f"8 other molecules × {args.n_train}",
                         "epochs": summary["epochs"], "train_min": summary["time_s"] / 60,
                         **score(model, test, family)})
            print(_row(rows[-1]), flush=True)
    for mol, test in tests.items():
        train, val = frames(mol, args.n_train, args.n_val, args.seed, args.data)
        for family in args.per_molecule:
            model, summary = fit(family, train, val, args.per_molecule_budget_min,
                                 args.run_dir / f"{mol}_{family}", args.seed)
            rows.append({"molecule": mol, "family": family, "trained_on": f"{mol} × {args.n_train}",
                         "epochs": summary["epochs"], "train_min": summary["time_s"] / 60,
                         **score(model, test, family)})
            print(_row(rows[-1]), flush=True)

    out = args.run_dir / "results.json"
    out.write_text(json.dumps({"benchmark": "rmd17_transfer", "args": {k: str(v) for k, v in vars(args).items()},
                               "rows": rows, "machine": platform.platform(), "versions": versions(),
                               "command": "python benchmarks/rmd17_transfer.py " + " ".join(sys.argv[1:])},
                              indent=2))
    print(f"\nrMD17 transfer: test on {args.n_test} frames of each held-out molecule (split 01). Energies in meV, "
          "forces in meV/Å, cost in µs per atom-step (warm, 2 threads)\n")
    print("| test molecule | model | trained on | epochs (min) | E MAE | E MAE, offset removed | F MAE | "
          "ffspace µs/atom-step | OpenMM µs/atom-step |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(_row(r))
    print(f"\nresults: {out}")


def _row(r):
    omm = f"{r['openmm_cost']['us_per_atom_step']:.1f}" if "openmm_cost" in r else "–"
    return (f"| {r['molecule']} | {r['family']} | {r['trained_on']} | {r['epochs']} ({r['train_min']:.1f}) | "
            f"{r['energy_mae_meV']:.0f} | {r['energy_mae_offset_removed_meV']:.1f} | {r['forces_mae_meV_A']:.1f} | "
            f"{r['ffspace_cost']['us_per_atom_step']:.0f} | {omm} |")


if __name__ == "__main__":
    main()
