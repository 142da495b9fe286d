"""Inference cost: warm, median wall time of one energy + forces evaluation, per atom and step.

`model_cost` times the model as MD uses it: the graph is built once (MD rebuilds it only when a Verlet
skin is exceeded) and every timed call is forward + autograd forces. `openmm_cost` times real MD steps of
an exported OpenMM System. Both report milliseconds per step and microseconds per atom-step. Thread
counts are the caller's business (benchmark scripts set them; library code never does).
"""

from __future__ import annotations

import statistics
import time


def model_cost(potential, structure, repeats: int = 30, warmup: int = 5) -> dict:
    """Median cost of energy + forces for ``structure`` with ``potential`` (its dtype and device)."""
    import torch

    batch = potential.batch([structure])
    sync = torch.cuda.synchronize if potential.device.type == "cuda" else (lambda: None)
    times = []
    for k in range(warmup + repeats):
        sync()
        t0 = time.perf_counter()
        potential.compute(batch, forces=True)
        sync()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return _summary(times, structure.n_atoms, repeats)


def openmm_cost(export, structure, steps: int = 200, repeats: int = 5, platform: str = "CPU",
                threads: int | None = 2) -> dict:
    """Median cost per MD step (velocity Verlet, 0.5 fs) of an `OpenMMExport` on ``platform``."""
    ctx = export.context(platform=platform, threads=threads, positions=structure.positions)
    ctx.setVelocitiesToTemperature(300.0)
    return openmm_context_cost(ctx, structure.n_atoms, steps, repeats)


def openmm_context_cost(context, n_atoms: int, steps: int = 200, repeats: int = 5) -> dict:
    """Median cost per MD step of an OpenMM ``context`` (its own integrator), after ``steps`` warm-up steps."""
    integrator = context.getIntegrator()
    integrator.step(steps)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        integrator.step(steps)
        times.append((time.perf_counter() - t0) / steps)
    return _summary(times, n_atoms, steps * repeats)


def _summary(times, n_atoms: int, calls: int) -> dict:
    median = statistics.median(times)
    return {"ms_per_step": median * 1e3, "us_per_atom_step": median * 1e6 / n_atoms, "n_atoms": int(n_atoms),
            "calls": int(calls)}
