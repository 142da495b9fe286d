"""Infrared spectra: from the dipole of an MD run, and harmonic (normal modes and intensities) from a model or a
reference labeler, so the two can be set side by side (issue 33).

Units: frequencies in cm⁻¹, dipoles in e·Å, Hessians in eV/Å², masses in amu, harmonic intensities in km/mol.
The MD spectrum is the classical absorption lineshape, the Fourier transform of the dipole-derivative
autocorrelation ⟨μ̇(0)·μ̇(t)⟩ (∝ ω² × the transform of ⟨μ(0)·μ(t)⟩), computed as |FT μ̇|² (Wiener–Khinchin) and
averaged over trajectories; for a harmonic mode at equipartition its band area is ∝ |∂μ/∂Q|² k_BT, so relative band
areas compare with relative harmonic intensities.
"""

from __future__ import annotations

import numpy as np

# √(eV / (Å² amu)) in cm⁻¹: a mass-weighted Hessian eigenvalue λ (eV/(Å² amu)) is a wavenumber 521.47·√λ.
_SQRT_EV_A2_AMU_CM = float(np.sqrt(1.602176634e-19 / (1e-20 * 1.66053906660e-27)) / (2 * np.pi * 2.99792458e10))
# Harmonic IR intensity (km/mol) of a mode with dipole derivative |∂μ/∂Q| = 1 e/√amu: N_A/(12 ε₀ c²) in those units.
KM_PER_MOL_PER_E2_AMU = 974.88
# Speed of light in cm/fs: a frequency in 1/fs is a wavenumber f / c.
_C_CM_PER_FS = 2.99792458e-5


def harmonic_modes(hessian: np.ndarray, masses: np.ndarray, dipole_derivatives: np.ndarray | None = None,
                   positions: np.ndarray | None = None) -> dict:
    """Normal modes of a (3N, 3N) Hessian (eV/Å²): ``frequencies`` (cm⁻¹, the 3N − 6 vibrations, imaginary ones
    negative), ``modes`` (3N − 6, N, 3) mass-weighted normalised displacement vectors and, given the (3N, 3) dipole
    derivatives ∂μ_b/∂r_a (e), ``intensities`` (km/mol). With ``positions``, translations and rotations are
    projected out first (exactly zero frequencies), else the six lowest |eigenvalues| are dropped."""
    m = np.repeat(np.asarray(masses, dtype=np.float64), 3)
    h = 0.5 * (hessian + hessian.T) / np.sqrt(np.outer(m, m))
    n = len(masses)
    if positions is not None:
        p = _rigid_projector(np.asarray(positions, dtype=np.float64), np.asarray(masses, dtype=np.float64))
        h = p @ h @ p
    values, vectors = np.linalg.eigh(h)
    order = np.argsort(np.abs(values))
    keep = np.sort(order[6 if n > 2 else 5:]) if n > 1 else np.array([], dtype=int)
    values, vectors = values[keep], vectors[:, keep]
    frequencies = np.sign(values) * np.sqrt(np.abs(values)) * _SQRT_EV_A2_AMU_CM
    out = {"frequencies": frequencies, "modes": vectors.T.reshape(-1, n, 3)}
    if dipole_derivatives is not None:
        # ∂μ/∂Q_k = Σ_a (∂μ/∂r_a) L_ak / √m_a  (e/√amu)
        dmu_dq = (np.asarray(dipole_derivatives) / np.sqrt(m)[:, None]).T @ vectors  # (3, modes)
        out["intensities"] = KM_PER_MOL_PER_E2_AMU * (dmu_dq**2).sum(0)
    return out


def _rigid_projector(positions, masses) -> np.ndarray:
    """Projector (3N, 3N) onto the mass-weighted space orthogonal to the three translations and rotations."""
    n = len(masses)
    sq = np.sqrt(masses)
    centre = (masses[:, None] * positions).sum(0) / masses.sum()
    r = positions - centre
    basis = []
    for d in range(3):
        t = np.zeros((n, 3))
        t[:, d] = sq
        basis.append(t.reshape(-1))
    for d in range(3):
        axis = np.eye(3)[d]
        basis.append((np.cross(axis, r) * sq[:, None]).reshape(-1))
    q, s, _ = np.linalg.svd(np.stack(basis, 1), full_matrices=False)
    q = q[:, s > 1e-8 * s.max()]  # a linear molecule has only two rotations
    return np.eye(3 * n) - q @ q.T


