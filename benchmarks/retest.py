"""Test kept model packages again on a bench config's test set as `ffspace bench` now builds it: the frames of a
separate test file that are also in the training or validation set left out (3BPA's train_mixedT repeats 31
frames of train_300K; bench reports before stop 56 counted them as test frames).

    python benchmarks/retest.py CONFIG RESULTS_FOLDER [RESULTS_FOLDER ...] [--dtype float32]

Each RESULTS_FOLDER is a bench run or a kept snapshot (`benchmarks/results/NAME`); every
`<dataset>/<model>/train/model.safetensors` in it whose dataset is in CONFIG is tested, with the errors on the
whole test file beside them. RMSE and MAE in meV (energy, per structure) and meV/Å (force components).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ffspace.bench import load_bench_config
from ffspace.bench.runner import _without, splits
from ffspace.evaluate import error_metrics, predict
from ffspace.potential import Potential


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("results", nargs="+")
    parser.add_argument("--dtype", default="float32", help="the dtype the bench evaluates in (its train.dtype)")
    args = parser.parse_args()
    cfg = load_bench_config(args.config)
    print("| results | model | test frames (whole file) | E RMSE | F RMSE | F MAE | whole file: E RMSE | F RMSE "
          "| F MAE |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ds in cfg.datasets:
        if not ds.test:
            continue
        train, val, whole = splits(ds)
        test, _ = _without(whole, [train, val])
        for folder in args.results:
            for package in sorted(Path(folder, ds.name).glob("*/train/model.safetensors")):
                pot = Potential.load(package, dtype=args.dtype)
                a = error_metrics(predict(pot, test), test)
                b = error_metrics(predict(pot, whole), whole)
                print(f"| {folder} | {package.parent.parent.name} | {len(test)} ({len(whole)}) | "
                      f"{a['energy_rmse_meV']:.1f} | {a['forces_rmse_meV_A']:.1f} | {a['forces_mae_meV_A']:.1f} | "
                      f"{b['energy_rmse_meV']:.1f} | {b['forces_rmse_meV_A']:.1f} | {b['forces_mae_meV_A']:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
