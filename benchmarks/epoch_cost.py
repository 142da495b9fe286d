"""Training cost per epoch of model packages on the same frames, interleaved, on this machine now (issue 30,
acceptance 2: a wall-clock budget buys each model epochs at the machine's current speed, so the relative speed of
two models on the machine that ran a comparison says whether its budget was the same for both).

Each round trains every package for one epoch (batch 4, the bench's split of the config's first dataset, the first
``--frames`` training frames) in turn, so slow phases of a shared machine fall on every model alike; the median
epoch time per model and the ratios to the first are printed.

    OMP_NUM_THREADS=2 python benchmarks/epoch_cost.py benchmarks/configs/bench_3bpa_acc2_148_seed0.yaml \\
        --package ours=runs/bench_3bpa_acc2_148_seed0/3bpa/mace_mm_morse_64_xtb/train/model.safetensors \\
        --package mace-torch=runs/bench_3bpa_acc2_148_seed0/3bpa/mace_torch_al/train/model.safetensors
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from ffspace.bench import load_bench_config
from ffspace.bench.runner import splits
from ffspace.train import Trainer, TrainConfig, model_for_training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--package", action="append", required=True, help="NAME=PATH (repeatable)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    train, val, _ = splits(load_bench_config(args.config).datasets[0])
    train = train[:args.frames]
    packages = dict(p.split("=", 1) for p in args.package)
    times = {name: [] for name in packages}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, path in packages.items():
                cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-3, init_from=path, progress=False, seed=r)
                with contextlib.redirect_stderr(io.StringIO()):
                    model = model_for_training({}, train, cfg)
                    run = Path(tmp) / f"{name}_{r}"
                    Trainer(model, train, val[:4], cfg, run_dir=run).fit()
                row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
                times[name].append(row["epoch_s"])
                print(f"round {r}: {name} {row['epoch_s']:.2f} s per epoch of {len(train)} frames", flush=True)
    first = next(iter(packages))
    for name, t in times.items():
        print(f"{name}: median {np.median(t):.2f} s ({1000 * np.median(t) / len(train):.1f} ms per frame), "
              f"{np.median(t) / np.median(times[first]):.2f}x {first}")


if __name__ == "__main__":
    main()