def finite_difference_response(evaluate, structure, step: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Hessian (3N, 3N) eV/Å² and dipole derivatives (3N, 3) e by central differences of ``evaluate(structure)`` →
    (forces (N, 3) eV/Å, dipole (3,) e·Å): 6N calls of a model or a labeler."""
    n = structure.n_atoms
    hessian, dmu = np.zeros((3 * n, 3 * n)), np.zeros((3 * n, 3))
    for a in range(n):
        for d in range(3):
            results = []
            for sign in (1.0, -1.0):
                p = structure.positions.copy()
                p[a, d] += sign * step
                results.append(evaluate(structure.copy(positions=p)))
            (f_plus, mu_plus), (f_minus, mu_minus) = results
            hessian[3 * a + d] = -(f_plus - f_minus).reshape(-1) / (2 * step)
            dmu[3 * a + d] = (mu_plus - mu_minus) / (2 * step)
    return 0.5 * (hessian + hessian.T), dmu


def dipole_spectrum(dipoles, timestep_fs: float, max_cm: float = 4500.0, smoothing_cm: float = 10.0) -> dict:
    """The classical IR lineshape of one or several dipole trajectories (each (T, 3) e·Å, or an array (runs, T, 3),
    sampled every ``timestep_fs``): |FT μ̇|² (Hann window), averaged over trajectories, Gaussian-smoothed
    (σ = ``smoothing_cm``).
    Returns ``frequencies`` (cm⁻¹) and ``intensity`` (arbitrary units, area-comparable between bands)."""
    if isinstance(dipoles, np.ndarray) and dipoles.ndim == 3:  # (runs, T, 3), as `dipole_trajectories` gives
        dipoles = list(dipoles)
    runs = [np.asarray(d, dtype=np.float64) for d in (dipoles if isinstance(dipoles, (list, tuple)) else [dipoles])]
    length = min(len(d) for d in runs)
    if length < 16:
        raise ValueError(f"a dipole trajectory needs at least 16 samples for a spectrum, got {length}")
    total = None
    for d in runs:
        mu_dot = np.gradient(d[:length], timestep_fs, axis=0)  # e·Å/fs
        mu_dot = (mu_dot - mu_dot.mean(0)) * np.hanning(length)[:, None]
        power = (np.abs(np.fft.rfft(mu_dot, axis=0)) ** 2).sum(1)
        total = power if total is None else total + power
    freq = np.fft.rfftfreq(length, timestep_fs) / _C_CM_PER_FS  # cm⁻¹
    intensity = total / len(runs)
    keep = freq <= max_cm
    freq, intensity = freq[keep], intensity[keep]
    if smoothing_cm > 0 and len(freq) > 1:
        dnu = freq[1] - freq[0]
        half = int(np.ceil(4 * smoothing_cm / dnu))
        kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * dnu / smoothing_cm) ** 2)
        intensity = np.convolve(intensity, kernel / kernel.sum(), mode="same")
    return {"frequencies": freq, "intensity": intensity}


def bands(spectrum: dict, windows: list[tuple[float, float]]) -> list[dict]:
    """For each (low, high) cm⁻¹ window: the peak position (cm⁻¹) and the band's area (the spectrum's units)."""
    freq, inten = spectrum["frequencies"], spectrum["intensity"]
    out = []
    for low, high in windows:
        inside = (freq >= low) & (freq <= high)
        if not inside.any():
            raise ValueError(f"no spectrum points between {low} and {high} cm⁻¹")
        f, i = freq[inside], inten[inside]
        out.append({"window_cm": (low, high), "peak_cm": float(f[np.argmax(i)]),
                    "area": float(np.trapezoid(i, f) if hasattr(np, "trapezoid") else np.trapz(i, f))})
    return out


def dipole_trajectory(potential, structure, steps: int, timestep_fs: float = 0.5, temperature: float = 300.0,
                      equilibration_steps: int = 2000, friction: float = 0.01, seed: int = 0,
                      remove_rotation: bool = True) -> dict:
    """One run of `dipole_trajectories`: ``dipoles`` (steps, 3) e·Å and ``etot_eV`` (steps,)."""
    run = dipole_trajectories(potential, structure, 1, steps, timestep_fs, temperature, equilibration_steps,
                              friction, seed, remove_rotation)
    return {**run, "dipoles": run["dipoles"][0], "etot_eV": run["etot_eV"][0]}


def dipole_trajectories(potential, structure, copies: int, steps: int, timestep_fs: float = 0.5,
                        temperature: float = 300.0, equilibration_steps: int = 2000, friction: float = 0.01,
                        seed: int = 0, remove_rotation: bool = True) -> dict:
    """``copies`` independent runs of one molecule, integrated together with one batched model call per step
    (`MoleculeCopies`): Langevin equilibration at ``temperature`` (each copy its own bath), then NVE for ``steps``
    steps recording each copy's dipole μ = −∂E/∂ℰ (e·Å) and total energy at every step, from the same model call
    as the forces. For a field-dependent model (`ffspace.models.field`); the structure's own field, if any, stays
    on. Returns ``dipoles`` (copies, steps, 3) and ``etot_eV`` (copies, steps).

    Why many copies: an isolated molecule in NVE keeps the energy each normal mode had when the thermostat let go
    (a mode's energy is exponentially distributed around kT), and a band's area is proportional to it. One run's
    relative band areas are therefore off by O(100 %); the average over n copies converges as 1/√n.

    ``remove_rotation``: the NVE part starts with each copy's overall translation and rotation taken out of its
    velocities (angular momentum zero, and it is conserved), so the bands are the vibrations' — what harmonic
    frequencies describe. A freely rotating gas-phase molecule adds rotational P/R sidebands ~100 cm⁻¹ either side
    of each band: for water they merged the symmetric and antisymmetric stretches (111 cm⁻¹ apart) and moved the
    bend's peak 3 % up."""
    from ..md.copies import MoleculeCopies
    from ..md.integrators import Langevin, VelocityVerlet

    if not potential.field_dependent:
        raise ValueError("an IR spectrum from MD needs the dipole: train the model with model.field=true")
    if copies < 1:
        raise ValueError(f"copies must be at least 1, got {copies}")
    batch = MoleculeCopies.thermal(potential, structure, copies, temperature, np.random.default_rng(seed),
                                   dipole=True)
    thermostat = Langevin(timestep_fs, temperature, friction, seed=seed, groups=batch.groups())
    _check_finite(batch, "the start")
    for _ in range(equilibration_steps):
        thermostat.step(batch.state, batch)
        _check_finite(batch, "equilibration")
    if remove_rotation:
        masses = batch.state.masses.reshape(copies, -1)
        batch.state.velocities = np.concatenate([without_rigid_motion(x, v, m) for x, v, m in
                                                 zip(batch.positions(), batch.velocities(), masses)])
    verlet = VelocityVerlet(timestep_fs)
    dipoles, etot = np.zeros((copies, steps, 3)), np.zeros((copies, steps))
    for k in range(steps):
        verlet.step(batch.state, batch)
        _check_finite(batch, "NVE")
        dipoles[:, k], etot[:, k] = batch.dipoles, batch.energies + batch.kinetic()
    return {"dipoles": dipoles, "etot_eV": etot, "timestep_fs": timestep_fs, "temperature_K": temperature}


def _check_finite(batch, stage: str) -> None:
    """A copy whose energy or dipole went non-finite is integrated with zeroed forces (`MoleculeCopies`): its
    spectrum would be garbage (and NaN the average), so the run stops at that step with the copies named."""
    bad = np.nonzero(~np.isfinite(batch.energies) | ~np.isfinite(batch.dipoles).all(1))[0]
    if len(bad):
        raise FloatingPointError(f"dipole MD: non-finite energy for copies {bad[:10].tolist()} during {stage}")


def without_rigid_motion(positions: np.ndarray, velocities: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """``velocities`` (N, 3) less the centre-of-mass velocity and the rigid rotation ω × (r − R) with ω = I⁻¹ L
    (a pseudo-inverse for linear molecules, whose axis has no moment): zero momentum and angular momentum."""
    m = np.asarray(masses, dtype=np.float64).reshape(-1, 1)
    r = positions - (m * positions).sum(0) / m.sum()
    v = velocities - (m * velocities).sum(0) / m.sum()
    angular = (m * np.cross(r, v)).sum(0)
    inertia = (m[:, 0, None, None] * ((r * r).sum(1)[:, None, None] * np.eye(3) - r[:, :, None] * r[:, None, :])).sum(0)
    omega = np.linalg.pinv(inertia) @ angular
    return v - np.cross(omega, r)
