"""DimeNet++-style directional message passing (Gasteiger et al., ICLR 2020; DimeNet++: arXiv:2011.14115).

Messages live on directed edges, m_ji for j → i, and are updated from the messages m_kj arriving at j, weighted by
a basis of the *angle* α_kji at j between k and i and the distance d_kj: the model sees bond angles explicitly,
through triplets, where PaiNN and the MACE-style model see them through vector features or products of spherical
harmonics. DimeNet++'s block (interaction in a low-dimensional space of triplets, up- and down-projections,
residual layers, output blocks summing messages into atoms after every interaction) is kept; two simplifications:

- the spherical basis is the product of the radial Bessel functions sin(nπd/c)/d and the Legendre polynomials
  P_l(cos α) (∝ Y_l0), rather than DimeNet's spherical Bessel functions j_l(z_ln d/c) with their roots: the same
  angular resolution (l < ``n_spherical``) without a table of roots;
- both bases are multiplied by the cosine cutoff (value and slope vanish at the cutoff) instead of DimeNet's
  polynomial envelope.

Triplets k → j → i exclude the step back (k = i, the same periodic image). There is no bounded-memory chunking:
the triplets of a large box (~35 per edge at 5 Å in water) make this a model for molecules and small cells.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FFModel, register, scatter_sum
from .chunking import within_cutoff
from .radial import BesselBasis, cosine_cutoff


def _legendre(x: torch.Tensor, n: int) -> torch.Tensor:
    """P_0..P_{n-1}(x) by Bonnet's recursion, (..., n)."""
    out = [torch.ones_like(x), x]
    for l in range(1, n - 1):
        out.append(((2 * l + 1) * x * out[l] - l * out[l - 1]) / (l + 1))
    return torch.stack(out[:n], -1)


