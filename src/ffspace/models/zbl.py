"""ZBL universal nuclear repulsion (Ziegler, Biersack, Littmark 1985) as a smooth, short-range prior.

It keeps MD from collapsing atoms onto each other where a learned model has never seen data. As in
MACE's ZBL term, each pair is switched off by the sum of the two covalent radii (scaled by
``covalent_scale``), so the prior is zero at bonding distances and acts only on close contacts.
"""

from __future__ import annotations

import torch
from ase.data import covalent_radii

from .. import units
from .base import FFModel, register, scatter_sum
from .radial import smoothstep_switch

_PHI_C = (0.18175, 0.50986, 0.28022, 0.02817)
_PHI_D = (3.19980, 0.94229, 0.40290, 0.20162)


@register("zbl")
class ZBL(FFModel):
    """E = Σ_{i<j} k_e Z_i Z_j / r · φ(r / a_ij) · s_ij(r), with s_ij switching from 1 at r_on,ij =
    ``switch_on`` · r_off,ij to 0 at r_off,ij = min(``covalent_scale`` · (R_i + R_j), ``cutoff``)."""

    def __init__(self, elements=(), cutoff: float = 3.0, covalent_scale: float = 1.0, switch_on: float = 0.5):
        super().__init__()
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff),
                           covalent_scale=float(covalent_scale), switch_on=float(switch_on))
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        self.covalent_scale, self.switch_on = float(covalent_scale), float(switch_on)
        self.register_buffer("radii", torch.tensor(covalent_radii, dtype=torch.float64), persistent=False)

    def forward(self, batch) -> torch.Tensor:
        i, j = batch.edge_index
        r = torch.linalg.norm(batch.edge_vectors(), dim=-1)
        zi = batch.numbers[i].to(r.dtype)
        zj = batch.numbers[j].to(r.dtype)
        radii = self.radii.to(r.dtype)
        r_off = torch.clamp(self.covalent_scale * (radii[batch.numbers[i]] + radii[batch.numbers[j]]),
                            max=self.cutoff)
        a = 0.46850 / (zi**0.23 + zj**0.23)
        x = r / a
        phi = sum(c * torch.exp(-d * x) for c, d in zip(_PHI_C, _PHI_D))
        # Pairs beyond their switch contribute exactly zero; clamping r there avoids inf·0 for r → 0 pairs.
        r_safe = torch.where(r < r_off, r, r_off)
        pair = units.COULOMB_EV_A * zi * zj / r_safe * phi * smoothstep_switch(r, self.switch_on * r_off, r_off)
        # Full neighbor list: each pair appears twice, half to each atom.
        return 0.5 * scatter_sum(pair, i, batch.numbers.shape[0])
