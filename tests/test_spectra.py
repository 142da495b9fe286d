"""IR spectra (issue 33): the harmonic analysis against a case with a closed form, the MD lineshape against a
synthetic dipole whose bands are known, and the dipole trajectory of a field-dependent model."""

import numpy as np
import pytest
import torch

from ffspace.data.structure import Structure
from ffspace.evaluate.spectra import (KM_PER_MOL_PER_E2_AMU, bands, dipole_spectrum, dipole_trajectories,
                                      dipole_trajectory, finite_difference_response, harmonic_modes,
                                      without_rigid_motion)


def test_a_diatomic_spring_has_the_textbook_frequency_and_intensity():
    """Two atoms on a spring k along x: ν̃ = √(k/μ)/(2πc); charges ±q make ∂μ/∂Q = q/√μ... per the formula."""
    k, masses, q = 36.0, np.array([1.008, 18.998]), 0.4  # eV/Å², amu (H–F-like), e
    hessian = np.zeros((6, 6))
    hessian[0, 0] = hessian[3, 3] = k
    hessian[0, 3] = hessian[3, 0] = -k
    dmu = np.zeros((6, 3))
    dmu[0, 0], dmu[3, 0] = q, -q  # μ_x = q x_H − q x_F
    out = harmonic_modes(hessian, masses, dmu, positions=np.array([[0.0, 0, 0], [0.92, 0, 0]]))
    reduced = masses.prod() / masses.sum()
    expected = np.sqrt(k * 1.602176634e-19 / (1e-20 * reduced * 1.66053906660e-27)) / (2 * np.pi * 2.99792458e10)
    assert out["frequencies"].shape == (1,)  # 3N − 5 = 1 for a diatomic
    assert abs(out["frequencies"][0] - expected) < 1e-6 * expected
    # |∂μ/∂Q|² = q² (1/m_H + 1/m_F) for the stretch normal coordinate
    assert abs(out["intensities"][0] - KM_PER_MOL_PER_E2_AMU * q**2 / reduced) < 1e-6 * out["intensities"][0]


