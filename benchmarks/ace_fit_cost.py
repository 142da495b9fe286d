"""What a linear ACE least-squares fit costs per training frame: the design rows (forward-mode autograd against the C
kernel of ffspace.train.ace_design) and their product into the normal equations (a matrix product against BLAS's
symmetric rank-k update), for the earlier and the current default basis on rMD17 aspirin (21 atoms, 63 force rows).

    python benchmarks/ace_fit_cost.py [--threads 2] [--frames 20]

Prints a markdown table in ms per frame (medians would hide nothing here: the frames are all alike).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BASES = {"earlier default": {"n_rbf_3": 4, "lmax_3": 2, "degree_3": 6}, "current default": {}}


def main(argv=None):
    from ffspace.data import read_dataset
    from ffspace.graph.batch import collate, graph_of
    from ffspace.train import build_model_for_data
    from ffspace.train.ace_design import DesignKernel
    from ffspace.train.least_squares import _design, add_gram

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = read_dataset(args.data / "rmd17" / "rmd17_aspirin_train_01.npz")[:max(args.frames, 2)]
    print(f"rMD17 aspirin, {args.frames} frames, {args.threads} threads, float64; ms per frame\n")
    print("| basis | weights | rows by jacfwd | rows by the C kernel | AᵀA by matmul | AᵀA by syrk |")
    print("|---|---|---|---|---|---|")
    for name, settings in BASES.items():
        term = build_model_for_data({"family": "ace", "cutoff": 5.0, **settings}, frames, seed=0).double().terms[-1]
        graphs = [graph_of(f, term.cutoff) for f in frames]
        atoms = torch.arange(frames[0].n_atoms)
        kernel = DesignKernel(term)
        batches = [collate([g], dtype=torch.float64, labels=False) for g in graphs]
        _design(term, graphs[0], torch.float64)  # warm-up
        kernel(batches[0], atoms)
        n = args.frames
        t0 = time.perf_counter()
        for g in graphs[:max(n // 2, 1)]:  # jacfwd is slow: half the frames
            _design(term, g, torch.float64)
        t_jac = (time.perf_counter() - t0) / max(n // 2, 1)
        t0 = time.perf_counter()
        rows = [kernel(b, atoms)[1] for b in batches[:n]]
        t_kernel = (time.perf_counter() - t0) / n
        a = torch.cat(rows)
        gram = torch.zeros(a.shape[1], a.shape[1], dtype=torch.float64)
        t0 = time.perf_counter()
        gram.addmm_(a.T, a)
        t_mm = (time.perf_counter() - t0) / n
        gram.zero_()
        t0 = time.perf_counter()
        add_gram(gram, a)
        t_syrk = (time.perf_counter() - t0) / n
        print(f"| {name} | {term.weights.numel()} | {1e3 * t_jac:.0f} | {1e3 * t_kernel:.1f} | {1e3 * t_mm:.0f} | "
              f"{1e3 * t_syrk:.0f} |", flush=True)


if __name__ == "__main__":
    main()
