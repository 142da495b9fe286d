"""Data-parallel training against one process: seconds per epoch with ``train.workers`` = 1 and 2, same threads.

    python benchmarks/train_workers.py                                   # MACE 48 ch. l = 1, 400 aspirin frames
    python benchmarks/train_workers.py --model family=painn features=64 --workers 1 2 4 --threads 4

Each run trains the same model from the same start for --epochs epochs (batch 4) and prints its epoch times and
training losses: the losses must agree (the workers follow the single-process trajectory), the times say
whether the workers pay off on this machine. The workers share --threads.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from ffspace.config import parse_value
from ffspace.data import read_dataset
from ffspace.train import Trainer, TrainConfig, build_model_for_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rmd17 import DATA  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="*", default=["family=mace", "channels=48", "hidden_lmax=1"], metavar="KEY=VALUE")
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--frames", type=int, default=400)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)  # a script: the benchmark's protocol
    model_cfg = {k: parse_value(v) for k, _, v in (item.partition("=") for item in args.model)}
    data = read_dataset(DATA / "rmd17_aspirin_train_01.npz")
    train, val = data[:args.frames], data[950:1000]
    print(f"{model_cfg}, {len(train)} frames, batch 4, {args.threads} threads in all")
    for workers in args.workers:
        model = build_model_for_data(model_cfg, train, seed=0)
        cfg = TrainConfig(epochs=args.epochs, batch_size=4, lr=0.005, schedule="cosine", progress=False,
                          workers=workers)
        with tempfile.TemporaryDirectory() as folder:
            Trainer(model, train, val, cfg, run_dir=folder).fit()
            rows = [json.loads(line) for line in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
        print(f"workers {workers}: s/epoch {[r['epoch_s'] for r in rows]}, "
              f"training loss {[round(r['train_loss'], 5) for r in rows]}")


if __name__ == "__main__":
    main()
