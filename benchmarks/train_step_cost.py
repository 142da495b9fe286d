"""Cost of one training step (energy, forces by autograd, loss on both, backward, AdamW step) of any family.

    python benchmarks/train_step_cost.py --family mace --batch-size 8                # rMD17 aspirin frames
    python benchmarks/train_step_cost.py --family painn --model features=64 --profile  # + torch profiler table

Prints milliseconds per step and per frame (median of --steps steps after a warm-up), then the warm inference
cost of energy + forces on one molecule (µs per atom-step), float32, --threads threads. Peers (mace_torch,
torchani) take the same command when installed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ffspace.config import parse_value
from ffspace.data import read_dataset
from ffspace.graph.batch import collate, graph_of
from ffspace.evaluate.speed import model_cost
from ffspace.potential import Potential
from ffspace.train import Loss, build_model_for_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rmd17 import DATA, FAMILY_DEFAULTS  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--molecule", default="aspirin")
    p.add_argument("--family", default="mace")
    p.add_argument("--model", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="also print the torch profiler's top operations")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)  # a script: the benchmark's protocol
    data = read_dataset(DATA / f"rmd17_{args.molecule}_train_01.npz")[:200]
    cfg = {"family": args.family, **FAMILY_DEFAULTS.get(args.family, {})}
    for item in args.model:
        key, _, value = item.partition("=")
        cfg[key] = parse_value(value)
    model = build_model_for_data(cfg, data)
    pot = Potential(model, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    graphs = [graph_of(s, pot.cutoff) for s in data]
    loss_fn = Loss()

    def step(k):
        batch = collate([graphs[(k * args.batch_size + m) % len(graphs)] for m in range(args.batch_size)],
                        dtype=torch.float32)
        loss, _ = loss_fn(pot.compute(batch, forces=True, training=True), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for k in range(3):
        step(k)
    times = []
    for k in range(args.steps):
        t0 = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(f"{args.family} {cfg}: batch {args.batch_size}, {args.threads} threads: {ms:.1f} ms/step, "
          f"{ms / args.batch_size:.2f} ms/frame")
    # Inference: warm energy + forces of one molecule (the cost does not depend on the weights' values).
    model.train(False)
    cost = model_cost(Potential(model, dtype=torch.float32), data[0])
    print(f"inference: {cost['us_per_atom_step']:.0f} µs/atom-step (float32, {args.threads} threads)")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for k in range(5):
                step(k)
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
