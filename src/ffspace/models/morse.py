"""Pairwise Morse bonds without a topology: the reactive mode of the classical prior (issue 33).

    E = ½ Σ_{i≠j} D_ab [e^{−2 a_ab (r − r0_ab)} − 2 e^{−a_ab (r − r0_ab)}] · s(r)

over every pair within the cutoff, with a well depth D, a width a and an equilibrium length r0 per unordered
element pair (a, b), fitted jointly with the learned correction (`model.prior: morse`), and s a smoothstep switch
from ``cutoff − switch_width`` to ``cutoff``. The fitted MM prior (`ClassicalMM`) perceives bonds and holds them:
its harmonic bonds, angles and torsions stand in the way of a bond that breaks or forms, and its atom types and
exclusions change in steps when one does. A Morse pair has neither: it binds at r0, tends to zero as the pair
separates and repels at short range (a finite wall, D(e^(2a·r0) − 2e^(a·r0)) at r = 0: ZBL is the prior for
contact), for any pair and at any time, so a reaction costs
only what the fitted curve says. What it gives up is the angular and torsional structure a topology provides; the
learned term carries that.
"""

from __future__ import annotations

import math

import torch
from ase.data import covalent_radii
from torch import nn
from torch.nn import functional as F

from .base import FFModel, register, scatter_sum
from .radial import smoothstep_switch


def _inv_softplus(x: float) -> float:
    return math.log(math.expm1(x))


@register("morse")
class MorsePairs(FFModel):
    def __init__(self, elements, cutoff: float = 3.0, switch_width: float = 1.0, depth: float = 1.0,
                 width: float = 1.8, energy_scale: float = 1.0):
        # energy_scale is accepted for a uniform interface with the learned families; the Morse parameters
        # carry physical units (eV, 1/Å, Å), so it is recorded but not used.
        super().__init__()
        if not 0 < switch_width <= cutoff:
            raise ValueError(f"switch_width must be in (0, cutoff], got {switch_width} with cutoff {cutoff}")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff),
                           switch_width=float(switch_width), depth=float(depth), width=float(width),
                           energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff, self.switch_width = float(cutoff), float(switch_width)
        n = len(self.elements)
        z = torch.tensor(self.elements, dtype=torch.long)
        radius = torch.tensor(covalent_radii, dtype=torch.float32)[z]
        # One entry per unordered element pair a ≤ b (``pair_index`` maps (a, b) and (b, a) to it). Starting values
        # are physical (the covalent bond length, a bond of ~1 eV), so fitting starts sane.
        lo, hi = torch.triu_indices(n, n)
        index = torch.zeros((n, n), dtype=torch.long)
        index[lo, hi] = index[hi, lo] = torch.arange(lo.numel())
        self.register_buffer("pair_index", index, persistent=False)
        self.r0 = nn.Parameter((radius[lo] + radius[hi]).clone())
        self.depth = nn.Parameter(torch.full((lo.numel(),), _inv_softplus(depth)))
        self.width = nn.Parameter(torch.full((lo.numel(),), _inv_softplus(width)))

    def forward(self, batch) -> torch.Tensor:
        i, j = batch.edge_index
        r = torch.linalg.norm(batch.edge_vectors(), dim=-1)
        pair = self.pair_index[self.species(batch.numbers[i]), self.species(batch.numbers[j])]
        d = F.softplus(self.depth[pair]).to(r.dtype)
        a = F.softplus(self.width[pair]).to(r.dtype)
        x = torch.exp(-a * (r - self.r0[pair].to(r.dtype)))
        energy = d * (x * x - 2 * x) * smoothstep_switch(r, self.cutoff - self.switch_width, self.cutoff)
        # Full neighbour list: each pair appears twice, half to each atom.
        return 0.5 * scatter_sum(energy, i, batch.numbers.shape[0])
