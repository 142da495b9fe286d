"""SchNet: continuous-filter convolutions on interatomic distances (Schütt et al., JCP 2018)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .base import FFModel, register, scatter_sum
from .chunking import edge_sum, local_edges
from .radial import GaussianBasis, cosine_cutoff


class ShiftedSoftplus(nn.Module):
    def forward(self, x):
        return F.softplus(x) - math.log(2.0)


class _Interaction(nn.Module):
    def __init__(self, features: int, n_rbf: int):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(n_rbf, features), ShiftedSoftplus(), nn.Linear(features, features))
        self.in2f = nn.Linear(features, features, bias=False)
        self.out = nn.Sequential(nn.Linear(features, features), ShiftedSoftplus(), nn.Linear(features, features))

    def forward(self, x, i, j, rbf, fcut, blocks=None):
        # blocks: large graphs in inference, block by block in bounded memory (chunking.py)
        (m,) = edge_sum(blocks, self._messages, i, x.shape[0], (j, rbf, fcut), (self.in2f(x),))
        return x + self.out(m)

    def _messages(self, i, n, j, rbf, fcut, y):
        """Filtered messages summed on the ``n`` receivers ``i`` (0..n-1) of these edges."""
        return scatter_sum(y[j] * (self.filter(rbf) * fcut.unsqueeze(-1)), i, n)


@register("schnet")
class SchNet(FFModel):
    def __init__(self, elements, cutoff: float = 5.0, features: int = 128, layers: int = 3, n_rbf: int = 50,
                 energy_scale: float = 1.0):
        super().__init__()
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), features=features,
                           layers=layers, n_rbf=n_rbf, energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        self.embedding = nn.Embedding(len(self.elements), features)
        self.rbf = GaussianBasis(cutoff, n_rbf)
        self.interactions = nn.ModuleList(_Interaction(features, n_rbf) for _ in range(layers))
        self.readout = nn.Sequential(nn.Linear(features, features // 2), ShiftedSoftplus(),
                                     nn.Linear(features // 2, 1))
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))

    def forward(self, batch) -> torch.Tensor:
        i, j, vec, blocks = local_edges(self, batch)
        r = torch.linalg.norm(vec, dim=-1)
        rbf, fcut = self.rbf(r), cosine_cutoff(r, self.cutoff)
        x = self.embedding(self.species(batch.numbers))
        for interaction in self.interactions:
            x = interaction(x, i, j, rbf, fcut, blocks)
        return self.readout(x).squeeze(-1) * self.energy_scale
