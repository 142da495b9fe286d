"""Train, evaluate and run MD on CUDA, and compare with the same model on CPU (issue 28, "Device").

    python benchmarks/cuda_check.py [--out runs/cuda_check] [--epochs 20]

1. `ffspace run` with ``train.device=cuda eval.device=cuda md.device=cuda`` on the shipped ethanol data (PaiNN,
   a fixed number of epochs): the command's exit status, its test errors and MD status, and its wall time.
2. The trained package evaluated on CPU and on CUDA, in float64 and float32, for painn, mace and schnet (the
   packages of the run and of two short CPU fits): largest energy and force differences on 60 test frames.
3. 200 steps of float64 NVE from the same start and velocities on both devices: largest position difference.

Prints a markdown table. Without a CUDA device it stops with exit status 2 and says so. About 2 minutes on a
GPU machine; a fresh machine first builds the venv (``bash scripts/setup.sh``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _ffspace_run(out: Path, epochs: int, device: str) -> tuple[int, float, str]:
    cmd = [sys.executable, "-m", "ffspace.cli", "run", f"out={out}", "overwrite=true", f"train.epochs={epochs}",
           "train.max_time_min=null", f"train.device={device}", f"eval.device={device}", f"md.device={device}",
           "md.steps=1000"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, time.perf_counter() - t0, (proc.stdout + proc.stderr)[-3000:]


def _fit_on_cpu(family: dict, out: Path, train, val) -> Path:
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    model = build_model_for_data(family, train, seed=0)
    Trainer(model, train, val, TrainConfig(epochs=5, batch_size=8, dtype="float64", progress=False),
            run_dir=out, overwrite=True).fit()
    return out / "model.safetensors"


def _compare(package: Path, test, dtype: str, device: str) -> tuple[float, float]:
    from ffspace.potential import Potential

    cpu = Potential.load(package, dtype=dtype, device="cpu").predict(test)
    gpu = Potential.load(package, dtype=dtype, device=device).predict(test)
    return (float(np.abs(cpu["energy"] - gpu["energy"]).max()), float(np.abs(cpu["forces"] - gpu["forces"]).max()))


def _nve(package: Path, start, device: str) -> float:
    from ffspace.md import run_md
    from ffspace.potential import Potential

    finals = [run_md(Potential.load(package, dtype="float64", device=device), start, steps=200, ensemble="nve",
                     temperature=300.0, seed=0).final.positions for device in ("cpu", device)]
    return float(np.abs(finals[0] - finals[1]).max())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "cuda_check")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--device", default="cuda", help="cpu only to try the script itself on a machine without a GPU")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here (torch.cuda.is_available() is False): nothing to check", file=sys.stderr)
        return 2
    from ffspace.data import read_dataset
    from ffspace.datasets import builtin_path

    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"device: {name}, torch {torch.__version__}\n")
    code, seconds, tail = _ffspace_run(args.out / "run", args.epochs, args.device)
    print(f"ffspace run on {args.device} ({args.epochs} epochs, 1000 MD steps): exit {code}, {seconds:.0f} s")
    if code != 0:
        print(tail)
        return 1
    print("\n".join(line for line in tail.splitlines() if "MAE" in line or "md" in line.lower())[-1500:])

    data = read_dataset(builtin_path("ethanol_gfn2xtb"))
    train, val, test = data.split([-1, 40, 60], seed=0)
    packages = {f"painn (ffspace run, trained on {args.device})": args.out / "run" / "train" / "model.safetensors"}
    for name, family in (("mace", {"family": "mace", "cutoff": 5.0}),
                         ("schnet", {"family": "schnet", "cutoff": 5.0, "features": 32, "layers": 2})):
        packages[f"{name} (5 epochs on CPU)"] = _fit_on_cpu(family, args.out / name, train, val)
    print("\n| model | float64: max \\|ΔE\\| (eV) | max \\|ΔF\\| (eV/Å) | float32: max \\|ΔE\\| (eV) | "
          "max \\|ΔF\\| (eV/Å) | NVE 200 steps float64: max \\|Δr\\| (Å) |")
    print("|---|---|---|---|---|---|")
    for name, package in packages.items():
        e64, f64 = _compare(package, test, "float64", args.device)
        e32, f32 = _compare(package, test, "float32", args.device)
        print(f"| {name} | {e64:.1e} | {f64:.1e} | {e32:.1e} | {f32:.1e} | {_nve(package, test[0], args.device):.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
