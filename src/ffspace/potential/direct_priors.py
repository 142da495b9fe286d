"""Priors beside a C kernel on the direct MD path (`FastForces.direct`): the classical MM prior and ZBL, evaluated
on numpy positions and Verlet pairs without building a torch batch.

On a batch, the MM prior re-perceives its topology every call (bonds, neighbour walks for the 1-2/1-3/1-4
exclusions, types, per-molecule charges): about 80 % of its cost in MD, where the topology almost never changes.
Here the topology is built once from the bonds and rebuilt only when the bonded set changes by the model's own
rules (`ClassicalMM.topology`: along a trajectory a held bond breaks above ``break_scale`` · (R_i + R_j) and none
forms; a copy that continues no held trajectory is perceived afresh, bonds below ``bond_scale`` · (R_i + R_j)),
and the energy terms are evaluated over fixed index lists in float64 numpy with hand-derived gradients (torch's
per-operation overhead was most of a 21-atom step). Energies and forces equal the eager model's autograd ones (tests/test_mace_native.py compares them on many geometries). Molecules only:
a periodic structure keeps the batch path.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch
from torch.nn import functional as F

from .. import units
from ..data.bonds import bond_reach
from ..models.electrostatics import conserve_charge_per_molecule
from ..models.mm import MIN_BOND_DEPTH, ClassicalMM
from ..models.morse import MorsePairs
from ..models.topology import MAX_NEIGHBOURS, held_pairs, local_keys, molecule_index, topology_from_bonds
from ..models.zbl import _PHI_C, _PHI_D, ZBL


def direct_prior(term, numbers: np.ndarray, copies: int, charge: float = 0.0):
    """``evaluate(positions (copies·N, 3), i, j) → (energies (copies,), forces (copies·N, 3))`` in float64 numpy for
    a prior term on ``copies`` copies of a molecule of atomic ``numbers``; i, j: its Verlet pairs (both directions,
    any beyond the term's cutoff ignored). None for a term this path does not know (it keeps the batch path)."""
    if isinstance(term, ClassicalMM):
        return FixedTopologyMM(term, numbers, copies, charge)
    if isinstance(term, ZBL):
        return PairZBL(term, numbers, copies)
    if isinstance(term, MorsePairs):
        return PairMorse(term, numbers, copies)
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
        zi, zj = self.numbers[i].astype(np.float64), self.numbers[j].astype(np.float64)
        r_off = np.minimum(t.covalent_scale * bond_reach(self.numbers[i], self.numbers[j], 1.0), t.cutoff)
        vec = positions[j] - positions[i]
        r = np.linalg.norm(vec, axis=1)
        near = r < r_off  # beyond its switch a pair contributes exactly zero
        i, j, zi, zj, r_off, vec, r = i[near], j[near], zi[near], zj[near], r_off[near], vec[near], r[near]
        a = 0.46850 / (zi**0.23 + zj**0.23)
        exps = [c * np.exp(-d * r / a) for c, d in zip(_PHI_C, _PHI_D)]
        phi = sum(exps)
        dphi = sum(-d / a * e for d, e in zip(_PHI_D, exps))
        switch, dswitch = _switch(r, t.switch_on * r_off, r_off)
        coulomb = units.COULOMB_EV_A * zi * zj
        energy = coulomb / r * phi * switch
        de_dr = coulomb * (-phi * switch / r**2 + (dphi * switch + phi * dswitch) / r)
        grad = []
        _pair_gradient(grad, i, j, vec, r, de_dr)
        return np.bincount(i // self.n_atoms, energy, minlength=self.copies), -_summed(grad, len(positions))


class PairMorse:
    """`MorsePairs` over the Verlet pairs (each once), its tables read once in float64."""

    def __init__(self, term: MorsePairs, numbers: np.ndarray, copies: int):
        self.term, self.copies, self.n_atoms = term, copies, len(numbers)
        self.species = np.tile(term.species(torch.as_tensor(np.asarray(numbers, dtype=np.int64))).numpy(), copies)
        with torch.no_grad():
            self.r0 = term.r0.detach().double().cpu().numpy()
            self.depth = F.softplus(term.depth.detach().double()).cpu().numpy()
            self.width = F.softplus(term.width.detach().double()).cpu().numpy()
        self.pair_index = term.pair_index.cpu().numpy()

    def __call__(self, positions: np.ndarray, i: np.ndarray, j: np.ndarray):
        t = self.term
        i, j = _unique_pairs(i, j)
        vec = positions[j] - positions[i]
        r = np.linalg.norm(vec, axis=1)
        near = r < t.cutoff  # beyond the cutoff a pair contributes exactly zero
        i, j, vec, r = i[near], j[near], vec[near], r[near]
        pair = self.pair_index[self.species[i], self.species[j]]
        d, a = self.depth[pair], self.width[pair]
        x = np.exp(-a * (r - self.r0[pair]))
        morse = d * (x * x - 2 * x)
        switch, dswitch = _switch(r, t.cutoff - t.switch_width, t.cutoff)
        de_dr = 2 * a * d * (x - x * x) * switch + morse * dswitch
        grad = []
        _pair_gradient(grad, i, j, vec, r, de_dr)
        return (np.bincount(i // self.n_atoms, morse * switch, minlength=self.copies),
                -_summed(grad, len(positions)))


def _switch(r, r_on, r_off):
    """`ffspace.models.radial.smoothstep_switch` and its derivative d/dr."""
    x = np.clip((r - r_on) / (r_off - r_on), 0.0, 1.0)
    value = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
    return value, -30.0 * x**2 * (1.0 - x) ** 2 / (r_off - r_on)


def _add(grad: list, atoms: np.ndarray, g: np.ndarray) -> None:
    """Record ∂E/∂pos[atoms] += g; `_summed` adds all records up at once (numpy's per-call cost, not the arithmetic,
    is most of a small molecule's prior)."""
    grad.append((atoms, g))


def _summed(grad: list, n: int) -> np.ndarray:
    """The (n, 3) gradient of the records of `_add`, repeated atoms summed."""
    if not grad:
        return np.zeros((n, 3))
    atoms = np.concatenate([a for a, _ in grad])
    g = np.concatenate([g for _, g in grad])
    return np.stack([np.bincount(atoms, g[:, c], minlength=n) for c in range(3)], 1)


def _pair_gradient(grad, i, j, vec, r, de_dr) -> None:
    g = (de_dr / r)[:, None] * vec  # ∂E/∂pos[j]; vec = pos[j] − pos[i]
    _add(grad, j, g)
    _add(grad, i, -g)


def _norm(v):
    return np.sqrt(np.einsum("ij,ij->i", v, v))


def _cross(u, v):
    """Row-wise u × v of (n, 3) arrays (np.cross spends ~50 µs a call on axis handling)."""
    out = np.empty_like(u)
    out[:, 0] = u[:, 1] * v[:, 2] - u[:, 2] * v[:, 1]
    out[:, 1] = u[:, 2] * v[:, 0] - u[:, 0] * v[:, 2]
    out[:, 2] = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    return out


def _dot(u, v):
    return np.einsum("ij,ij->i", u, v)


class FixedTopologyMM:
    """`ClassicalMM` on ``copies`` copies of one molecule, its topology rebuilt only when the bonds change."""

    def __init__(self, term: ClassicalMM, numbers: np.ndarray, copies: int, charge: float = 0.0):
        self.term, self.copies, self.charge = term, copies, float(charge)
        self.n_atoms = len(numbers)
        self.numbers = np.tile(np.asarray(numbers, dtype=np.int64), copies)
        self.bond_keys = None  # sorted keys i·M + j (i < j) of the bonds the topology was built from
        self.species = term.species(torch.as_tensor(self.numbers)).numpy()
        self.rebuilds = 0  # how many times the topology was (re)built: once, plus once per bond change
        self.lib = _mm_kernel()  # the terms in C (ffspace/kernels/mm.c), or None: the numpy version

    # -- topology ---------------------------------------------------------------------------------
    def _bonded(self, i, j, d, positions):
        """Keys of the pairs bonded at distances ``d`` by the model's rules: per copy, perceived afresh, or, where the
        copy continues a trajectory the model holds bonds for (`HeldBonds`, shared with the eager model), its held
        bonds shorter than ``break_scale`` · (R_i + R_j) and no new one, as in `ClassicalMM.topology`."""
        t, m = self.term, len(self.numbers)
        reach = bond_reach(self.numbers[i], self.numbers[j], 1.0)
        bonded = d < t.bond_scale * reach
        store, sizes = t.held_bonds(), np.full(self.copies, self.n_atoms)
        held = store.lookup(self.numbers, positions, sizes)
        if any(h is not None for h in held):
            on_step, is_held = held_pairs(held, i, j, sizes)
            bonded = np.where(on_step, is_held & (d < t.break_scale * reach), bonded)
        store.remember(self.numbers, positions, sizes, local_keys(i[bonded], j[bonded], sizes))
        return np.sort((i * m + j)[bonded])

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
            self.bonds = (_columns(bonds), F.softplus(p["bond_k"][bt]).numpy(), p["bond_r0"][bt].numpy())
            # Morse well depths per bond, None for harmonic bonds
            self.bond_depth = (MIN_BOND_DEPTH + F.softplus(p["bond_depth"][bt])).numpy() \
                if t.bond_form == "morse" else None
            a, c, b = top.angles.unbind(1)
            at = types[c] * nt * nt + torch.minimum(types[a], types[b]) * nt + torch.maximum(types[a], types[b])
            self.angles = (_columns(top.angles), F.softplus(p["angle_k"][at]).numpy(), p["angle_cos0"][at].numpy())
            first = top.impropers.reshape(-1, 6, 4)[:, 0]  # h² is the same in all six orders: one suffices
            self.impropers = (_columns(first), F.softplus(p["improper_k"][types[first[:, 1]]]).numpy())
            ta, tb, tc, td = (types[top.torsions[:, k]] for k in range(4))
            tt = torch.minimum(((ta * nt + tb) * nt + tc) * nt + td, ((td * nt + tc) * nt + tb) * nt + ta)
            self.torsions = (_columns(top.torsions), p["torsion_v"][tt].numpy())
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
        vec = positions[j] - positions[i]
        dist = _norm(vec)
        bond_keys = self._bonded(i, j, dist, positions)
        if self.bond_keys is None or not np.array_equal(bond_keys, self.bond_keys):
            self._build(bond_keys)
        if self.lib is not None:
            return self._in_c(positions, i, j, vec, dist)
        grad = []
        energy = np.zeros(self.copies)
        per_copy = (lambda owners, e: np.bincount(owners // self.n_atoms, e, minlength=self.copies))

        # bonds: k (r − r0)², or D (1 − e^{−a (r − r0)})² with a = √(k/D)
        (a, b), k, r0 = self.bonds
        bv = positions[b] - positions[a]
        r = _norm(bv)
        if self.bond_depth is None:
            energy += per_copy(a, k * (r - r0) ** 2)
            _pair_gradient(grad, a, b, bv, r, 2.0 * k * (r - r0))
        else:
            depth = self.bond_depth
            width = np.sqrt(k / depth)
            decay = np.exp(-width * (r - r0))
            energy += per_copy(a, depth * (1 - decay) ** 2)
            _pair_gradient(grad, a, b, bv, r, 2.0 * depth * width * (1 - decay) * decay)

        # angles a–c–b: k (cos θ − cos θ0)², cos θ = u·v / |u||v|
        (a, c, b), k, cos0 = self.angles
        u, v = positions[a] - positions[c], positions[b] - positions[c]
        nu, nv = _norm(u), _norm(v)
        cos = _dot(u, v) / (nu * nv)
        energy += per_copy(c, k * (cos - cos0) ** 2)
        de = (2.0 * k * (cos - cos0))[:, None]
        gu = de * (v / (nu * nv)[:, None] - cos[:, None] * u / (nu**2)[:, None])
        gv = de * (u / (nu * nv)[:, None] - cos[:, None] * v / (nv**2)[:, None])
        _add(grad, a, gu)
        _add(grad, b, gv)
        _add(grad, c, -(gu + gv))

        # impropers on three-coordinated centres: k h², h = u0·(u1 × u2) / |u0||u1||u2|
        (n0, centre, n1, n2), k = self.impropers
        u0, u1, u2 = (positions[n] - positions[centre] for n in (n0, n1, n2))
        l0, l1, l2 = _norm(u0), _norm(u1), _norm(u2)
        size = (l0 * l1 * l2)[:, None]
        h = _dot(u0, _cross(u1, u2)) / size[:, 0]
        energy += per_copy(centre, k * h**2)
        de = (2.0 * k * h)[:, None]
        g0 = de * (_cross(u1, u2) / size - h[:, None] * u0 / (l0**2)[:, None])
        g1 = de * (_cross(u2, u0) / size - h[:, None] * u1 / (l1**2)[:, None])
        g2 = de * (_cross(u0, u1) / size - h[:, None] * u2 / (l2**2)[:, None])
        _add(grad, n0, g0)
        _add(grad, n1, g1)
        _add(grad, n2, g2)
        _add(grad, centre, -(g0 + g1 + g2))

        # torsions a–b–c–d: Σ V_n cos nφ = V1 c + V2 (2c² − 1) + V3 (4c³ − 3c), c = n1·n2 / |n1||n2|
        (a, b, c, d), v_n = self.torsions
        b1, b2, b3 = positions[b] - positions[a], positions[c] - positions[b], positions[d] - positions[c]
        m1, m2 = _cross(b1, b2), _cross(b2, b3)
        l1, l2 = _norm(m1), _norm(m2)
        cos = _dot(m1, m2) / (l1 * l2)
        energy += per_copy(b, v_n[:, 0] * cos + v_n[:, 1] * (2 * cos**2 - 1) + v_n[:, 2] * (4 * cos**3 - 3 * cos))
        de = (v_n[:, 0] + 4.0 * v_n[:, 1] * cos + v_n[:, 2] * (12.0 * cos**2 - 3.0))[:, None]
        gm1 = de * (m2 / (l1 * l2)[:, None] - cos[:, None] * m1 / (l1**2)[:, None])
        gm2 = de * (m1 / (l1 * l2)[:, None] - cos[:, None] * m2 / (l2**2)[:, None])
        # m = p × q: ∂(g·m)/∂p = q × g, ∂(g·m)/∂q = g × p
        gb1 = _cross(b2, gm1)
        gb2 = _cross(gm1, b1) + _cross(b3, gm2)
        gb3 = _cross(gm2, b2)
        _add(grad, a, -gb1)
        _add(grad, b, gb1 - gb2)
        _add(grad, c, gb2 - gb3)
        _add(grad, d, gb3)

        # nonbonded: LJ + Coulomb within the cutoff (the switch is zero beyond), 1-2 and 1-3 excluded, 1-4 scaled
        i, j, keep, is14 = self._nonbonded(i, j, dist)
        vec, r = vec[keep], dist[keep]
        sigma = 0.5 * (self.sigma[i] + self.sigma[j])
        eps = np.sqrt(self.eps[i] * self.eps[j])
        x6 = (sigma / r) ** 6
        s_lj = np.where(is14, t.lj_14, 1.0)
        lj = 4 * eps * (x6**2 - x6) * s_lj
        dlj = 4 * eps * (-12 * x6**2 + 6 * x6) * s_lj / r
        coul = units.COULOMB_EV_A * self.q[i] * self.q[j] * np.where(is14, t.coulomb_14, 1.0) / r
        switch, dswitch = _switch(r, t.cutoff - t.switch_width, t.cutoff)
        energy += per_copy(i, (lj + coul) * switch)
        _pair_gradient(grad, i, j, vec, r, (dlj - coul / r) * switch + (lj + coul) * dswitch)

        grad = _summed(grad, len(positions))
        if self.broken.any():
            energy[self.broken] = np.nan
            grad.reshape(self.copies, self.n_atoms, 3)[self.broken] = np.nan
        return energy, -grad


    def _nonbonded(self, i, j, dist):
        """The pairs within the cutoff that are neither 1-2 nor 1-3, and which of them are 1-4."""
        key = i * len(self.numbers) + j
        keep = (dist < self.term.cutoff) & ~_member(key, self.excluded)
        return i[keep], j[keep], keep, _member(key[keep], self.ends_14)

    def _in_c(self, positions, i, j, vec, dist):
        t, lib, n = self.term, self.lib, self.n_atoms
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        energy, grad = np.zeros(self.copies), np.zeros_like(positions)
        out = (positions.ctypes.data, n, energy.ctypes.data, grad.ctypes.data)
        (a, b), k, r0 = self.bonds
        if self.bond_depth is None:
            lib.mm_bonds(len(a), a.ctypes.data, b.ctypes.data, k.ctypes.data, r0.ctypes.data, *out)
        else:
            lib.mm_morse_bonds(len(a), a.ctypes.data, b.ctypes.data, k.ctypes.data, r0.ctypes.data,
                               self.bond_depth.ctypes.data, *out)
        (a, c, b), k, cos0 = self.angles
        lib.mm_angles(len(a), a.ctypes.data, c.ctypes.data, b.ctypes.data, k.ctypes.data, cos0.ctypes.data, *out)
        (n0, centre, n1, n2), k = self.impropers
        lib.mm_impropers(len(n0), n0.ctypes.data, centre.ctypes.data, n1.ctypes.data, n2.ctypes.data, k.ctypes.data,
                         *out)
        (a, b, c, d), v_n = self.torsions
        lib.mm_torsions(len(a), a.ctypes.data, b.ctypes.data, c.ctypes.data, d.ctypes.data, v_n.ctypes.data, *out)
        pi, pj, _, is14 = self._nonbonded(i, j, dist)
        pi, pj = np.ascontiguousarray(pi), np.ascontiguousarray(pj)
        s_lj = np.where(is14, t.lj_14, 1.0)
        s_q = np.where(is14, t.coulomb_14, 1.0)
        lib.mm_pairs(len(pi), pi.ctypes.data, pj.ctypes.data, s_lj.ctypes.data, s_q.ctypes.data,
                     self.sigma.ctypes.data, self.eps.ctypes.data, self.q.ctypes.data,
                     ctypes.c_double(units.COULOMB_EV_A), ctypes.c_double(t.cutoff - t.switch_width),
                     ctypes.c_double(t.cutoff), *out)
        if self.broken.any():
            energy[self.broken] = np.nan
            grad.reshape(self.copies, n, 3)[self.broken] = np.nan
        return energy, -grad


def _mm_kernel():
    """The C version of the MM terms, or None where it cannot be built (the numpy version runs, same numbers)."""
    from ..kernels.build import KernelUnavailable, load_kernel

    try:
        lib = load_kernel("mm")
    except KernelUnavailable:
        return None
    p, n = ctypes.c_void_p, ctypes.c_int64
    out = [p, n, p, p]  # positions, atoms per copy, energy per copy, gradient
    lib.mm_bonds.argtypes = [n, p, p, p, p, *out]
    lib.mm_morse_bonds.argtypes = [n, p, p, p, p, p, *out]
    lib.mm_angles.argtypes = [n, p, p, p, p, p, *out]
    lib.mm_impropers.argtypes = [n, p, p, p, p, p, *out]
    lib.mm_torsions.argtypes = [n, p, p, p, p, p, *out]
    lib.mm_pairs.argtypes = [n, p, p, p, p, p, p, p, ctypes.c_double, ctypes.c_double, ctypes.c_double, *out]
    for fn in (lib.mm_bonds, lib.mm_morse_bonds, lib.mm_angles, lib.mm_impropers, lib.mm_torsions, lib.mm_pairs):
        fn.restype = None
    return lib


def _columns(index: torch.Tensor) -> list[np.ndarray]:
    """An (n, k) index tensor as k numpy index arrays."""
    return [np.ascontiguousarray(col, dtype=np.int64) for col in index.numpy().T]


def _member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if sorted_keys.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    at = np.searchsorted(sorted_keys, keys).clip(max=sorted_keys.size - 1)
    return sorted_keys[at] == keys
