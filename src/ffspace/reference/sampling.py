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


def rattle(structure: Structure, n_frames: int, sigma: float = 0.05, seed: int = 0) -> list[Structure]:
    """Gaussian displacements of every atom (σ in Å)."""
    rng = np.random.default_rng(seed)
    return [structure.copy(positions=structure.positions + rng.normal(scale=sigma, size=structure.positions.shape),
                           energy=None, forces=None, stress=None,
                           info={**structure.info, "sampler": "rattle", "sampler_sigma_A": sigma,
                                 "sampler_seed": seed, "sampler_index": k})
            for k in range(n_frames)]


def normal_mode_sample(structure: Structure, labeler, n_frames: int, temperature: float = 300.0,
                       seed: int = 0, delta: float = 0.01) -> list[Structure]:
    """Normal-mode sampling (ANI's recipe): displace along the Hessian's modes with Boltzmann-distributed
    harmonic amplitudes at ``temperature`` (``structure`` should be near a minimum). The Hessian comes from central differences of the
    labeler's forces (6N calls), so one Hessian serves any number of frames."""
    from ase.data import atomic_masses

    from .. import units

    n = structure.n_atoms
    hessian = np.zeros((3 * n, 3 * n))
    for a in range(n):
        for d in range(3):
            f = []
            for sign in (1, -1):
                p = structure.positions.copy()
                p[a, d] += sign * delta
                f.append(labeler.label(structure.copy(positions=p, energy=None, forces=None)).forces.ravel())
            hessian[3 * a + d] = -(f[0] - f[1]) / (2 * delta)
    hessian = 0.5 * (hessian + hessian.T)
    m = np.repeat(atomic_masses[structure.numbers], 3)
    w2, modes = np.linalg.eigh(hessian / np.sqrt(np.outer(m, m)))
    keep = w2 > 1e-3 * w2.max()  # drop translations, rotations and numerically soft modes
    w2, modes = w2[keep], modes[:, keep]
    rng = np.random.default_rng(seed)
    kt = units.kB * temperature
    frames = []
    for k in range(n_frames):
        # Boltzmann distribution of a harmonic mode: mass-weighted q ~ N(0, kT / ω²).
        q = rng.normal(size=len(w2)) * np.sqrt(kt / w2)
        disp = (modes @ q) / np.sqrt(m)
        frames.append(structure.copy(positions=structure.positions + disp.reshape(n, 3), energy=None, forces=None,
                                     info={**structure.info, "sampler": "normal_modes",
                                           "sampler_temperature_K": temperature, "sampler_seed": seed,
                                           "sampler_index": k}))
    return frames
