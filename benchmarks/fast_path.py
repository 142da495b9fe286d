"""The fast inference path (`Potential(..., fast=True)`, ffspace/potential/fast.py) against the eager one, per family.

    python benchmarks/fast_path.py [--families mm schnet painn mace ...] [--dtype float32] [--threads 2]
    python benchmarks/fast_path.py --profile schnet     # where a compiled call's time goes (cProfile, 200 calls)
    python benchmarks/fast_path.py --package benchmarks/results/bench_aspirin/aspirin/mace/train/model.safetensors
                                                        # a trained package instead (with its test-set errors)

Untrained models of the bench_aspirin.yaml sizes (cost does not depend on the weights) on rMD17 aspirin (21 atoms):
the first call's time (compiling and the check against eager), the median energy + forces call of each path
(calls alternating between the paths) on one molecule (the MD case, graph built beforehand), and the largest differences over 20 frames. Prints a
markdown table; a family whose fast path is off says why.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

MODELS = {
    "mm": {"family": "mm", "cutoff": 6.0},
    "graph_mm": {"family": "graph_mm", "features": 64, "layers": 3, "cutoff": 3.0},
    "ani": {"family": "ani", "cutoff": 5.2},
    "schnet": {"family": "schnet", "features": 128, "layers": 3, "cutoff": 5.0},
    "painn": {"family": "painn", "features": 128, "layers": 3, "cutoff": 5.0},
    "dimenet": {"family": "dimenet", "cutoff": 5.0},  # DimeNet++-style defaults (64/32/8/128, 3 blocks)
    "mace": {"family": "mace", "channels": 48, "hidden_lmax": 1, "lmax": 2, "layers": 2, "correlation": 3,
             "cutoff": 5.0},
    "ace": {"family": "ace", "cutoff": 5.0},  # hand-derived forces (potential/analytic.py), nothing compiled
    # hand-derived forces (potential/analytic_dp.py); compressed: the C kernel of potential/native_dp.py
    "deep_potential": {"family": "deep_potential", "cutoff": 6.0},
    "deep_potential_compressed": {"family": "deep_potential", "cutoff": 6.0, "compressed": True},
}


def _interleaved_ms(potentials, batch, calls: int) -> list[float]:
    """Median ms per energy + forces call of each potential, calls alternating between them (a slow phase of a
    shared machine then hits both alike)."""
    times = [[] for _ in potentials]
    for pot in potentials:
        pot.compute(batch)
    for _ in range(calls):
        for k, pot in enumerate(potentials):
            t0 = time.perf_counter()
            pot.compute(batch)
            times[k].append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def _random_linear_weights(model) -> None:
    """A linear family starts with zero weights (the least-squares fit sets them): random ones, so that the
    comparison of forces means something (the cost does not depend on the values)."""
    gen = torch.Generator().manual_seed(0)
    for term in getattr(model, "terms", [model]):
        if getattr(term, "linear", False):
            with torch.no_grad():
                term.weights.copy_(0.01 * torch.randn(term.weights.shape, generator=gen))


def _profile(pot, structure, calls: int = 200) -> None:
    import cProfile
    import pstats

    batch = pot.batch([structure])
    pot.compute(batch)  # compile and check
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        pot.compute(batch)
    profile.disable()
    print(f"fast path: {pot.fast.state}; {calls} calls")
    pstats.Stats(profile).sort_stats("tottime").print_stats(15)


def main(argv=None):
    from ffspace.data import read_dataset
    from ffspace.potential import Potential
    from ffspace.potential.fast import FastPathWarning
    from ffspace.train import build_model_for_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--profile", choices=list(MODELS), help="profile 200 compiled calls of this family instead")
    p.add_argument("--package", type=Path, help="a trained model package instead of the untrained families; also "
                   "reports its rMD17 aspirin test errors through both paths")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = read_dataset(args.data / "rmd17" / "rmd17_aspirin_train_01.npz")[:200]
    test = list(frames[::10])
    if args.profile:
        _profile(Potential(build_model_for_data(MODELS[args.profile], frames, seed=0), dtype=args.dtype, fast=True),
                 frames[0])
        return
    print(f"rMD17 aspirin (21 atoms), {args.dtype}, {args.threads} threads; one molecule per call\n")
    print("| model | first fast call (s) | eager (ms/call) | fast (ms/call) | speed-up | max \\|ΔE\\| (eV) | "
          "max \\|ΔF\\| (eV/Å) | fast path |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ([args.package.parent.parent.name] if args.package else args.families):
        if args.package:
            eager = Potential.load(args.package, dtype=args.dtype, fast=False)
            fast = Potential.load(args.package, dtype=args.dtype, fast=True)
        else:
            model = build_model_for_data(MODELS[name], frames, seed=0)
            _random_linear_weights(model)
            eager = Potential(model, dtype=args.dtype, fast=False)
            fast = Potential(model, dtype=args.dtype, fast=True)
        batch = eager.batch([frames[0]])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FastPathWarning)
            t0 = time.perf_counter()
            fast.compute(batch)
            first = time.perf_counter() - t0
        why = "; ".join(str(w.message) for w in caught if issubclass(w.category, FastPathWarning))
        a, b = fast.predict(test, batch_size=1), eager.predict(test, batch_size=1)
        de, df = np.abs(a["energy"] - b["energy"]).max(), np.abs(a["forces"] - b["forces"]).max()
        t_eager, t_fast = _interleaved_ms([eager, fast], batch, args.calls)
        print(f"| {name} | {first:.1f} | {t_eager:.2f} | {t_fast:.2f} | {t_eager / t_fast:.2f}× | {de:.1e} | "
              f"{df:.1e} | {fast.fast.state}{': ' + why if why else ''} |", flush=True)
    if args.package:  # the package's accuracy through both paths, on the 1000 test frames
        test = read_dataset(args.data / "rmd17" / "rmd17_aspirin_test_01.npz")
        reference = np.concatenate([s.forces for s in test])
        print("\n| path | test F MAE (meV/Å) | test E MAE (meV, mean offset kept) | time for 1000 frames (s) |\n|---|---|---|---|")
        for label, pot in (("eager", eager), ("fast", fast)):
            t0 = time.perf_counter()
            out = pot.predict(list(test), batch_size=1)
            seconds = time.perf_counter() - t0
            f_mae = 1e3 * np.abs(np.asarray(out["forces"]).reshape(-1, 3) - reference).mean()
            e_mae = 1e3 * np.abs(np.asarray(out["energy"]) - np.array([s.energy for s in test])).mean()
            print(f"| {label} | {f_mae:.2f} | {e_mae:.2f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
