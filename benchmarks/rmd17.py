"""rMD17 benchmark: train a model on one molecule (split 01) under a wall-clock budget, test on 1000 frames.

    python benchmarks/rmd17.py --molecule aspirin --budget-min 60                  # PaiNN 128×3
    python benchmarks/rmd17.py --family mace --model channels=64 --lr 0.005       # any family, any setting
    python benchmarks/rmd17.py --family ace                                       # linear ACE, least squares

Training set: the first 950 frames of rmd17_<molecule>_train_01.npz after a seeded shuffle, validation:
the other 50; test: all 1000 frames of rmd17_<molecule>_test_01.npz (never seen during training or
model selection). Prints a table next to the published anchors, with the inference cost (warm energy +
forces, float32, 2 threads, µs per atom-step), and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from ffspace.data import read_dataset
from ffspace.config import parse_value
from ffspace.evaluate import error_metrics, format_metrics, predict
from ffspace.evaluate.speed import model_cost
from ffspace.potential import Potential, load_package
from ffspace.potential.package import versions
from ffspace.train import Trainer, TrainConfig, build_model_for_data

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rmd17"
# Batatia et al. 2022 (MACE), Table 2: test MAE E (meV) / F (meV/Å), 1000 training configurations.
ANCHORS = {"aspirin": {"MACE": (2.2, 6.6), "NequIP": (2.3, 8.2), "PaiNN": (6.9, 16.1), "linear ACE": (6.1, 17.9),
                       "ANI": (16.6, 40.6), "GAP": (17.7, 44.9)},
           "ethanol": {"MACE": (0.4, 2.1), "NequIP": (0.4, 2.8), "PaiNN": (2.7, 10.0), "ANI": (2.5, 13.4)}}


# Each family's model settings unless --model overrides them (PaiNN: the published rMD17 shape).
FAMILY_DEFAULTS = {
    "painn": {"features": 128, "layers": 3, "cutoff": 5.0},
    "schnet": {"features": 128, "layers": 3, "cutoff": 5.0},
    "mace": {"channels": 64, "lmax": 2, "layers": 2, "correlation": 3, "cutoff": 5.0},
    "ace": {"cutoff": 5.0},  # linear ACE: fitted by least squares (the budget and learning rate do not apply)
    "ani": {"cutoff": 5.2},
    "mm": {"cutoff": 6.0},
    "graph_mm": {"features": 64, "layers": 3, "cutoff": 3.0},
    # peers (bash scripts/install_peers.sh): mace-torch's rMD17 settings at 64 invariant channels; ANI-1x
    "mace_torch": {"channels": 64, "hidden_lmax": 0, "lmax": 3, "correlation": 3, "layers": 2, "cutoff": 5.0},
    "torchani": {"cutoff": 5.2},
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--data", type=Path, default=DATA, help="folder with rmd17_<mol>_{train,test}_01.npz")
    p.add_argument("--family", default="painn")
    p.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE",
                   help="model settings on top of the family's defaults, e.g. channels=128 cutoff=4.5")
    p.add_argument("--budget-min", type=float, default=60.0, help="training wall-clock budget (minutes)")
    p.add_argument("--epochs", type=int, default=0, help="cosine schedule length in epochs; 0 = the time budget")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--forces-weight", type=float, default=10.0)
    p.add_argument("--n-train", type=int, default=950)
    p.add_argument("--n-val", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for training and timing")
    p.add_argument("--workers", type=int, default=1, help="data-parallel training processes (torch.distributed); "
                   "they share --threads")
    p.add_argument("--run-dir", type=Path, default=Path("runs/bench_rmd17"))
    p.add_argument("--out", type=Path, default=None, help="JSON results (default: <run-dir>/results.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)  # the protocol: 2 CPU threads (a script may set this; the library never does)

    train_file = args.data / f"rmd17_{args.molecule}_train_01.npz"
    test_file = args.data / f"rmd17_{args.molecule}_test_01.npz"
    if not train_file.exists():
        sys.exit(f"rMD17 data not found at {train_file} (expected ../shared/data/rmd17 next to the repo)")
    train_val = read_dataset(train_file)
    train_set, val_set = train_val.split([args.n_train, args.n_val], seed=args.seed)
    test_set = read_dataset(test_file)
    model_cfg = {"family": args.family, **FAMILY_DEFAULTS.get(args.family, {})}
    for item in args.model:
        key, _, value = item.partition("=")
        model_cfg[key] = parse_value(value)
    model = build_model_for_data(model_cfg, train_set, seed=args.seed)

    # The cosine schedule follows the wall-clock budget (the trainer's time fraction), so it ends with the
    # budget however fast epochs turn out; --epochs fixes its length in epochs instead.
    epochs = args.epochs or 1_000_000
    cfg = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, schedule="cosine", warmup_epochs=2,
                      ema_decay=0.99, early_stop_patience=10_000, energy_weight=args.energy_weight,
                      forces_weight=args.forces_weight, max_time_min=args.budget_min, seed=args.seed,
                      workers=args.workers, progress=sys.stderr.isatty())
    trainer = Trainer(model, train_set, val_set, cfg, run_dir=args.run_dir,
                      extra_config={"benchmark": {"molecule": args.molecule, "train_file": str(train_file)}})
    summary = trainer.fit()

    best, _ = load_package(args.run_dir / "model.safetensors")
    pot = Potential(best, dtype=torch.float32)
    test = error_metrics(predict(pot, test_set), test_set)
    cost = model_cost(pot, test_set[0])
    results = {"benchmark": "rmd17", "molecule": args.molecule, "family": args.family, "model": model_cfg,
               "budget_min": args.budget_min, "epochs_run": summary["epochs"], "train_time_s": summary["time_s"],
               "stop_reason": summary["stop_reason"], "test": test, "inference_cost": cost, "n_train": len(train_set),
               "n_val": len(val_set), "n_test": len(test_set), "machine": platform.platform(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "lr": args.lr, "versions": versions(),
               "command": "python benchmarks/rmd17.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out = args.out or args.run_dir / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print(f"\nrMD17 {args.molecule}, split 01: {len(train_set)} train / {len(val_set)} val / {len(test_set)} test")
    print(f"{args.family} trained {summary['epochs']} epochs in {summary['time_s'] / 60:.1f} min "
          f"({summary['stop_reason']}); test: {format_metrics(test)}\n")
    print("| model | E MAE (meV) | F MAE (meV/Å) | µs/atom-step |\n|---|---|---|---|")
    how = (f"least squares, {summary['time_s'] / 60:.1f} min CPU" if summary["stop_reason"] == "least squares"
           else f"{args.budget_min:g} min CPU")
    print(f"| ffspace {args.family} (this run, {how}) | {test['energy_mae_meV']:.1f} | "
          f"{test['forces_mae_meV_A']:.1f} | {cost['us_per_atom_step']:.0f} |")
    for name, (e, f) in ANCHORS.get(args.molecule, {}).items():
        print(f"| {name} (published) | {e} | {f} | |")
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
