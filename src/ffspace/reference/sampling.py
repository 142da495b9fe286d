"""Samplers that make configurations for labeling. Each frame records how it was made."""

from __future__ import annotations

import numpy as np

from ..data.structure import Structure


def md_sample(structure: Structure, calculator, n_frames: int, temperature: float = 300.0,
              interval: int = 10, timestep_fs: float = 0.5, equilibration_steps: int = 200,
              friction: float = 0.02, seed: int = 0, progress: bool = False) -> list[Structure]:
    """Langevin MD driven by ``calculator`` (an ASE calculator, e.g. xTB); one frame every ``interval`` steps."""
    from ase import units as ase_units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    atoms = structure.to_ase()
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, timestep_fs * ase_units.fs, temperature_K=temperature, friction=friction / ase_units.fs,
                   rng=rng)
    dyn.run(equilibration_steps)
    frames = []
    for k in tqdm(range(n_frames), desc=f"MD sampling {temperature:g} K", disable=not progress):
        dyn.run(interval)
        frames.append(Structure.from_ase(atoms, info={
            "sampler": "md", "sampler_temperature_K": temperature, "sampler_step": equilibration_steps
            + (k + 1) * interval, "sampler_timestep_fs": timestep_fs, "sampler_seed": seed}))
    return frames
