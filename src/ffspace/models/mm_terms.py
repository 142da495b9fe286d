"""MM energy terms in the functional forms of OpenMM's standard forces (internal units: eV, Å, rad, e).

Each function returns one energy per term, so a model can attribute them to atoms and an exporter
can hand the same parameters to OpenMM's HarmonicBondForce, HarmonicAngleForce, PeriodicTorsionForce
and NonbondedForce (no cutoff) and get the same energy.
"""

from __future__ import annotations

import torch

from .. import units


def harmonic_bonds(pos, bonds, k, r0):
    """½ k (r − r0)² per bond; k in eV/Å², r0 in Å."""
    r = torch.linalg.norm(pos[bonds[:, 1]] - pos[bonds[:, 0]], dim=-1)
    return 0.5 * k * (r - r0) ** 2


def harmonic_angles(pos, angles, k, theta0):
    """½ k (θ − θ0)² per angle a–c–b; k in eV/rad², θ0 in rad."""
    u = pos[angles[:, 0]] - pos[angles[:, 1]]
    v = pos[angles[:, 2]] - pos[angles[:, 1]]
    cos = (u * v).sum(-1) / (torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1))
    # The clamp keeps the gradient of arccos finite for (unphysical) exactly linear angles.
    eps = 1e-7 if cos.dtype == torch.float64 else 1e-5
    theta = torch.arccos(cos.clamp(-1 + eps, 1 - eps))
    return 0.5 * k * (theta - theta0) ** 2


def cos_dihedral(pos, quads):
    """cos φ of the dihedral 1–2–3–4 (IUPAC: 0 for cis), from the normals of planes 123 and 234.

    Three collinear atoms (a linear group: nitriles, alkynes) leave a normal of zero length and φ undefined;
    a tiny ε in the norm makes cos φ → 0 there with finite gradients instead of NaN (relative effect 1e-12
    at ordinary geometries, where |n1|²|n2|² ~ 10 Å⁸).
    """
    p0, p1, p2, p3 = (pos[quads[:, m]] for m in range(4))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
    norms = ((n1 * n1).sum(-1) * (n2 * n2).sum(-1) + 1e-12).sqrt()
    return (n1 * n2).sum(-1) / norms


def periodic_torsions(pos, torsions, k):
    """Σ_{n=1..3} k_n (1 + cos nφ) per torsion; k (T, 3) in eV (either sign, phase 0)."""
    c = cos_dihedral(pos, torsions)
    harmonics = torch.stack([c, 2 * c**2 - 1, 4 * c**3 - 3 * c], -1)  # cos φ, cos 2φ, cos 3φ
    return (k * (1 + harmonics)).sum(-1)


def impropers(pos, quads, k):
    """k (1 − cos 2φ) per improper dihedral (periodicity 2, phase π): zero when the centre is planar."""
    c = cos_dihedral(pos, quads)
    return k * (2 - 2 * c**2)


def nonbonded(pos, pairs, charge, sigma, sqrt_epsilon, is_14, lj_14: float, coulomb_14: float):
    """Lennard-Jones (Lorentz–Berthelot) + Coulomb per pair, 1-4 pairs scaled; no cutoff (molecules).

    Takes √ε per atom so that ε_ij = √ε_i √ε_j needs no square root (whose gradient is infinite at 0).
    """
    i, j = pairs[:, 0], pairs[:, 1]
    r = torch.linalg.norm(pos[j] - pos[i], dim=-1)
    sig = 0.5 * (sigma[i] + sigma[j])
    eps = sqrt_epsilon[i] * sqrt_epsilon[j]
    x6 = (sig / r) ** 6
    lj = 4 * eps * (x6 * x6 - x6)
    coul = units.COULOMB_EV_A * charge[i] * charge[j] / r
    one = torch.ones_like(r)
    return lj * torch.where(is_14, lj_14 * one, one) + coul * torch.where(is_14, coulomb_14 * one, one)
