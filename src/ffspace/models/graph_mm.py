"""Graph-learned molecular mechanics (espaloma-style): a graph network assigns the MM parameters.

A message-passing network on the molecular graph (atoms as nodes, perceived covalent bonds as edges;
input features: element and number of bonded neighbours) gives every atom an embedding. Symmetric
readouts turn embeddings into parameters — bonds from (i, j), angles from (a, c, b), torsions from
(a, b, c, d), each summed with its reversed order so a term does not depend on which end is first;
impropers, charges and Lennard-Jones from single atoms. The energy is classical MM in OpenMM's
standard functional forms (`mm_terms`), so a model trained on many molecules parametrizes molecules
it never saw, the parameters depend on the graph only (assigned once per topology), and
`ffspace.interfaces.openmm` exports them to a real MM engine.

Every readout's last layer starts at zero, so an untrained model is a sane generic force field
(covalent-radius bond lengths, tetrahedral angles, vdW-radius Lennard-Jones, no charges or torsions)
and training moves it from there. Molecules only: the nonbonded sum runs over all pairs of a
structure with no cutoff, as OpenMM's NoCutoff does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from ase.data import covalent_radii, vdw_radii
from torch import nn
from torch.nn import functional as F

from . import mm_terms
from ..data.bonds import bond_reach
from .base import FFModel, register, scatter_sum
from .electrostatics import conserve_charge_per_molecule
from .topology import (BREAK_SCALE, MolecularTopology, find_bonds, is_step, molecule_index,
                       same_tensor as _same, topology_from_bonds)

MAX_DEGREE = 6
TETRAHEDRAL = math.radians(109.47)
# Parameter scales (eV, Å, rad): the default each readout starts from and the size of one unit of output.
BOND_K = 30.0  # eV/Å² (C–H in AMBER: 340 kcal/mol/Å² in the k(r−r0)² form, ≈ 29.5 eV/Å² in ½k(r−r0)²)
ANGLE_K = 4.0  # eV/rad²
TORSION_K = 0.02  # eV per unit of output
IMPROPER_K = 0.05  # eV
LJ_EPS = 0.005  # eV
CHARGE = 0.2  # e per unit of output
ATOM_ENERGY = 0.1  # eV per unit of output


# A bond forms below bond_scale · (R_i + R_j) (1.3 by default: vibrating bonds at 500 K stay below it) but, along a
# trajectory, a cached topology holds: its bonds until BREAK_SCALE · (R_i + R_j), and no new one forms (topology.py).


@dataclass
class _AssignmentCache:
    """The topology and parameters of the last molecule(s) evaluated outside training, and what they depend on."""

    numbers: torch.Tensor
    n_atoms: torch.Tensor
    charge: torch.Tensor | None
    weights: list
    topo: MolecularTopology
    params: dict
    positions: torch.Tensor  # of the last call: whether the next one is a step of the same trajectory
    step: bool = False  # whether the last call was a step of the trajectory of the one before

    @classmethod
    def of(cls, model, batch, topo, params):
        charge = None if batch.total_charge is None else batch.total_charge.detach().clone()
        return cls(batch.numbers.clone(), batch.n_atoms.clone(), charge,
                   [p.detach().clone() for p in model.parameters()], topo, params, batch.positions.detach().clone())

    def serves(self, model, batch, bonds) -> bool:
        """Along a trajectory (`is_step`) while the held bonds are shorter than BREAK_SCALE · (R_i + R_j), new
        bonds perceived or not (an MM engine's topology is fixed: a bond forming is an energy jump of eV); for
        another frame, when its bonds are those held."""
        step = is_step(self.positions, batch.positions.detach()) and _same(self.numbers, batch.numbers) \
            and _same(self.n_atoms, batch.n_atoms)
        self.positions = batch.positions.detach().clone()
        self.step = step
        return self._holds(model, batch, bonds, step)

    def held_bonds(self, batch) -> torch.Tensor:
        """The held bonds still shorter than BREAK_SCALE · (R_i + R_j): the topology of a step that `serves` could
        not serve (a held bond broke, or the weights changed), in place of a fresh perception that would add bonds."""
        held = self.topo.bonds
        with torch.no_grad():
            r = torch.linalg.norm(batch.positions[held[:, 1]] - batch.positions[held[:, 0]], dim=-1)
            reach = bond_reach(batch.numbers[held[:, 0]], batch.numbers[held[:, 1]], BREAK_SCALE).to(r.dtype)
        return held[r < reach]

    def _holds(self, model, batch, bonds, step: bool) -> bool:
        if not (_same(self.numbers, batch.numbers) and _same(self.n_atoms, batch.n_atoms)
                and _same(self.charge, batch.total_charge)):
            return False
        # Weights by content: in-place updates, .data swaps, load_state_dict and copies are all caught.
        params = list(model.parameters())
        if len(params) != len(self.weights) or not all(_same(w, p) for w, p in zip(self.weights, params)):
            return False
        if any(v.dtype != batch.positions.dtype or v.device != batch.positions.device for v in self.params.values()):
            return False
        held = self.topo.bonds
        n = batch.numbers.shape[0]
        if not step and not (bonds.shape == held.shape and bool(torch.equal(
                torch.sort(bonds[:, 0] * n + bonds[:, 1]).values, torch.sort(held[:, 0] * n + held[:, 1]).values))):
            return False  # another frame, of another topology
        with torch.no_grad():
            r = torch.linalg.norm(batch.positions[held[:, 1]] - batch.positions[held[:, 0]], dim=-1)
            reach = bond_reach(batch.numbers[held[:, 0]], batch.numbers[held[:, 1]], BREAK_SCALE).to(r.dtype)
            return bool((r < reach).all())


def _mlp(n_in: int, hidden: int, n_out: int, zero_last: bool = True) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                        nn.Linear(hidden, n_out))
    if zero_last:
        nn.init.zeros_(net[-1].weight)
        nn.init.zeros_(net[-1].bias)
    return net


def _positive(x, scale):
    """scale · softplus(x + softplus⁻¹(1)): equals ``scale`` at x = 0, always positive."""
    return scale * F.softplus(x + math.log(math.e - 1))


@register("graph_mm")
class GraphMM(FFModel):
    long_range = True  # all-pairs nonbonded terms: not additive, no cutoff
    reads_total_charge = True  # (its charges are made to sum to the structure's total)

    def __init__(self, elements, features: int = 64, layers: int = 3, cutoff: float = 3.0, bond_scale: float = 1.3,
                 lj_14: float = 0.5, coulomb_14: float = 1 / 1.2, energy_scale: float = 1.0):
        # ``cutoff`` only has to reach the longest covalent bond (the neighbor list feeds bond perception);
        # energy_scale is accepted for a uniform interface: MM parameters carry physical units.
        super().__init__()
        self.config = dict(elements=sorted(int(z) for z in elements), features=int(features), layers=int(layers),
                           cutoff=float(cutoff), bond_scale=float(bond_scale), lj_14=float(lj_14),
                           coulomb_14=float(coulomb_14), energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff, self.bond_scale = float(cutoff), float(bond_scale)
        self.lj_14, self.coulomb_14 = float(lj_14), float(coulomb_14)
        f = int(features)
        self.element_embedding = nn.Embedding(len(self.elements), f)
        self.degree_embedding = nn.Embedding(MAX_DEGREE + 1, f)
        self.updates = nn.ModuleList(_mlp(2 * f, f, f, zero_last=False) for _ in range(layers))
        self.bond_head = _mlp(2 * f, f, 2)  # k, Δr0
        self.angle_head = _mlp(3 * f, f, 2)  # k, Δθ0
        self.torsion_head = _mlp(4 * f, f, 3)  # k1, k2, k3
        self.atom_head = _mlp(f, f, 5)  # improper k, charge, σ, ε, atomic energy
        self.register_buffer("covalent", torch.tensor(covalent_radii, dtype=torch.float32), persistent=False)
        vdw = torch.tensor(vdw_radii, dtype=torch.float32)
        vdw = torch.where(torch.isfinite(vdw), vdw, torch.full_like(vdw, 1.8))
        self.register_buffer("sigma0", 2 * vdw / 2 ** (1 / 6), persistent=False)  # σ with r_min = 2 r_vdW

    # -- parameters from the molecular graph ------------------------------------------------------
    def embed(self, batch, topo: MolecularTopology) -> torch.Tensor:
        h = self.element_embedding(self.species(batch.numbers))
        h = h + self.degree_embedding(topo.degree.clamp(max=MAX_DEGREE))
        src = torch.cat([topo.bonds[:, 0], topo.bonds[:, 1]])
        dst = torch.cat([topo.bonds[:, 1], topo.bonds[:, 0]])
        for update in self.updates:
            h = h + update(torch.cat([h, scatter_sum(h[src], dst, h.shape[0])], -1))
        return h

    def parameters_for(self, batch, topo: MolecularTopology | None = None) -> tuple[MolecularTopology, dict]:
        """Topology and every MM parameter (internal units) of the structures in ``batch``."""
        if topo is None:
            topo = topology_from_bonds(self._bonds(batch), batch.n_atoms)
        return topo, self._assign(batch, topo)

    def _bonds(self, batch) -> torch.Tensor:
        if bool(batch.pbc.any()):
            raise ValueError("graph_mm is a molecular force field: it takes molecules, not periodic cells "
                             "(its nonbonded sum runs over all pairs with no cutoff)")
        return find_bonds(batch, self.bond_scale)

    def _assigned_once(self, batch) -> tuple[MolecularTopology, dict]:
        """Parameters are a function of the molecular graph only. While the weights are being trained they are
        assigned on every call; otherwise the last assignment is reused as long as the atoms, charges and
        weights are unchanged and its bonds still hold (as in MD), so a step costs only the MM terms."""
        bonds = self._bonds(batch)
        fresh = (self.training and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()))
        if fresh or torch.is_inference_mode_enabled():  # inference tensors could not serve later autograd calls
            return self.parameters_for(batch, topology_from_bonds(bonds, batch.n_atoms))
        cached = getattr(self, "_cache", None)
        if cached is None or not cached.serves(self, batch, bonds):
            if cached is not None and cached.step:
                bonds = cached.held_bonds(batch)
            with torch.no_grad():
                topo, params = self.parameters_for(batch, topology_from_bonds(bonds, batch.n_atoms))
            self._cache = cached = _AssignmentCache.of(self, batch, topo, params)
        return cached.topo, cached.params

    def _assign(self, batch, topo: MolecularTopology) -> dict:
        h = self.embed(batch, topo)
        dtype = h.dtype
        p = {}
        b = topo.bonds
        out = self.bond_head(torch.cat([h[b[:, 0]], h[b[:, 1]]], -1)) + \
            self.bond_head(torch.cat([h[b[:, 1]], h[b[:, 0]]], -1))
        rad = self.covalent.to(dtype)[batch.numbers]
        p["bond_k"] = _positive(out[:, 0], BOND_K)
        p["bond_r0"] = rad[b[:, 0]] + rad[b[:, 1]] + 0.2 * torch.tanh(out[:, 1])
        a = topo.angles
        out = self.angle_head(torch.cat([h[a[:, 0]], h[a[:, 1]], h[a[:, 2]]], -1)) + \
            self.angle_head(torch.cat([h[a[:, 2]], h[a[:, 1]], h[a[:, 0]]], -1))
        p["angle_k"] = _positive(out[:, 0], ANGLE_K)
        p["angle_theta0"] = math.pi * torch.sigmoid(out[:, 1] + math.log(TETRAHEDRAL / (math.pi - TETRAHEDRAL)))
        t = topo.torsions
        p["torsion_k"] = TORSION_K * (
            self.torsion_head(torch.cat([h[t[:, 0]], h[t[:, 1]], h[t[:, 2]], h[t[:, 3]]], -1))
            + self.torsion_head(torch.cat([h[t[:, 3]], h[t[:, 2]], h[t[:, 1]], h[t[:, 0]]], -1)))
        out = self.atom_head(h)
        p["improper_k"] = _positive(out[topo.improper_centre, 0], IMPROPER_K) / 6.0  # shared by six orderings
        total = batch.total_charge.to(dtype) if batch.total_charge is not None else h.new_zeros(batch.n_graphs)
        p["charge"] = conserve_charge_per_molecule(CHARGE * out[:, 1], batch.graph_index, batch.n_atoms, total,
                                                   molecule_index(topo.bonds, h.shape[0]))
        p["sigma"] = self.sigma0.to(dtype)[batch.numbers] * torch.exp(0.2 * torch.tanh(out[:, 2]))
        p["sqrt_epsilon"] = _positive(out[:, 3], math.sqrt(LJ_EPS))
        p["atom_energy"] = ATOM_ENERGY * out[:, 4]  # a constant per topology (group-additivity term)
        return p

    # -- energy ------------------------------------------------------------------------------------
    def forward(self, batch) -> torch.Tensor:
        topo, p = self._assigned_once(batch)
        pos = batch.positions
        n = pos.shape[0]
        energy = p["atom_energy"]
        e = mm_terms.harmonic_bonds(pos, topo.bonds, p["bond_k"], p["bond_r0"])
        energy = energy + scatter_sum(0.5 * e, topo.bonds[:, 0], n) + scatter_sum(0.5 * e, topo.bonds[:, 1], n)
        e = mm_terms.harmonic_angles(pos, topo.angles, p["angle_k"], p["angle_theta0"])
        energy = energy + scatter_sum(e, topo.angles[:, 1], n)
        e = mm_terms.periodic_torsions(pos, topo.torsions, p["torsion_k"])
        energy = energy + scatter_sum(0.5 * e, topo.torsions[:, 1], n) + scatter_sum(0.5 * e, topo.torsions[:, 2], n)
        e = mm_terms.impropers(pos, topo.impropers, p["improper_k"])
        energy = energy + scatter_sum(e, topo.improper_centre, n)
        e = mm_terms.nonbonded(pos, topo.pairs, p["charge"], p["sigma"], p["sqrt_epsilon"], topo.pair_is_14,
                               self.lj_14, self.coulomb_14)
        energy = energy + scatter_sum(0.5 * e, topo.pairs[:, 0], n) + scatter_sum(0.5 * e, topo.pairs[:, 1], n)
        return energy