def triplets(i: torch.Tensor, j: torch.Tensor, vec: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs (kj, ji) of edges forming k → j → i: edge kj's receiver is edge ji's sender, without the step
    back (k the same atom and image as i). Edges are (receiver i, sender j, vec = r_j − r_i)."""
    order = torch.argsort(i, stable=True)
    counts = torch.bincount(i, minlength=n_nodes)
    first = torch.cumsum(counts, 0) - counts
    per_edge = counts[j]  # edges arriving at each edge's sender
    ji = torch.repeat_interleave(torch.arange(i.shape[0], device=i.device), per_edge)
    start = torch.repeat_interleave(first[j], per_edge)
    offset = torch.arange(ji.shape[0], device=i.device) - torch.repeat_interleave(torch.cumsum(per_edge, 0) - per_edge,
                                                                                    per_edge)
    kj = order[start + offset]
    # the step back: k is i in the same image, so r_k − r_j = −(r_j − r_i)
    back = (j[kj] == i[ji]) & ((vec[kj].detach() + vec[ji].detach()).abs().sum(-1) < 1e-6)
    return kj[~back], ji[~back]


class _Residual(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, features), nn.SiLU())

    def forward(self, x):
        return x + self.net(x)


class _Interaction(nn.Module):
    """DimeNet++'s interaction block: the messages m_kj, filtered by distance and angle in a small triplet space,
    summed into m_ji."""

    def __init__(self, features: int, int_features: int, basis_features: int, n_rbf: int, n_sbf: int):
        super().__init__()
        self.ji, self.kj = nn.Linear(features, features), nn.Linear(features, features)
        self.rbf = nn.Sequential(nn.Linear(n_rbf, basis_features, bias=False),
                                 nn.Linear(basis_features, features, bias=False))
        self.sbf = nn.Sequential(nn.Linear(n_sbf, basis_features, bias=False),
                                 nn.Linear(basis_features, int_features, bias=False))
        self.down = nn.Linear(features, int_features, bias=False)
        self.up = nn.Linear(int_features, features, bias=False)
        self.before = _Residual(features)
        self.skip = nn.Linear(features, features)
        self.after = nn.Sequential(_Residual(features), _Residual(features))
        self.act = nn.SiLU()

    def forward(self, m, rbf, sbf, kj, ji):
        x_ji = self.act(self.ji(m))
        x_kj = self.act(self.down(self.act(self.kj(m)) * self.rbf(rbf)))
        x_kj = scatter_sum(x_kj[kj] * self.sbf(sbf), ji, m.shape[0])
        h = self.before(x_ji + self.act(self.up(x_kj)))
        return self.after(self.act(self.skip(h)) + m)


class _Output(nn.Module):
    """Messages weighted by distance, summed into their receiving atom, then an MLP to an energy per atom."""

    def __init__(self, features: int, out_features: int, n_rbf: int, layers: int = 3):
        super().__init__()
        self.rbf = nn.Linear(n_rbf, features, bias=False)
        self.up = nn.Linear(features, out_features, bias=False)
        self.mlp = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(out_features, out_features),
                                                                       nn.SiLU())])
        self.out = nn.Linear(out_features, 1, bias=False)

    def forward(self, m, rbf, i, n):
        return self.out(self.mlp(self.up(scatter_sum(self.rbf(rbf) * m, i, n)))).squeeze(-1)


@register("dimenet")
class DimeNet(FFModel):
    def __init__(self, elements, cutoff: float = 5.0, features: int = 64, int_features: int = 32,
                 basis_features: int = 8, out_features: int = 128, blocks: int = 3, n_rbf: int = 6,
                 n_spherical: int = 7, n_radial: int = 6, energy_scale: float = 1.0):
        super().__init__()
        if n_spherical < 1 or n_radial < 1:
            raise ValueError(f"n_spherical and n_radial must be ≥ 1, got {n_spherical} and {n_radial}")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), features=features,
                           int_features=int_features, basis_features=basis_features, out_features=out_features,
                           blocks=blocks, n_rbf=n_rbf, n_spherical=n_spherical, n_radial=n_radial,
                           energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff, self.n_spherical = float(cutoff), int(n_spherical)
        f = int(features)
        self.embedding = nn.Embedding(len(self.elements), f)
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.radial = BesselBasis(cutoff, n_radial)
        self.edge_rbf = nn.Sequential(nn.Linear(n_rbf, f), nn.SiLU())
        self.edge = nn.Sequential(nn.Linear(3 * f, f), nn.SiLU())
        self.interactions = nn.ModuleList(
            _Interaction(f, int_features, basis_features, n_rbf, n_spherical * n_radial) for _ in range(blocks))
        self.outputs = nn.ModuleList(_Output(f, out_features, n_rbf) for _ in range(blocks + 1))
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))

    def forward(self, batch) -> torch.Tensor:
        n = batch.numbers.shape[0]
        i, j, vec = within_cutoff(*batch.edge_index, batch.edge_vectors(), self.cutoff)
        r = torch.linalg.norm(vec, dim=-1)
        rbf = self.rbf(r) * cosine_cutoff(r, self.cutoff).unsqueeze(-1)
        kj, ji = triplets(i, j, vec, n)
        # the angle at j between j → k and j → i: r_k − r_j is edge kj's vector, r_i − r_j is minus edge ji's
        cos = -(vec[kj] * vec[ji]).sum(-1) / (r[kj] * r[ji])
        radial = self.radial(r[kj]) * cosine_cutoff(r[kj], self.cutoff).unsqueeze(-1)  # (T, n_radial)
        sbf = (_legendre(cos, self.n_spherical).unsqueeze(-1) * radial.unsqueeze(-2)).flatten(-2)
        h = self.embedding(self.species(batch.numbers))
        m = self.edge(torch.cat([h[i], h[j], self.edge_rbf(rbf)], -1))
        energy = self.outputs[0](m, rbf, i, n)
        for interaction, output in zip(self.interactions, self.outputs[1:]):
            m = interaction(m, rbf, sbf, kj, ji)
            energy = energy + output(m, rbf, i, n)
        return energy * self.energy_scale
