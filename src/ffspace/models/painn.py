"""PaiNN: polarizable atom interaction neural network (Schütt, Unke, Gastegger, ICML 2021).

Scalar features s_i (F) and vector features v_i (3 × F) exchange messages along edges and are
mixed by an equivariant update; the energy is a per-atom readout of the scalars.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FFModel, register, scatter_sum
from .chunking import edge_sum, local_edges
from .field import FIELD_SCALE
from .radial import BesselBasis, cosine_cutoff


class _Message(nn.Module):
    def __init__(self, features: int, n_rbf: int):
        super().__init__()
        self.features = features
        self.phi = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, 3 * features))
        self.filter = nn.Linear(n_rbf, 3 * features)

    def forward(self, s, v, i, j, rbf, fcut, direction, blocks=None):
        # blocks: large graphs in inference, block by block in bounded memory (chunking.py)
        ds, dv = edge_sum(blocks, self._messages, i, s.shape[0], (j, rbf, fcut, direction), (self.phi(s), v))
        return s + ds, v + dv

    def _messages(self, i, n, j, rbf, fcut, direction, phi, v):
        """Scalar and vector messages summed on the ``n`` receivers ``i`` (0..n-1) of these edges."""
        x = phi[j] * (self.filter(rbf) * fcut.unsqueeze(-1))
        ds, dvv, dvs = torch.split(x, self.features, dim=-1)
        dv = v[j] * dvv.unsqueeze(1) + dvs.unsqueeze(1) * direction.unsqueeze(-1)
        return scatter_sum(ds, i, n), scatter_sum(dv, i, n)


class _Update(nn.Module):
    def __init__(self, features: int, eps: float = 1e-8):
        super().__init__()
        self.features, self.eps = features, eps
        self.uv = nn.Linear(features, 2 * features, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * features, features), nn.SiLU(), nn.Linear(features, 3 * features))

    def forward(self, s, v):
        u, w = torch.split(self.uv(v), self.features, dim=-1)
        # eps keeps the norm differentiable when v = 0 (first layer, isolated atoms).
        w_norm = torch.sqrt((w**2).sum(dim=1) + self.eps)
        a = self.mlp(torch.cat([s, w_norm], dim=-1))
        avv, asv, ass = torch.split(a, self.features, dim=-1)
        return s + asv * (u * w).sum(dim=1) + ass, v + avv.unsqueeze(1) * u


@register("painn")
class PaiNN(FFModel):
    def __init__(self, elements, cutoff: float = 5.0, features: int = 128, layers: int = 3, n_rbf: int = 20,
                 energy_scale: float = 1.0, field_input: bool = False):
        super().__init__()
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), features=features,
                           layers=layers, n_rbf=n_rbf, energy_scale=float(energy_scale))
        if field_input:  # only then, so packages without it keep their config as it was
            self.config["field_input"] = True
        self.field_input = bool(field_input)
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        self.embedding = nn.Embedding(len(self.elements), features)
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.messages = nn.ModuleList(_Message(features, n_rbf) for _ in range(layers))
        self.updates = nn.ModuleList(_Update(features) for _ in range(layers))
        self.readout = nn.Sequential(nn.Linear(features, features // 2), nn.SiLU(), nn.Linear(features // 2, 1))
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))
        if self.field_input:
            # The external field as the starting vector features (issue 33): v_i = w(Z_i) ℰ, zero without a
            # field, so the messages couple it with the geometry equivariantly. Zero weights at the start:
            # training begins from the field-free model.
            self.field_weights = nn.Parameter(torch.zeros(len(self.elements), features))

    @property
    def field_dependent(self) -> bool:
        return self.field_input

    def forward(self, batch) -> torch.Tensor:
        i, j, vec, blocks = local_edges(self, batch)
        r = torch.linalg.norm(vec, dim=-1)
        direction = vec / r.unsqueeze(-1)
        rbf, fcut = self.rbf(r), cosine_cutoff(r, self.cutoff)
        s = self.embedding(self.species(batch.numbers))
        v = s.new_zeros((s.shape[0], 3, s.shape[1]))
        field = getattr(batch, "field", None)
        if self.field_input and field is not None:
            f = (field[batch.graph_index] / FIELD_SCALE).to(s.dtype)  # (N, 3)
            v = v + f.unsqueeze(-1) * self.field_weights[self.species(batch.numbers)].unsqueeze(1)
        for message, update in zip(self.messages, self.updates):
            s, v = message(s, v, i, j, rbf, fcut, direction, blocks)
            s, v = update(s, v)
        return self.readout(s).squeeze(-1) * self.energy_scale
