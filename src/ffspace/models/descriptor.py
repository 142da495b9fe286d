"""Descriptor network (Behler–Parrinello / ANI): atom-centred symmetry functions, one network per element.

Radial functions: Σ_j exp(−η (r_ij − R_s)²) f_c(r_ij), one channel per neighbour element and shift R_s.
Angular functions (Behler's type): 2^(1−ζ) Σ_{j<k} (1 + λ cos θ_jik)^ζ exp(−η_a ((r_ij + r_ik)/2 − R_a)²)
f_c(r_ij) f_c(r_ik), one channel per unordered neighbour-element pair, λ = ±1, ζ and R_a on a grid.
Every term is a smooth function of distances and cos θ, so forces are smooth and the cutoffs C1.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from .base import FFModel, register, scatter_sum
from .radial import cosine_cutoff


def angle_triplets(centre: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All unordered pairs (e1, e2) of edges that share their centre atom, vectorised (no Python loop)."""
    order = torch.argsort(centre, stable=True)
    counts = torch.bincount(centre, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    pos = torch.arange(order.numel(), device=centre.device)
    # Edge at sorted position p pairs with the later edges of its centre's block.
    partners = start[centre[order]] + counts[centre[order]] - 1 - pos
    total = int(partners.sum())
    first = torch.repeat_interleave(pos, partners)
    offsets = torch.cumsum(partners, 0) - partners
    second = first + 1 + (torch.arange(total, device=centre.device) - torch.repeat_interleave(offsets, partners))
    return order[first], order[second]


@register("ani")
class DescriptorNet(FFModel):
    def __init__(self, elements, cutoff: float = 5.2, angular_cutoff: float = 3.5, n_radial: int = 16,
                 radial_eta: float = 16.0, n_angular_shifts: int = 4, angular_eta: float = 8.0,
                 zetas=(1.0, 4.0), hidden=(128, 64), energy_scale: float = 1.0):
        super().__init__()
        zetas, hidden = [float(z) for z in zetas], [int(h) for h in hidden]
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff),
                           angular_cutoff=float(angular_cutoff), n_radial=n_radial, radial_eta=radial_eta,
                           n_angular_shifts=n_angular_shifts, angular_eta=angular_eta, zetas=zetas, hidden=hidden,
                           energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff, self.angular_cutoff = float(cutoff), float(angular_cutoff)
        n_el = len(self.elements)
        self.register_buffer("radial_shifts", torch.linspace(0.8, cutoff - 0.5, n_radial, dtype=torch.float64))
        self.register_buffer("angular_shifts", torch.linspace(0.9, angular_cutoff - 0.5, n_angular_shifts,
                                                              dtype=torch.float64))
        self.register_buffer("zetas", torch.tensor(zetas, dtype=torch.float64))
        self.radial_eta, self.angular_eta = float(radial_eta), float(angular_eta)
        pairs = list(itertools.combinations_with_replacement(range(n_el), 2))
        pair_index = torch.zeros(n_el, n_el, dtype=torch.long)
        for k, (a, b) in enumerate(pairs):
            pair_index[a, b] = pair_index[b, a] = k
        self.register_buffer("pair_index", pair_index, persistent=False)
        self.n_pairs = len(pairs)
        self.n_features = n_el * n_radial + self.n_pairs * n_angular_shifts * len(zetas) * 2
        self.networks = nn.ModuleList()
        for _ in range(n_el):
            layers, width = [], self.n_features
            for h in hidden:
                layers += [nn.Linear(width, h), nn.CELU(alpha=0.1)]
                width = h
            layers.append(nn.Linear(width, 1))
            self.networks.append(nn.Sequential(*layers))
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))

    def descriptors(self, batch) -> torch.Tensor:
        i, j = batch.edge_index
        vec = batch.edge_vectors()
        r = torch.linalg.norm(vec, dim=-1)
        n = batch.numbers.shape[0]
        species = self.species(batch.numbers)
        n_el = len(self.elements)
        # Radial: (E, n_radial) per edge, summed into the neighbour-element block of the centre atom.
        g = torch.exp(-self.radial_eta * (r.unsqueeze(-1) - self.radial_shifts) ** 2)
        g = g * cosine_cutoff(r, self.cutoff).unsqueeze(-1)
        radial = scatter_sum(g, i * n_el + species[j], n * n_el).reshape(n, -1)
        # Angular: pairs of edges within the angular cutoff that share a centre.
        inner = torch.nonzero(r < self.angular_cutoff).squeeze(-1)
        e1, e2 = angle_triplets(i[inner], n)
        e1, e2 = inner[e1], inner[e2]
        r1, r2 = r[e1], r[e2]
        cos = (vec[e1] * vec[e2]).sum(-1) / (r1 * r2)
        fc = cosine_cutoff(r1, self.angular_cutoff) * cosine_cutoff(r2, self.angular_cutoff)
        radial_part = torch.exp(-self.angular_eta * ((r1 + r2).unsqueeze(-1) / 2 - self.angular_shifts) ** 2)
        parts = []
        for lam in (1.0, -1.0):
            base = (1.0 + lam * cos).clamp(min=0.0).unsqueeze(-1)
            parts.append(2.0 ** (1.0 - self.zetas) * base**self.zetas)
        angular_part = torch.cat(parts, dim=-1)  # (T, 2 * n_zeta)
        t = (angular_part.unsqueeze(1) * radial_part.unsqueeze(2)).flatten(1) * fc.unsqueeze(-1)
        channel = self.pair_index[species[j[e1]], species[j[e2]]]
        angular = scatter_sum(t, i[e1] * self.n_pairs + channel, n * self.n_pairs).reshape(n, -1)
        return torch.cat([radial, angular], dim=-1)

    def forward(self, batch) -> torch.Tensor:
        features = self.descriptors(batch)
        species = self.species(batch.numbers)
        energies = features.new_zeros(features.shape[0])
        for k, net in enumerate(self.networks):
            mask = species == k
            if mask.any():
                energies = energies.index_put((mask,), net(features[mask]).squeeze(-1))
        return energies * self.energy_scale
