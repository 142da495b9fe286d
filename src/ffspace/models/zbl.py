"""ZBL universal nuclear repulsion (Ziegler, Biersack, Littmark 1985) as a smooth, short-range prior.

It keeps MD from collapsing atoms onto each other where a learned model has never seen data.
"""

from __future__ import annotations

import torch

from .. import units
from .base import FFModel, register, scatter_sum
from .radial import smoothstep_switch

_PHI_C = (0.18175, 0.50986, 0.28022, 0.02817)
_PHI_D = (3.19980, 0.94229, 0.40290, 0.20162)


@register("zbl")
class ZBL(FFModel):
    """E = Σ_{i<j} k_e Z_i Z_j / r · φ(r / a_ij) · s(r), switched off smoothly between r_on and cutoff."""

    def __init__(self, elements=(), cutoff: float = 2.0, r_on: float | None = None):
        super().__init__()
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff),
                           r_on=None if r_on is None else float(r_on))
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        self.r_on = 0.5 * self.cutoff if r_on is None else float(r_on)

    def forward(self, batch) -> torch.Tensor:
        i, j = batch.edge_index
        r = torch.linalg.norm(batch.edge_vectors(), dim=-1)
        zi = batch.numbers[i].to(r.dtype)
        zj = batch.numbers[j].to(r.dtype)
        a = 0.46850 / (zi**0.23 + zj**0.23)
        x = r / a
        phi = sum(c * torch.exp(-d * x) for c, d in zip(_PHI_C, _PHI_D))
        # Clamp r only inside the switched region's complement so far pairs cannot produce inf·0.
        r_safe = torch.where(r < self.cutoff, r, torch.full_like(r, self.cutoff))
        pair = units.COULOMB_EV_A * zi * zj / r_safe * phi * smoothstep_switch(r, self.r_on, self.cutoff)
        # Full neighbor list: each pair appears twice, half to each atom.
        return 0.5 * scatter_sum(pair, i, batch.numbers.shape[0])
