"""Are two identical training runs identical, bit for bit? With and without the deterministic algorithms the
trainer switches on during a fit on CPU (ffspace/train/determinism.py).

    python benchmarks/training_determinism.py [--runs 3] [--threads 2]

Trains the same model on the same 42 shipped ethanol frames ``--runs`` times per setting and prints whether the
final weights equal the first run's, and the mean wall time of a run (2 epochs with validation).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time

import torch

import ffspace.train.trainer as trainer_module
from ffspace.data import read_dataset
from ffspace.datasets import builtin_path
from ffspace.train import Trainer, TrainConfig, build_model_for_data

MODELS = {"mace (64 channels)": {"family": "mace", "cutoff": 5.0},
          "painn (32 features)": {"family": "painn", "cutoff": 5.0, "features": 32, "layers": 2}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = read_dataset(builtin_path("ethanol_gfn2xtb"))
    train, val = data[:42], data[42:52]
    original = trainer_module.deterministic_training
    print(f"| model | batch | deterministic algorithms | runs equal to the first | s per run |  ({args.threads} "
          f"threads, float32, 2 epochs)")
    print("|---|---|---|---|---|")
    for name, config in MODELS.items():
        for batch in (7, 8):
            for deterministic in (False, True):
                trainer_module.deterministic_training = original if deterministic else \
                    (lambda device: contextlib.nullcontext())
                weights, seconds = [], 0.0
                for _ in range(args.runs):
                    model = build_model_for_data(config, train, seed=0)
                    cfg = TrainConfig(epochs=2, batch_size=batch, dtype="float32", progress=False)
                    with tempfile.TemporaryDirectory() as run:
                        t0 = time.perf_counter()
                        Trainer(model, train, val, cfg, run_dir=run).fit()
                        seconds += time.perf_counter() - t0
                    weights.append({k: v.clone() for k, v in model.state_dict().items()})
                same = sum(all(torch.equal(weights[0][k], w[k]) for k in w) for w in weights[1:])
                print(f"| {name} | {batch} | {'on' if deterministic else 'off'} | {same}/{args.runs - 1} | "
                      f"{seconds / args.runs:.2f} |")
    trainer_module.deterministic_training = original


if __name__ == "__main__":
    main()
