"""One model, every engine: µs per atom-step of an ffspace package in ffspace's own MD, OpenMM (PythonForce),
LAMMPS (fix external), TorchSim and ASE, in one process, on frame 0 of rMD17 aspirin (issue 32, acceptance 2).

    OMP_NUM_THREADS=2 python benchmarks/engine_cost.py \
        --package benchmarks/results/bench_aspirin/aspirin/mace/train/model.safetensors [--steps 500] [--rounds 3]

Each engine runs velocity Verlet (NVE) at 0.5 fs with the same package in ``--dtype`` (float32 by default) after a
warm-up of 100 steps, nothing written: OpenMM's VerletIntegrator on its CPU platform; LAMMPS ``fix nve``; TorchSim's
``nve`` (one system, and ``--copies`` systems batched in one state); ASE's VelocityVerlet with ffspace's calculator;
ffspace's ``run_md`` (its default fast path). The engines alternate ``--rounds`` times; each cost is the fastest
round's. An engine whose package is not installed is reported as such. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _timed(step, steps: int) -> float:
    step(100)  # warm-up (the fast path builds and checks itself on the first calls)
    t0 = time.perf_counter()
    step(steps)
    return (time.perf_counter() - t0) / steps * 1000


def openmm_ms(package, start, steps: int, dtype: str, copies: int) -> float:
    import openmm
    from openmm import unit

    from ffspace.interfaces.openmm_ml import openmm_positions, openmm_system

    integrator = openmm.VerletIntegrator(0.0005 * unit.picoseconds)
    context = openmm.Context(openmm_system(package, start, dtype=dtype), integrator,
                             openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(openmm_positions(start))
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return _timed(integrator.step, steps)


def ffspace_ms(package, start, steps: int, dtype: str, copies: int) -> float:
    from ffspace.md.simulation import run_md
    from ffspace.potential import Potential

    pot = Potential.load(package, dtype=dtype)
    kwargs = dict(ensemble="nve", temperature=300.0, timestep_fs=0.5, bond_tolerance=None)
    return _timed(lambda n: run_md(pot, start, steps=n, **kwargs), steps)


def lammps_ms(package, start, steps: int, dtype: str, copies: int) -> float:
    from ffspace.interfaces.lammps import attach, lammps_from_structure

    lmp, types = lammps_from_structure(start)
    try:
        attach(lmp, package, types, dtype=dtype)
        lmp.commands_list(["velocity all create 300 1", "fix nve all nve", "timestep 0.0005", "thermo 0"])
        return _timed(lambda n: lmp.command(f"run {n}"), steps)
    finally:
        lmp.close()


def _torchsim(package, start, steps, dtype, copies):
    import torch
    import torch_sim as ts
    from torch_sim.units import MetalUnits

    from ffspace.interfaces.torchsim import TorchSimModel

    tdtype = getattr(torch, dtype)
    model = TorchSimModel(package, dtype=dtype)
    state = ts.initialize_state([start.to_ase()] * copies, torch.device("cpu"), tdtype)
    init, update = ts.nve(model, dt=torch.tensor(0.0005 * MetalUnits.time, dtype=tdtype),
                          kT=torch.tensor(300 * MetalUnits.temperature, dtype=tdtype), seed=1)
    holder = [init(state)]

    def step(n):
        for _ in range(n):
            holder[0] = update(holder[0])
    return _timed(step, steps) / copies  # per copy: the cost per atom-step divides by every atom of the batch


def torchsim_ms(package, start, steps, dtype, copies):
    return _torchsim(package, start, steps, dtype, 1)


def torchsim_batched_ms(package, start, steps, dtype, copies):
    return _torchsim(package, start, steps, dtype, copies)


def ase_ms(package, start, steps: int, dtype: str, copies: int) -> float:
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from ffspace.interfaces import FFSpaceCalculator

    atoms = start.to_ase()
    atoms.calc = FFSpaceCalculator(package, dtype=dtype)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(1))
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    return _timed(dyn.run, steps)


ENGINES = {"ffspace run_md": (ffspace_ms, None), "OpenMM (PythonForce)": (openmm_ms, "openmm"),
           "LAMMPS (fix external)": (lammps_ms, "lammps"), "TorchSim (1 system)": (torchsim_ms, "torch_sim"),
           "TorchSim (copies batched)": (torchsim_batched_ms, "torch_sim"), "ASE (VelocityVerlet)": (ase_ms, None)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", default=str(ROOT / "benchmarks/results/bench_aspirin/aspirin/mace/train/"
                                            "model.safetensors"))
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/rmd17/rmd17_aspirin_test_01.npz"))
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--copies", type=int, default=10, help="systems in the batched TorchSim run")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--engines", nargs="*", default=list(ENGINES), help=f"a subset of {list(ENGINES)}")
    args = p.parse_args(argv)
    import importlib.util

    from ffspace.data import read_dataset

    start = read_dataset(args.data)[0]
    best, missing = {}, {}
    for name in args.engines:
        fn, module = ENGINES[name]
        if module and importlib.util.find_spec(module) is None:
            missing[name] = f"{module} not installed"
    for r in range(args.rounds):
        for name in args.engines:
            if name in missing:
                continue
            fn, _ = ENGINES[name]
            ms = fn(args.package, start, args.steps, args.dtype, args.copies)
            best[name] = min(best.get(name, float("inf")), ms)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in best.items()), file=sys.stderr, flush=True)
    print(f"| engine | ms per molecule-step | µs/atom-step ({start.n_atoms} atoms, {args.dtype}) | vs ffspace |\n"
          "|---|---|---|---|")
    ref = best.get("ffspace run_md")
    for name in args.engines:
        if name in missing:
            print(f"| {name} | – | not run: {missing[name]} | |")
            continue
        ms = best[name]
        label = name.replace("copies", f"{args.copies} copies")
        print(f"| {label} | {ms:.3f} | {ms * 1000 / start.n_atoms:.1f} | "
              f"{'' if ref is None else f'{ms / ref:.2f}×'} |")


if __name__ == "__main__":
    main()
