"""Long-range electrostatics with learned, charge-conserving atomic charges.

A short-range network (SchNet) predicts raw charges; they are shifted per structure so that they sum
exactly to the structure's total charge. The energy is Coulomb's law between point charges: a direct
sum over all pairs for molecules, an Ewald sum (real space + reciprocal space + self term) for periodic
cells. Units: charges in e, energies in eV (k_e = 14.3996 eV·Å from `ffspace.units`).
"""

from __future__ import annotations

import math

import torch

from .. import units
from .base import FFModel, register, scatter_sum
from .schnet import SchNet


def conserve_charge(raw: torch.Tensor, graph_index: torch.Tensor, n_atoms: torch.Tensor,
                    total: torch.Tensor) -> torch.Tensor:
    """Shift each structure's charges equally so that they sum to ``total`` (exactly, up to rounding)."""
    excess = scatter_sum(raw, graph_index, n_atoms.shape[0]) - total
    return raw - (excess / n_atoms.to(raw.dtype))[graph_index]


def conserve_charge_per_molecule(raw: torch.Tensor, graph_index: torch.Tensor, n_atoms: torch.Tensor,
                                 total: torch.Tensor, molecule: torch.Tensor) -> torch.Tensor:
    """`conserve_charge` for each molecule (``molecule``: (N,) connected-component index) instead of each structure:
    a molecule of a structure of total charge Q holds Q × its share of the structure's atoms, so the molecules of a
    neutral structure are each neutral. Charges then do not depend on what else is in the structure, and far-apart
    molecules add up (the physics suite's additivity check)."""
    n_mol = int(molecule.max()) + 1 if molecule.numel() else 0
    mol_atoms = torch.bincount(molecule, minlength=n_mol)
    mol_graph = torch.zeros(n_mol, dtype=torch.long, device=raw.device).scatter_(0, molecule, graph_index)
    mol_total = total[mol_graph] * mol_atoms.to(raw.dtype) / n_atoms[mol_graph].to(raw.dtype)
    return conserve_charge(raw, molecule, mol_atoms, mol_total)


def coulomb_energies(batch, charges: torch.Tensor, accuracy: float = 1e-6, real_cutoff: float | None = None):
    """Per-atom electrostatic energies (eV) of point charges: direct sum in molecules, Ewald in periodic cells."""
    out = charges.new_zeros(charges.shape[0])
    offsets = torch.cumsum(batch.n_atoms, 0) - batch.n_atoms
    for g in range(batch.n_graphs):
        lo, n = int(offsets[g]), int(batch.n_atoms[g])
        pos, q = batch.positions[lo:lo + n], charges[lo:lo + n]
        if bool(batch.pbc[g].any()):
            if not bool(batch.pbc[g].all()):
                raise ValueError("Ewald electrostatics need a cell periodic in all three directions")
            e = _ewald(pos, q, batch.cell[g], accuracy, real_cutoff)
        else:
            e = _direct(pos, q)
        out = out.index_add(0, torch.arange(lo, lo + n, device=out.device), e)
    return out


def _direct(pos, q):
    n = pos.shape[0]
    if n < 2:
        return q.new_zeros(n)
    i, j = torch.triu_indices(n, n, 1, device=pos.device)
    r = torch.linalg.norm(pos[j] - pos[i], dim=-1)
    pair = units.COULOMB_EV_A * q[i] * q[j] / r
    return 0.5 * (scatter_sum(pair, i, n) + scatter_sum(pair, j, n))


