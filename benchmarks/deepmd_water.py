"""DeePMD-kit (the peer) on the DeePMD water data: se_e2_a trained with `dp --pt train`, frozen, compressed, tested on
data_3 and timed on the 24 000-atom box of `benchmarks/water_ace.py` (issue 29, acceptance 3's peer column).

Runs with a Python that has deepmd-kit (PyTorch backend) and ffspace's torch: `bash scripts/install_deepmd.sh` makes
one (`.venv-deepmd`: deepmd-kit built from source against the pinned torch, whose wheel's custom operators are built
for another torch). It does not import ffspace.

    OMP_NUM_THREADS=2 .venv-deepmd/bin/python benchmarks/deepmd_water.py [--steps 1100] [--run-dir runs/deepmd_water]
        [--skip-train]

Training: data_0-2, the DeePMD-kit water example's se_e2_a (rcut 6 Å, sel 46/92, embedding 25-50-100, axis 16,
fitting 240×3, its loss prefactors and exponential learning rate), ``--steps`` steps (1100 ≈ 4.5 minutes on 2 cores,
the budget ffspace's linear ACE fit took on the same data); DeePMD's own validation on data_3 is only printed, never
used to choose anything. Test: every data_3 frame, force RMSE and MAE (eV/Å → meV/Å), frozen and compressed.
Cost: frame 0 of data_3 repeated n×n×n (n = 2, 3, 5: 1 536, 5 184, 24 000 atoms), energy + forces by `DeepPot.eval`,
median of 3 warm calls; a size the backend cannot evaluate is recorded with its error (DeePMD-kit's PyTorch
inference builds its neighbour list from an atoms × (atoms + ghosts) distance tensor: 24 000 waters ask for 373 GB).
Writes <run-dir>/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _input(data: Path, steps: int) -> dict:
    return {
        "model": {
            "type_map": ["O", "H"],
            "descriptor": {"type": "se_e2_a", "sel": [46, 92], "rcut_smth": 0.5, "rcut": 6.0,
                           "neuron": [25, 50, 100], "resnet_dt": False, "axis_neuron": 16, "seed": 1},
            "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": 1},
        },
        "learning_rate": {"type": "exp", "decay_steps": 50, "start_lr": 0.001, "stop_lr": 3.51e-8},
        "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000, "limit_pref_f": 1,
                 "start_pref_v": 0, "limit_pref_v": 0},
        "training": {
            "training_data": {"systems": [str(data / f"data_{k}") for k in range(3)], "batch_size": "auto"},
            "validation_data": {"systems": [str(data / "data_3")], "batch_size": 1, "numb_btch": 1},
            "numb_steps": steps, "seed": 10, "disp_file": "lcurve.out", "disp_freq": 100, "save_freq": 500,
        },
    }


def _frames(system: Path):
    types = np.loadtxt(system / "type.raw", dtype=int).reshape(-1)
    sets = sorted(system.glob("set.*"))
    coord = np.concatenate([np.load(s / "coord.npy") for s in sets]).reshape(-1, len(types), 3)
    box = np.concatenate([np.load(s / "box.npy") for s in sets]).reshape(-1, 3, 3)
    force = np.concatenate([np.load(s / "force.npy") for s in sets]).reshape(-1, len(types), 3)
    return types, coord, box, force


def _test(model: Path, data: Path) -> dict:
    from deepmd.infer import DeepPot

    dp = DeepPot(str(model))
    types, coord, box, force = _frames(data / "data_3")
    pred = np.concatenate([dp.eval(c.reshape(1, -1), b.reshape(1, -1), types)[1].reshape(-1, 3)
                           for c, b in zip(coord, box)])
    diff = pred - force.reshape(-1, 3)
    return {"frames": int(len(coord)), "forces_rmse_meV_A": float(np.sqrt((diff**2).mean()) * 1e3),
            "forces_mae_meV_A": float(np.abs(diff).mean() * 1e3)}


def _cost(model: Path, data: Path, replicas: int) -> dict:
    from deepmd.infer import DeepPot

    dp = DeepPot(str(model))
    types, coord, box, _ = _frames(data / "data_3")
    cell = box[0]
    shifts = np.array([(a, b, c) for a in range(replicas) for b in range(replicas) for c in range(replicas)]) @ cell
    positions = (coord[0][None] + shifts[:, None]).reshape(-1, 3)
    atom_types = np.tile(types, replicas**3)
    big = (cell * replicas).reshape(1, -1)
    dp.eval(positions.reshape(1, -1), big, atom_types)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        dp.eval(positions.reshape(1, -1), big, atom_types)
        times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    return {"n_atoms": int(len(atom_types)), "ms_per_call": ms, "us_per_atom_step": 1e3 * ms / len(atom_types)}


def _run(cmd, cwd: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "a") as f:
        subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "deepmd_water")
    p.add_argument("--steps", type=int, default=1100)
    p.add_argument("--replicas", type=int, nargs="+", default=[2],
                   help="box repeats per axis for the cost (2: 1 536 atoms; 3 and 5 exhaust 24 GB, see above)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/deepmd_water"))
    p.add_argument("--skip-train", action="store_true", help="reuse the run folder's model.ckpt.pt")
    args = p.parse_args(argv)
    if not (args.data / "data_3").exists():
        sys.exit(f"DeePMD water data not found at {args.data}")
    run = args.run_dir.resolve()
    run.mkdir(parents=True, exist_ok=True)
    dp = [sys.executable, "-m", "deepmd"]
    log = run / "dp.log"
    out = {"steps": args.steps, "threads": os.environ.get("OMP_NUM_THREADS")}
    if not args.skip_train:
        (run / "input.json").write_text(json.dumps(_input(args.data.resolve(), args.steps), indent=2))
        out["train_s"] = _run(dp + ["--pt", "train", "input.json"], run, log)
    out["freeze_s"] = _run(dp + ["--pt", "freeze", "-o", "frozen.pth"], run, log)
    out["compress_s"] = _run(dp + ["--pt", "compress", "-i", "frozen.pth", "-o", "compressed.pth"], run, log)
    for name in ("frozen", "compressed"):
        out[name] = {"test_data_3": _test(run / f"{name}.pth", args.data), "cost": {}}
        for n in args.replicas:
            try:
                out[name]["cost"][n] = _cost(run / f"{name}.pth", args.data, n)
            except (RuntimeError, MemoryError) as exc:  # the pt backend's own neighbour search is O(N²) in memory
                out[name]["cost"][n] = {"n_atoms": 192 * n**3, "status": "failed",
                                        "error": str(exc).splitlines()[0][:300]}
        print(name, json.dumps(out[name]), flush=True)
    import deepmd
    import torch

    out["versions"] = {"deepmd-kit": deepmd.__version__, "torch": torch.__version__}
    (run / "results.json").write_text(json.dumps(out, indent=2))
    print(f"results: {run / 'results.json'}")


if __name__ == "__main__":
    main()