def test_finite_differences_recover_a_quadratic_surface_exactly():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(9, 9))
    hess = a @ a.T
    dmu = rng.normal(size=(9, 3))
    s = Structure(numbers=[8, 1, 1], positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    x0 = s.positions.reshape(-1)

    def evaluate(frame):
        dx = frame.positions.reshape(-1) - x0
        return -(hess @ dx).reshape(3, 3), dmu.T @ dx

    h, d = finite_difference_response(evaluate, s)
    assert np.allclose(h, hess, atol=1e-9) and np.allclose(d, dmu, atol=1e-9)


def test_the_md_lineshape_finds_bands_and_their_relative_areas():
    """μ(t) = a₁ cos(ω₁t) + a₂ cos(ω₂t): bands at ν̃₁, ν̃₂ with areas ∝ (a ω)² (the spectrum is that of μ̇)."""
    dt, n = 0.25, 2**15  # fs
    c = 2.99792458e-5  # cm/fs
    t = np.arange(n) * dt
    nu = np.array([1600.0, 3700.0])
    amp = np.array([0.02, 0.01])
    mu = np.zeros((n, 3))
    mu[:, 0] = amp[0] * np.cos(2 * np.pi * c * nu[0] * t)
    mu[:, 1] = amp[1] * np.cos(2 * np.pi * c * nu[1] * t + 0.3)
    spec = dipole_spectrum(mu, dt, smoothing_cm=5.0)
    found = bands(spec, [(1000, 2500), (3000, 4500)])
    for b, v in zip(found, nu):
        assert abs(b["peak_cm"] - v) < 3.0
    expected = (amp[0] * nu[0]) ** 2 / (amp[1] * nu[1]) ** 2
    assert abs(found[0]["area"] / found[1]["area"] / expected - 1) < 0.05
    with pytest.raises(ValueError, match="at least 16 samples"):
        dipole_spectrum(mu[:8], dt)


def test_dipole_trajectory_records_a_conserved_nve_run():
    from ffspace.models import AtomicReference, FieldResponse, SchNet, Sum
    from ffspace.potential import Potential
    from ffspace.testing import physics

    torch.manual_seed(0)
    model = Sum([AtomicReference({1: -13.6, 8: -2041.0}), SchNet([1, 8], cutoff=4.0, features=16, layers=1),
                 FieldResponse([1, 8], cutoff=3.5, features=16, layers=1)])
    pot = Potential(model, dtype=torch.float64)
    water = physics.molecule("H2O", rattle=0.0)
    run = dipole_trajectory(pot, water, steps=200, timestep_fs=0.25, temperature=300.0, equilibration_steps=50)
    assert run["dipoles"].shape == (200, 3) and np.ptp(run["dipoles"], axis=0).max() > 1e-4
    assert np.ptp(run["etot_eV"]) < 1e-3
    plain = Potential(Sum([AtomicReference({1: -13.6, 8: -2041.0}), SchNet([1, 8], cutoff=4.0, features=8,
                                                                            layers=1)]), dtype=torch.float64)
    with pytest.raises(ValueError, match="model.field=true"):
        dipole_trajectory(plain, water, steps=10)


def test_dipole_trajectories_run_copies_as_one_batch():
    """Three copies in one batch: each its own conserved NVE run, different from the others, and each step's
    dipoles those of the model at the copies' own geometries."""
    from ffspace.models import AtomicReference, FieldResponse, SchNet, Sum
    from ffspace.potential import Potential
    from ffspace.testing import physics

    torch.manual_seed(0)
    model = Sum([AtomicReference({1: -13.6, 8: -2041.0}), SchNet([1, 8], cutoff=4.0, features=16, layers=1),
                 FieldResponse([1, 8], cutoff=3.5, features=16, layers=1)])
    pot = Potential(model, dtype=torch.float64)
    water = physics.molecule("H2O", rattle=0.0)
    run = dipole_trajectories(pot, water, copies=3, steps=100, timestep_fs=0.25, equilibration_steps=40, seed=2)
    assert run["dipoles"].shape == (3, 100, 3) and run["etot_eV"].shape == (3, 100)
    assert np.ptp(run["etot_eV"], axis=1).max() < 1e-3
    assert np.abs(run["dipoles"][0] - run["dipoles"][1]).max() > 1e-4
    spectrum = dipole_spectrum(run["dipoles"], 0.25, smoothing_cm=0)  # (runs, T, 3) is a list of runs
    assert np.allclose(spectrum["intensity"], dipole_spectrum(list(run["dipoles"]), 0.25, smoothing_cm=0)["intensity"])
    with pytest.raises(ValueError, match="at least 1"):
        dipole_trajectories(pot, water, copies=0, steps=10)


@pytest.mark.parametrize("linear", [False, True])
def test_rigid_motion_is_taken_out_and_vibrations_kept(linear):
    """Zero momentum and angular momentum after, and a pure vibration (a symmetric stretch) unchanged."""
    rng = np.random.default_rng(1)
    if linear:  # CO2 along x: its axis has no moment of inertia
        x = np.array([[0.0, 0, 0], [1.16, 0, 0], [-1.16, 0, 0]])
        m = np.array([12.0, 16.0, 16.0])
        stretch = np.array([[0.0, 0, 0], [1, 0, 0], [-1, 0, 0]])
    else:  # water
        x = np.array([[0.0, 0, 0.12], [0, 0.76, -0.47], [0, -0.76, -0.47]])
        m = np.array([16.0, 1.0, 1.0])
        stretch = np.array([[0.0, 0, 0.0], [0, 0.76, -0.59], [0, -0.76, -0.59]])
        stretch[0] = -(m[1:, None] * stretch[1:]).sum(0) / m[0]  # no momentum
    v = without_rigid_motion(x, rng.normal(size=(3, 3)), m)
    r = x - (m[:, None] * x).sum(0) / m.sum()
    assert np.abs((m[:, None] * v).sum(0)).max() < 1e-12
    assert np.abs((m[:, None] * np.cross(r, v)).sum(0)).max() < 1e-12
    assert np.allclose(without_rigid_motion(x, stretch, m), stretch, atol=1e-12)