def _ewald(pos, q, cell, accuracy, real_cutoff):
    k_e = units.COULOMB_EV_A
    n = pos.shape[0]
    lengths = torch.linalg.norm(cell.detach(), dim=1)
    rc = float(real_cutoff) if real_cutoff else float(min(lengths.min() / 2, 8.0))
    s = math.sqrt(-math.log(accuracy))
    alpha = s / rc
    kmax = 2 * alpha * s
    # Real space: all image pairs within rc (brute force over the few image cells rc needs).
    reps = [int(math.ceil(rc / float(h))) for h in _heights(cell.detach())]
    grid = torch.stack(torch.meshgrid(*[torch.arange(-m, m + 1, device=pos.device) for m in reps], indexing="ij"),
                       -1).reshape(-1, 3).to(pos.dtype)
    shifts = grid @ cell
    d = pos[None, :, None, :] - pos[:, None, None, :] + shifts[None, None, :, :]  # (i, j, image, 3)
    r = torch.linalg.norm(d, dim=-1)
    self_pair = (r < 1e-8)
    r_safe = torch.where(self_pair, torch.ones_like(r), r)
    # No hard cut at rc: every pair of the fixed image grid is kept, so the energy stays smooth when a pair
    # crosses rc (terms there are below `accuracy` anyway).
    real = torch.where(self_pair, torch.zeros_like(r), torch.erfc(alpha * r_safe) / r_safe)
    e_real = 0.5 * k_e * q * (real.sum(-1) @ q)
    # Reciprocal space.
    recip = 2 * math.pi * torch.linalg.inv(cell).T
    nmax = [int(math.ceil(kmax / float(torch.linalg.norm(recip[d].detach())))) for d in range(3)]
    ints = torch.stack(torch.meshgrid(*[torch.arange(-m, m + 1, device=pos.device) for m in nmax], indexing="ij"),
                       -1).reshape(-1, 3).to(pos.dtype)
    kvec = ints @ recip
    k2 = (kvec**2).sum(-1)
    keep = (k2 > 1e-12) & (k2 <= kmax**2)
    kvec, k2 = kvec[keep], k2[keep]
    volume = torch.abs(torch.linalg.det(cell))
    phase = pos @ kvec.T  # (n, K)
    s_cos, s_sin = (q[:, None] * torch.cos(phase)).sum(0), (q[:, None] * torch.sin(phase)).sum(0)
    weight = torch.exp(-k2 / (4 * alpha**2)) / k2
    per_atom = q * ((torch.cos(phase) * s_cos + torch.sin(phase) * s_sin) * weight).sum(-1)
    e_recip = k_e * 2 * math.pi / volume * per_atom
    e_self = -k_e * alpha / math.sqrt(math.pi) * q**2
    return e_real + e_recip + e_self


def _heights(cell):
    """Distances between opposite faces of the cell (how far one image shell reaches)."""
    volume = torch.abs(torch.linalg.det(cell))
    return [float(volume / torch.linalg.norm(torch.linalg.cross(cell[(d + 1) % 3], cell[(d + 2) % 3])))
            for d in range(3)]


@register("coulomb")
class LearnedCoulomb(FFModel):
    """Electrostatic energy of charges predicted by a small SchNet and made to conserve total charge."""

    long_range = True
    reads_total_charge = True  # (its charges are made to sum to the structure's total)

    def __init__(self, elements, cutoff: float = 4.0, features: int = 32, layers: int = 2,
                 ewald_accuracy: float = 1e-6):
        super().__init__()
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), features=features,
                           layers=layers, ewald_accuracy=float(ewald_accuracy))
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        self.ewald_accuracy = float(ewald_accuracy)
        # The charge network starts near zero charges: electrostatics switch on as training finds them.
        self.charge_net = SchNet(elements, cutoff=cutoff, features=features, layers=layers, energy_scale=0.1)

    def charges(self, batch) -> torch.Tensor:
        raw = self.charge_net(batch)
        total = batch.total_charge if batch.total_charge is not None else raw.new_zeros(batch.n_graphs)
        return conserve_charge(raw, batch.graph_index, batch.n_atoms, total.to(raw.dtype))

    def forward(self, batch) -> torch.Tensor:
        return coulomb_energies(batch, self.charges(batch), self.ewald_accuracy)
