"""Integrators on float64 numpy state (Å, Å/fs, amu, eV): velocity Verlet (NVE) and Langevin BAOAB (NVT)."""

from __future__ import annotations

import numpy as np

from .. import units


class MDState:
    """Positions are kept continuous (never re-wrapped) so neighbor-list shifts stay valid."""

    def __init__(self, structure, velocities=None, masses=None):
        from ase.data import atomic_masses

        self.numbers = structure.numbers.copy()
        self.positions = structure.positions.copy()
        self.cell = structure.cell.copy()
        self.pbc = structure.pbc.copy()
        self.info = {k: v for k, v in structure.info.items() if k in ("charge", "field")}
        self.masses = np.asarray(atomic_masses[self.numbers] if masses is None else masses, dtype=np.float64)
        # A copy: the integrators change it in place, and the caller's array is the caller's.
        self.velocities = np.zeros_like(self.positions) if velocities is None else np.array(velocities, float)
        self.forces = None
        self.energy = None
        self.step = 0
        self.time_fs = 0.0

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    @property
    def dof(self) -> int:
        return max(1, 3 * self.n_atoms - 3) if self.n_atoms > 1 else 3

    def kinetic_energy(self) -> float:
        return float(0.5 * (self.masses[:, None] * self.velocities**2).sum() * units.MV2_TO_EV)

    def temperature(self) -> float:
        return 2.0 * self.kinetic_energy() / (self.dof * units.kB)

    def acceleration(self) -> np.ndarray:
        if getattr(self, "_inverse_masses", None) is None or self._inverse_masses.shape[0] != self.masses.shape[0]:
            self._inverse_masses = units.ACCEL_TO_A_PER_FS2 / self.masses[:, None]  # (masses never change in a run)
        return self.forces * self._inverse_masses


def maxwell_boltzmann(masses: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """Velocities (Å/fs) at ``temperature`` K with zero total momentum, rescaled to hit T exactly."""
    sigma = np.sqrt(units.kB * temperature / masses * units.ACCEL_TO_A_PER_FS2)
    v = rng.normal(size=(len(masses), 3)) * sigma[:, None]
    v -= (masses[:, None] * v).sum(axis=0) / masses.sum()
    if temperature > 0 and len(masses) > 1:
        ke = 0.5 * (masses[:, None] * v**2).sum() * units.MV2_TO_EV
        target = 0.5 * (3 * len(masses) - 3) * units.kB * temperature
        v *= np.sqrt(target / ke)
    return v


class VelocityVerlet:
    """Symplectic, time-reversible NVE integrator."""

    def __init__(self, timestep_fs: float = 0.5):
        self.dt = float(timestep_fs)

    def step(self, state: MDState, compute_forces) -> None:
        dt = self.dt
        state.velocities += 0.5 * dt * state.acceleration()
        state.positions += dt * state.velocities
        state.energy, state.forces = compute_forces(state.positions)
        state.velocities += 0.5 * dt * state.acceleration()


class Langevin:
    """BAOAB Langevin (Leimkuhler & Matthews): accurate configurational sampling at ``temperature``.

    ``friction`` is in 1/fs (0.01 /fs = 100 fs relaxation time).
    """

    def __init__(self, timestep_fs: float, temperature, friction: float = 0.01, seed=0, groups=None):
        """``temperature``: K, one for the whole state or one per atom, (N,), so that molecules run as one
        batch can each have their own bath. ``groups`` (N,) ints: independent molecules in one state (e.g.
        seeds run as a batch); each keeps its own centre of mass still. ``seed`` may be an int or a
        `numpy.random.SeedSequence`."""
        self.dt, self.friction = float(timestep_fs), float(friction)
        self.temperature = float(temperature) if np.ndim(temperature) == 0 else np.asarray(temperature, float)
        self.rng = np.random.default_rng(seed)
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)

    def _noise(self, masses: np.ndarray) -> tuple[float, np.ndarray]:
        """The O step's damping c1 and noise amplitude per atom (N, 1), kept while the settings stay the same."""
        key = (self.dt, self.friction, np.asarray(self.temperature).tobytes(), masses.tobytes())
        if getattr(self, "_noise_key", None) != key:
            c1 = np.exp(-self.friction * self.dt)
            sigma = np.sqrt((1 - c1**2) * units.kB * self.temperature / masses * units.ACCEL_TO_A_PER_FS2)
            self._noise_key, self._noise_value = key, (c1, sigma[:, None])
        return self._noise_value

    def step(self, state: MDState, compute_forces) -> None:
        dt = self.dt
        c1, sigma = self._noise(state.masses)
        state.velocities += 0.5 * dt * state.acceleration()
        state.positions += 0.5 * dt * state.velocities
        v = c1 * state.velocities + sigma * self.rng.normal(size=state.velocities.shape)
        # Remove the centre-of-mass drift the noise adds (as ASE's fixcm): momentum stays zero, so the
        # temperature's 3N − 3 degrees of freedom remain the right count.
        state.velocities = v - self._com_velocity(state.masses, v)
        state.positions += 0.5 * dt * state.velocities
        state.energy, state.forces = compute_forces(state.positions)
        state.velocities += 0.5 * dt * state.acceleration()

    def _com_velocity(self, masses: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Centre-of-mass velocity of the whole state, or of each atom's group, per atom."""
        if self.groups is None:
            return (masses[:, None] * v).sum(axis=0) / masses.sum()
        n = int(self.groups.max()) + 1
        momentum = np.zeros((n, 3))
        np.add.at(momentum, self.groups, masses[:, None] * v)
        mass = np.bincount(self.groups, weights=masses, minlength=n)
        return (momentum / mass[:, None])[self.groups]
