"""Classical molecular mechanics with parameters fitted to QM labels by the ffspace trainer.

Topology is perceived from the geometry (a bond where r < ``bond_scale`` · (R_i + R_j), covalent radii;
along a trajectory the topology is held: a bond lasts until ``break_scale`` · (R_i + R_j) and none forms, see
`ClassicalMM.topology`) and atoms are typed by element and number of bonded neighbours (a hybridisation proxy).
Terms:
harmonic bonds k (r − r0)², or (``bond_form="morse"``) Morse bonds D (1 − e^{−a (r − r0)})² with a = √(k/D), the
same curvature at r0 and a fitted well depth D ≥ 1 eV, whose restoring force softens with the stretch as a real
bond's does (a harmonic bond fitted near equilibrium pushes 2–4× too hard on the most stretched hot frames, see
docs/benchmarks.md, 3BPA); cosine-harmonic angles k (cos θ − cos θ0)² (smooth even for linear angles); torsions
Σ_{n=1..3} V_n cos(nφ); impropers k h² on three-coordinated centres (h: normalised triple product, zero
when planar); Lennard-Jones (Lorentz–Berthelot) and Coulomb between type charges made neutral per
structure, with 1-2 and 1-3 pairs excluded, 1-4 pairs scaled (AMBER: 0.5 LJ, 1/1.2 Coulomb), and both
switched smoothly to zero at the cutoff. Every parameter is a table entry per atom-type tuple.
"""

from __future__ import annotations

import math

import torch
from ase.data import covalent_radii, vdw_radii
from torch import nn
from torch.nn import functional as F

from .. import units
from ..data.bonds import bond_reach
from .base import FFModel, register, scatter_sum
from .electrostatics import conserve_charge_per_molecule
from .radial import smoothstep_switch
from .topology import (BREAK_SCALE, MAX_NEIGHBOURS, HeldBonds, held_pairs, local_keys, molecule_index,
                       neighbour_table)

# Lowest well depth (eV) of a Morse bond: covalent bonds of H, C, N, O hold 2.5–11 eV, and a floor keeps the
# fit from turning a weakly sampled bond type into one that lets go at a modest stretch.
MIN_BOND_DEPTH = 1.0


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


