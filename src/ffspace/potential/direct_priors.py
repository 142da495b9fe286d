"""Priors beside a C kernel on the direct MD path (`FastForces.direct`): the classical MM prior and ZBL, evaluated
on numpy positions and Verlet pairs without building a torch batch.

On a batch, the MM prior re-perceives its topology every call (bonds, neighbour walks for the 1-2/1-3/1-4
exclusions, types, per-molecule charges): about 80 % of its cost in MD, where the topology almost never changes.
Here the topology is built once from the bonds and rebuilt only when the bonded set changes by the model's own
rules (a bond forms below ``bond_scale`` · (R_i + R_j); a held bond breaks above ``break_scale`` · (R_i + R_j),
the hysteresis of `ClassicalMM.topology`), and the energy terms are evaluated over fixed index lists in float64
torch, forces by autograd. Energies and forces equal the eager model's (a test compares them on many geometries).
Molecules only: a periodic structure keeps the batch path.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from .. import units
from ..data.bonds import bond_reach
from ..models.electrostatics import conserve_charge_per_molecule
from ..models.mm import ClassicalMM
from ..models.radial import smoothstep_switch
from ..models.topology import MAX_NEIGHBOURS, molecule_index, topology_from_bonds
from ..models.zbl import _PHI_C, _PHI_D, ZBL


def direct_prior(term, numbers: np.ndarray, copies: int, charge: float = 0.0):
    """``evaluate(positions (copies·N, 3), i, j) → (energies (copies,), forces (copies·N, 3))`` in float64 numpy for
    a prior term on ``copies`` copies of a molecule of atomic ``numbers``; i, j: its Verlet pairs (both directions,
    any beyond the term's cutoff ignored). None for a term this path does not know (it keeps the batch path)."""
    if isinstance(term, ClassicalMM):
        return FixedTopologyMM(term, numbers, copies, charge)
    if isinstance(term, ZBL):
        return PairZBL(term, numbers, copies)
    return None


def _unique_pairs(i: np.ndarray, j: np.ndarray):
    keep = i < j
    return i[keep], j[keep]


class PairZBL:
    """`ZBL` over the Verlet pairs (each once)."""

    def __init__(self, term: ZBL, numbers: np.ndarray, copies: int):
        self.term, self.copies = term, copies
        self.numbers = np.tile(np.asarray(numbers, dtype=np.int64), copies)
        self.n_atoms = len(numbers)

    def __call__(self, positions: np.ndarray, i: np.ndarray, j: np.ndarray):
        t = self.term
        i, j = _unique_pairs(i, j)
        zi, zj = self.numbers[i], self.numbers[j]
        r_off = np.minimum(t.covalent_scale * bond_reach(zi, zj, 1.0), t.cutoff)
        d = np.linalg.norm(positions[j] - positions[i], axis=1)
        near = d < r_off  # beyond its switch a pair contributes exactly zero
        i, j, r_off = i[near], j[near], r_off[near]
        pos = torch.as_tensor(positions, dtype=torch.float64).requires_grad_(True)
        r = torch.linalg.norm(pos[j] - pos[i], dim=-1)
        zi = torch.as_tensor(self.numbers[i], dtype=torch.float64)
        zj = torch.as_tensor(self.numbers[j], dtype=torch.float64)
        r_off = torch.as_tensor(r_off)
        x = r * (zi**0.23 + zj**0.23) / 0.46850
        phi = sum(c * torch.exp(-dd * x) for c, dd in zip(_PHI_C, _PHI_D))
        pair = units.COULOMB_EV_A * zi * zj / r * phi * smoothstep_switch(r, t.switch_on * r_off, r_off)
        return _totals_forces(pair, torch.as_tensor(i // self.n_atoms), self.copies, pos)


def _totals_forces(pair_energies, copy_of, copies: int, pos):
    """Per-copy sums of term energies (each assigned to the copy of its first atom) and forces −∂E/∂r."""
    totals = torch.zeros(copies, dtype=torch.float64).index_add_(0, copy_of, pair_energies)
    if not totals.requires_grad:
        return totals.numpy(), np.zeros(tuple(pos.shape))
    (gradient,) = torch.autograd.grad(totals.sum(), [pos])
    return totals.detach().numpy(), -gradient.numpy()


class FixedTopologyMM:
    """`ClassicalMM` on ``copies`` copies of one molecule with its topology held until a bond forms or breaks."""

    def __init__(self, term: ClassicalMM, numbers: np.ndarray, copies: int, charge: float = 0.0):
        self.term, self.copies, self.charge = term, copies, float(charge)
        self.n_atoms = len(numbers)
        self.numbers = np.tile(np.asarray(numbers, dtype=np.int64), copies)
        self.bond_keys = None  # sorted keys i·M + j (i < j) of the bonds the topology was built from
        self.species = term.species(torch.as_tensor(self.numbers)).numpy()
        self.rebuilds = 0  # how many times the topology was (re)built: once, plus once per bond change

    # -- topology ---------------------------------------------------------------------------------
    def _bonded(self, i, j, d):
        """Keys of the pairs bonded at distances ``d`` by the model's rules, with hysteresis on the held bonds."""
        t, m = self.term, len(self.numbers)
        reach = bond_reach(self.numbers[i], self.numbers[j], 1.0)
        key = i * m + j
        bonded = d < t.bond_scale * reach
        if self.bond_keys is not None and self.bond_keys.size:
            at = np.searchsorted(self.bond_keys, key).clip(max=self.bond_keys.size - 1)
            bonded |= (self.bond_keys[at] == key) & (d < t.break_scale * reach)
        return np.sort(key[bonded])

    def _build(self, bond_keys: np.ndarray) -> None:
        t, m, nt = self.term, len(self.numbers), self.term.n_types
        self.bond_keys = bond_keys
        ends = np.stack([bond_keys // m, bond_keys % m], 1).reshape(-1, 2)
        # A copy with an atom of more bonded neighbours than a topology holds (atoms collapsing onto each other)
        # has no MM energy (the batch path raises for it): its energy and forces are NaN, and the caller removes it.
        crowded = np.bincount(ends.reshape(-1), minlength=m) > MAX_NEIGHBOURS
        self.broken = np.zeros(self.copies, dtype=bool)
        self.broken[np.unique(np.nonzero(crowded)[0] // self.n_atoms)] = True
        bonds = torch.as_tensor(ends[~self.broken[ends[:, 0] // self.n_atoms]])
        n_atoms = torch.full((self.copies,), self.n_atoms, dtype=torch.long)
        top = topology_from_bonds(bonds, n_atoms)
        types = torch.as_tensor(self.species) * (t.max_degree + 1) + top.degree.clamp(max=t.max_degree)
        with torch.no_grad():
            p = {name: param.detach().to(torch.float64) for name, param in t.named_parameters()}
            ti, tj = types[bonds[:, 0]], types[bonds[:, 1]]
            bt = torch.minimum(ti, tj) * nt + torch.maximum(ti, tj)
            self.bonds = (bonds, F.softplus(p["bond_k"][bt]), p["bond_r0"][bt])
            a, c, b = top.angles.unbind(1)
            at = types[c] * nt * nt + torch.minimum(types[a], types[b]) * nt + torch.maximum(types[a], types[b])
            self.angles = (top.angles, F.softplus(p["angle_k"][at]), p["angle_cos0"][at])
            first = top.impropers.reshape(-1, 6, 4)[:, 0]  # h² is the same in all six orders: one suffices
            self.impropers = (first, F.softplus(p["improper_k"][types[first[:, 1]]]))
            ta, tb, tc, td = (types[top.torsions[:, k]] for k in range(4))
            tt = torch.minimum(((ta * nt + tb) * nt + tc) * nt + td, ((td * nt + tc) * nt + tb) * nt + ta)
            self.torsions = (top.torsions, p["torsion_v"][tt])
            graph = torch.arange(self.copies).repeat_interleave(self.n_atoms)
            molecule = molecule_index(bonds, m)
            total = torch.full((self.copies,), self.charge, dtype=torch.float64)
            self.q = conserve_charge_per_molecule(p["charge"][types], graph, n_atoms, total, molecule).numpy()
            self.sigma = p["lj_sigma"][types].numpy()
            self.eps = F.softplus(p["lj_eps"][types]).numpy()
        self.excluded = np.sort((top.excluded[:, 0] * m + top.excluded[:, 1]).numpy())
        self.ends_14 = np.sort((top.pairs[top.pair_is_14, 0] * m + top.pairs[top.pair_is_14, 1]).numpy())
        self.rebuilds += 1

    # -- energy -----------------------------------------------------------------------------------
    def __call__(self, positions: np.ndarray, i: np.ndarray, j: np.ndarray):
        t, m = self.term, len(self.numbers)
        i, j = _unique_pairs(i, j)
        d = np.linalg.norm(positions[j] - positions[i], axis=1)
        bond_keys = self._bonded(i, j, d)
        if self.bond_keys is None or not np.array_equal(bond_keys, self.bond_keys):
            self._build(bond_keys)
        # Nonbonded: pairs within the cutoff (the switch is zero beyond), 1-2 and 1-3 excluded, 1-4 scaled.
        key = i * m + j
        keep = (d < t.cutoff) & ~_member(key, self.excluded)
        i, j, key = i[keep], j[keep], key[keep]
        is14 = _member(key, self.ends_14)

        pos = torch.as_tensor(positions, dtype=torch.float64).requires_grad_(True)
        energies, owners = [], []

        bonds, k, r0 = self.bonds
        rb = torch.linalg.norm(pos[bonds[:, 1]] - pos[bonds[:, 0]], dim=-1)
        energies.append(k * (rb - r0) ** 2)
        owners.append(bonds[:, 0])

        angles, k, cos0 = self.angles
        u = pos[angles[:, 0]] - pos[angles[:, 1]]
        v = pos[angles[:, 2]] - pos[angles[:, 1]]
        cos = (u * v).sum(-1) / (torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1))
        energies.append(k * (cos - cos0) ** 2)
        owners.append(angles[:, 1])

        imp, k = self.impropers
        u0, u1, u2 = (pos[imp[:, c]] - pos[imp[:, 1]] for c in (0, 2, 3))
        h = (u0 * torch.linalg.cross(u1, u2)).sum(-1) / (
            torch.linalg.norm(u0, dim=-1) * torch.linalg.norm(u1, dim=-1) * torch.linalg.norm(u2, dim=-1))
        energies.append(k * h**2)
        owners.append(imp[:, 1])

        tors, v_n = self.torsions
        b1 = pos[tors[:, 1]] - pos[tors[:, 0]]
        b2 = pos[tors[:, 2]] - pos[tors[:, 1]]
        b3 = pos[tors[:, 3]] - pos[tors[:, 2]]
        n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
        c = (n1 * n2).sum(-1) / (torch.linalg.norm(n1, dim=-1) * torch.linalg.norm(n2, dim=-1))
        energies.append((v_n * torch.stack([c, 2 * c**2 - 1, 4 * c**3 - 3 * c], -1)).sum(-1))
        owners.append(tors[:, 1])

        ti, tj = torch.as_tensor(i), torch.as_tensor(j)
        r = torch.linalg.norm(pos[tj] - pos[ti], dim=-1)
        sigma = torch.as_tensor(0.5 * (self.sigma[i] + self.sigma[j]))
        eps = torch.as_tensor(np.sqrt(self.eps[i] * self.eps[j]))
        x6 = (sigma / r) ** 6
        lj = 4 * eps * (x6**2 - x6) * torch.as_tensor(np.where(is14, t.lj_14, 1.0))
        coul = units.COULOMB_EV_A * torch.as_tensor(self.q[i] * self.q[j] * np.where(is14, t.coulomb_14, 1.0)) / r
        energies.append((lj + coul) * smoothstep_switch(r, t.cutoff - t.switch_width, t.cutoff))
        owners.append(ti)
        totals, forces = _totals_forces(torch.cat(energies), torch.cat(owners) // self.n_atoms, self.copies, pos)
        if self.broken.any():
            totals[self.broken] = np.nan
            forces.reshape(self.copies, self.n_atoms, 3)[self.broken] = np.nan
        return totals, forces


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    at = np.searchsorted(sorted_keys, keys).clip(max=sorted_keys.size - 1)
    return sorted_keys[at] == keys