def _walk_keys(nbr: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """For k = 1 … ``steps``: the sorted unique keys a · N + b of the atom pairs joined by a walk of exactly k bonds.

    Exclusions are decided per atom, then looked up per edge: expanding the neighbour table per edge held
    MAX_NEIGHBOURS³ = 216 candidates for each of millions of edges (about 4 kB per edge, 8.6 GB for 24 000
    water atoms). A walk may step back, so 2 steps also reach the atom itself and 3 steps its bonded
    neighbours; the caller subtracts the shorter walks."""
    n = nbr.shape[0]
    start = torch.arange(n, device=nbr.device).unsqueeze(-1)
    ends, keys = start, []  # ends: (N, walks so far), −1 where a walk ran off the table
    for _ in range(steps):
        ends = torch.where(ends.unsqueeze(-1) >= 0, nbr[ends.clamp(min=0)], -1).flatten(1)
        valid = ends >= 0
        keys.append(torch.unique(start.expand_as(ends)[valid] * n + ends[valid]))
    return keys


def _has_key(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Whether each of ``keys`` is in ``sorted_keys`` (binary search)."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    at = torch.searchsorted(sorted_keys, keys).clamp(max=sorted_keys.numel() - 1)
    return sorted_keys[at] == keys


@register("mm")
class ClassicalMM(FFModel):
    reads_total_charge = True  # (its charges are made to sum to the structure's total)

    def __init__(self, elements, cutoff: float = 6.0, bond_scale: float = 1.35, max_degree: int = 4,
                 switch_width: float = 1.0, lj_14: float = 0.5, coulomb_14: float = 1 / 1.2,
                 energy_scale: float = 1.0, break_scale: float | None = None, bond_form: str = "harmonic"):
        # energy_scale is accepted for a uniform interface with the learned families; MM parameters carry
        # physical units, so it is recorded but not used.
        # bond_scale 1.35: hot frames stretch bonds to 1.26 (3BPA train_mixedT) and 1.28 (ffspace's 1200 K set)
        # × (R_i + R_j), and no unbonded pair comes closer than 1.40 in them (1.43 in rMD17 aspirin). At 1.2 a
        # frame evaluated on its own lost its stretched bond: its two atoms turned into a nonbonded pair at 1.3 Å
        # and the fitted MM prior's forces were off by 32 eV/Å on 7 of 3BPA's 500 mixed-temperature test frames.
        # Packages keep the scale they were fitted with.
        super().__init__()
        # The default holds for packages written before break_scale existed too.
        break_scale = max(BREAK_SCALE, bond_scale) if break_scale is None else break_scale
        if break_scale < bond_scale:
            raise ValueError(f"break_scale ({break_scale}) must be at least bond_scale ({bond_scale})")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff),
                           bond_scale=float(bond_scale), break_scale=float(break_scale), max_degree=int(max_degree),
                           switch_width=float(switch_width), lj_14=float(lj_14), coulomb_14=float(coulomb_14),
                           energy_scale=float(energy_scale))
        if bond_form not in ("harmonic", "morse"):
            raise ValueError(f"bond_form must be 'harmonic' or 'morse'; got {bond_form!r}")
        if bond_form != "harmonic":  # recorded only when set: earlier packages and cache keys stay as they were
            self.config["bond_form"] = bond_form
        self.bond_form = bond_form
        self._init_elements(elements)
        self.cutoff, self.bond_scale, self.max_degree = float(cutoff), float(bond_scale), int(max_degree)
        self.break_scale = float(break_scale)
        self.switch_width, self.lj_14, self.coulomb_14 = float(switch_width), float(lj_14), float(coulomb_14)
        n_el = len(self.elements)
        nt = self.n_types = n_el * (max_degree + 1)
        z = torch.tensor(self.elements, dtype=torch.long)
        radius = torch.tensor(covalent_radii, dtype=torch.float64)[z].repeat_interleave(max_degree + 1)
        vdw = torch.tensor(vdw_radii, dtype=torch.float64)[z]
        vdw = torch.where(torch.isfinite(vdw), vdw, 1.8 * torch.ones_like(vdw)).repeat_interleave(max_degree + 1)
        # Starting values chosen to be physical, so fitting starts from a sane force field.
        r0 = (radius[:, None] + radius[None, :]).reshape(-1)
        self.bond_r0 = nn.Parameter(r0.clone().float())
        self.bond_k = nn.Parameter(torch.full((nt * nt,), _inv_softplus(20.0)))
        if bond_form == "morse":  # D = MIN_BOND_DEPTH + softplus(bond_depth), starting near a C–H bond's 4.3 eV
            self.bond_depth = nn.Parameter(torch.full((nt * nt,), _inv_softplus(4.0 - MIN_BOND_DEPTH)))
        self.angle_cos0 = nn.Parameter(torch.full((nt ** 3,), math.cos(math.radians(109.5))))
        self.angle_k = nn.Parameter(torch.full((nt ** 3,), _inv_softplus(5.0)))
        self.torsion_v = nn.Parameter(torch.full((nt ** 4, 3), 0.02))
        self.improper_k = nn.Parameter(torch.full((nt,), _inv_softplus(1.0)))
        self.lj_sigma = nn.Parameter((2 * vdw / 2 ** (1 / 6)).float())
        self.lj_eps = nn.Parameter(torch.full((nt,), _inv_softplus(0.005)))
        self.charge = nn.Parameter(torch.zeros(nt))
        with torch.no_grad():  # small alternating charges so Coulomb is present from the start
            self.charge.copy_(0.05 * torch.sin(torch.arange(nt, dtype=torch.float32)))

    # -- topology ---------------------------------------------------------------------------
    def topology(self, batch, r):
        """Bonds, per-atom neighbour tables and types from the current geometry (no gradient flows here).

        Outside training, a structure that continues a trajectory (the same atoms as a structure of a recent
        call, none moved more than `HOLD_DISPLACEMENT`: a step, not another frame evaluated after it, whose result
        must not depend on what came before; matched structure by structure, `HeldBonds`) keeps its topology, as
        an MM engine does: a held bond lasts until ``break_scale`` · (R_i + R_j), and no new bond forms. Any change of
        the topology is a jump of the energy: its bond, angle and torsion terms appear or vanish and the pair
        turns into a nonbonded one or back. A vibrating bond that crossed ``bond_scale`` launched hydrogens 3 Å
        in one 0.5 fs step of fitted MM at 1200 K, and two ring carbons of 3BPA that came within 1.35 ·
        (R_i + R_j) (an unbonded contact no training frame has) formed a bond with its angles and exclusions:
        +11.7 eV in one step of hot NVE (docs/benchmarks.md). Held, the pair stays nonbonded and its repulsion
        is continuous. Training sees each frame's own perception, so a fit never depends on the batch order."""
        i, j = batch.edge_index
        n = batch.numbers.shape[0]
        reach = bond_reach(batch.numbers[i], batch.numbers[j], 1.0).to(r.dtype)
        bonded = r.detach() < self.bond_scale * reach
        if not self.training:
            bonded = self._with_held_bonds(batch, i, j, r.detach(), reach, bonded)
        nbr, degree = neighbour_table(i[bonded], j[bonded], n)
        types = self.species(batch.numbers) * (self.max_degree + 1) + degree.clamp(max=self.max_degree)
        return nbr, degree, types

    def held_bonds(self) -> HeldBonds:
        """The bonds this model holds along trajectories (shared by the eager model and its MD fast path)."""
        if getattr(self, "_held", None) is None:
            self._held = HeldBonds()
        return self._held

    def _with_held_bonds(self, batch, i, j, r, reach, bonded):
        store = self.held_bonds()
        numbers, sizes = batch.numbers.cpu().numpy(), batch.n_atoms.cpu().numpy()
        positions = batch.positions.detach().cpu().numpy()
        held = store.lookup(numbers, positions, sizes)
        if any(h is not None for h in held):
            lo, hi = torch.minimum(i, j).cpu().numpy(), torch.maximum(i, j).cpu().numpy()
            on_step, is_held = (torch.as_tensor(a, device=r.device) for a in held_pairs(held, lo, hi, sizes))
            bonded = torch.where(on_step, is_held & (r < self.break_scale * reach), bonded)
        once = bonded & (i < j)
        store.remember(numbers, positions, sizes, local_keys(i[once].cpu().numpy(), j[once].cpu().numpy(), sizes))
        return bonded

    # -- energy terms -----------------------------------------------------------------------
    def forward(self, batch) -> torch.Tensor:
        i, j = batch.edge_index
        vec = batch.edge_vectors()
        r = torch.linalg.norm(vec, dim=-1)
        n = batch.numbers.shape[0]
        pos = batch.positions
        nbr, degree, t = self.topology(batch, r)
        nt = self.n_types
        energy = pos.new_zeros(n)

        # Which edges join atoms 1, 2 or 3 bonds apart (walks through the neighbour table; see `_walk_keys`).
        edge_key = i * n + j
        walk1, walk2, walk3 = _walk_keys(nbr, 3)
        is12 = _has_key(walk1, edge_key)
        is13 = _has_key(walk2, edge_key) & ~is12
        is14 = _has_key(walk3, edge_key) & ~is12 & ~is13

        # Bonds, from the directed bonded edges (each bond twice: half the energy each time, to atom i).
        bonded = is12
        bi, bj, rb, vb = i[bonded], j[bonded], r[bonded], vec[bonded]
        ti, tj = t[bi], t[bj]
        bt = torch.minimum(ti, tj) * nt + torch.maximum(ti, tj)
        e_bond = self.bond_energy(rb, bt)
        energy = energy + scatter_sum(0.5 * e_bond, bi, n)

        # Displacement vectors along bonds must respect periodic images: use the edge vectors.
        # Map (centre, neighbour) → bond vector through the neighbour table.
        bvec = pos.new_zeros((n, MAX_NEIGHBOURS, 3))
        slot = (nbr[bi] == bj.unsqueeze(-1)).float().argmax(-1)
        bvec = bvec.index_put((bi, slot), vb)

        # Angles j–i–k for every pair of neighbours of i.
        a, b = torch.triu_indices(MAX_NEIGHBOURS, MAX_NEIGHBOURS, 1, device=pos.device)
        centre = torch.arange(n, device=pos.device).repeat_interleave(a.numel())
        ka, kb = a.repeat(n), b.repeat(n)
        valid = (nbr[centre, ka] >= 0) & (nbr[centre, kb] >= 0)
        centre, ka, kb = centre[valid], ka[valid], kb[valid]
        u, v = bvec[centre, ka], bvec[centre, kb]
        cos = (u * v).sum(-1) / (torch.linalg.norm(u, dim=-1) * torch.linalg.norm(v, dim=-1))
        t1, t2 = t[nbr[centre, ka]], t[nbr[centre, kb]]
        at = t[centre] * nt * nt + torch.minimum(t1, t2) * nt + torch.maximum(t1, t2)
        e_angle = F.softplus(self.angle_k[at]) * (cos - self.angle_cos0[at]) ** 2
        energy = energy + scatter_sum(e_angle, centre, n)

        # Impropers on three-coordinated centres.
        three = torch.nonzero(degree == 3).squeeze(-1)
        if three.numel():
            u0, u1, u2 = bvec[three, 0], bvec[three, 1], bvec[three, 2]
            h = (u0 * torch.linalg.cross(u1, u2)).sum(-1) / (
                torch.linalg.norm(u0, dim=-1) * torch.linalg.norm(u1, dim=-1) * torch.linalg.norm(u2, dim=-1))
            energy = energy + scatter_sum(F.softplus(self.improper_k[t[three]]) * h**2, three, n)

        # Torsions a–b–c–d around each bond b→c (both directions present: half each, to b).
        sa, sd = torch.meshgrid(torch.arange(MAX_NEIGHBOURS, device=pos.device),
                                torch.arange(MAX_NEIGHBOURS, device=pos.device), indexing="ij")
        sa, sd = sa.reshape(-1), sd.reshape(-1)
        m = torch.arange(bi.numel(), device=pos.device).repeat_interleave(sa.numel())
        sa, sd = sa.repeat(bi.numel()), sd.repeat(bi.numel())
        bb, cc = bi[m], bj[m]
        aa, dd = nbr[bb, sa], nbr[cc, sd]
        ok = (aa >= 0) & (dd >= 0) & (aa != cc) & (dd != bb) & (aa != dd)
        m, bb, cc, sa, sd, aa, dd = m[ok], bb[ok], cc[ok], sa[ok], sd[ok], aa[ok], dd[ok]
        b1 = -bvec[bb, sa]  # a → b
        b2 = vb[m]  # b → c
        b3 = bvec[cc, sd]  # c → d
        n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
        c = (n1 * n2).sum(-1) / (torch.linalg.norm(n1, dim=-1) * torch.linalg.norm(n2, dim=-1))
        harmonics = torch.stack([c, 2 * c**2 - 1, 4 * c**3 - 3 * c], -1)  # cos φ, cos 2φ, cos 3φ
        ta, tb, tc, td = t[aa], t[bb], t[cc], t[dd]
        fwd = ((ta * nt + tb) * nt + tc) * nt + td
        rev = ((td * nt + tc) * nt + tb) * nt + ta
        tt = torch.minimum(fwd, rev)
        e_torsion = (self.torsion_v[tt] * harmonics).sum(-1)
        energy = energy + scatter_sum(0.5 * e_torsion, bb, n)

        # Nonbonded: LJ + Coulomb over all edges, 1-2/1-3 excluded, 1-4 scaled, switched off at the cutoff.
        keep = ~(is12 | is13)
        scale_lj = torch.where(is14, self.lj_14, 1.0).to(r.dtype)
        scale_q = torch.where(is14, self.coulomb_14, 1.0).to(r.dtype)
        switch = smoothstep_switch(r, self.cutoff - self.switch_width, self.cutoff)
        ti, tj = t[i], t[j]
        sigma = 0.5 * (self.lj_sigma[ti] + self.lj_sigma[tj])
        eps = torch.sqrt(F.softplus(self.lj_eps[ti]) * F.softplus(self.lj_eps[tj]))
        r_safe = torch.where(keep, r, torch.ones_like(r))
        x6 = (sigma / r_safe) ** 6
        lj = 4 * eps * (x6**2 - x6) * scale_lj
        q = self.charges(batch, t, i[is12 & (i < j)], j[is12 & (i < j)])
        coul = units.COULOMB_EV_A * q[i] * q[j] / r_safe * scale_q
        pair = torch.where(keep, (lj + coul) * switch, torch.zeros_like(r))
        energy = energy + scatter_sum(0.5 * pair, i, n)
        return energy

    def bond_depth_of(self, bond_types: torch.Tensor) -> torch.Tensor:
        """Morse well depths D (eV) of these bond types."""
        return MIN_BOND_DEPTH + F.softplus(self.bond_depth[bond_types])

    def bond_energy(self, r: torch.Tensor, bond_types: torch.Tensor) -> torch.Tensor:
        """k (r − r0)², or D (1 − e^{−a (r − r0)})² with a = √(k/D) (the same curvature at r0), per bond."""
        k, stretch = F.softplus(self.bond_k[bond_types]), r - self.bond_r0[bond_types]
        if self.bond_form == "harmonic":
            return k * stretch**2
        depth = self.bond_depth_of(bond_types)
        return depth * (1 - torch.exp(-torch.sqrt(k / depth) * stretch)) ** 2

    def charges(self, batch, types, bond_i, bond_j) -> torch.Tensor:
        """Type charges made to sum to the structure's total charge, molecule by molecule (bonds i–j)."""
        raw = self.charge[types]
        total = batch.total_charge.to(raw.dtype) if batch.total_charge is not None else raw.new_zeros(batch.n_graphs)
        molecule = molecule_index(torch.stack([bond_i, bond_j], 1), raw.shape[0])
        return conserve_charge_per_molecule(raw, batch.graph_index, batch.n_atoms, total, molecule)
