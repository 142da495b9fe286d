"""MACE-style equivariant many-body model, written on e3nn (Batatia et al., NeurIPS 2022).

Per interaction: an equivariant atomic basis A_i = Σ_j R(r_ij) · (h_j ⊗ Y(r̂_ij)) (channel-wise tensor
product with spherical harmonics up to ``lmax``, weights from a radial MLP on Bessel functions × a smooth
cutoff); higher body order from symmetric products of A with itself (A ⊗ A, and (A ⊗ A) ⊗ A for
``correlation`` = 3), contracted to the next node features; scalar readouts summed over layers.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FFModel, register, scatter_sum
from .radial import BesselBasis, cosine_cutoff


def _uvu_tensor_product(irreps_in1, irreps_in2, irreps_out_filter):
    """Channel-wise ('uvu') tensor product: returns the product and its output irreps."""
    from e3nn import o3

    irreps_out, instructions = [], []
    for i1, (mul, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            for ir in ir1 * ir2:
                if ir in irreps_out_filter:
                    instructions.append((i1, i2, len(irreps_out), "uvu", True))
                    irreps_out.append((mul, ir))
    irreps_out = o3.Irreps(irreps_out)
    tp = o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions, shared_weights=False,
                          internal_weights=False)
    return tp, irreps_out


@register("mace")
class MACE(FFModel):
    def __init__(self, elements, cutoff: float = 5.0, channels: int = 32, lmax: int = 2, layers: int = 2,
                 correlation: int = 3, n_rbf: int = 8, radial_hidden: int = 64, energy_scale: float = 1.0):
        super().__init__()
        from e3nn import o3

        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), channels=channels,
                           lmax=lmax, layers=layers, correlation=correlation, n_rbf=n_rbf,
                           radial_hidden=radial_hidden, energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff, self.correlation = float(cutoff), int(correlation)
        self.embedding = nn.Embedding(len(self.elements), channels)
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.sh_irreps = o3.Irreps.spherical_harmonics(lmax)
        self.spherical_harmonics = o3.SphericalHarmonics(self.sh_irreps, normalize=True, normalization="component")
        hidden = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])
        node_irreps = o3.Irreps(f"{channels}x0e")
        self.convs, self.radials, self.mix, self.products, self.updates, self.readouts = (
            nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList())
        for _ in range(layers):
            tp, a_irreps = _uvu_tensor_product(node_irreps, self.sh_irreps, hidden)
            self.convs.append(tp)
            self.radials.append(nn.Sequential(nn.Linear(n_rbf, radial_hidden), nn.SiLU(),
                                              nn.Linear(radial_hidden, tp.weight_numel)))
            self.mix.append(o3.Linear(a_irreps, hidden))
            products = nn.ModuleList()
            for _ in range(self.correlation - 1):
                products.append(o3.FullyConnectedTensorProduct(hidden, hidden, hidden))
            self.products.append(products)
            self.updates.append(o3.Linear(hidden, hidden))
            node_irreps = hidden
            self.readouts.append(o3.Linear(hidden, "1x0e"))
        self.node_irreps = hidden
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))

    def forward(self, batch) -> torch.Tensor:
        i, j = batch.edge_index
        vec = batch.edge_vectors()
        r = torch.linalg.norm(vec, dim=-1)
        sh = self.spherical_harmonics(vec)
        fcut = cosine_cutoff(r, self.cutoff).unsqueeze(-1)
        radial_in = self.rbf(r) * fcut
        n = batch.numbers.shape[0]
        h = self.embedding(self.species(batch.numbers))
        energy = h.new_zeros(n)
        for conv, radial, mix, products, update, readout in zip(self.convs, self.radials, self.mix, self.products,
                                                                self.updates, self.readouts):
            # The cutoff multiplies the radial weights themselves (not only their input): an edge entering the
            # cutoff sphere then contributes nothing, whatever the MLP's biases.
            messages = conv(h[j], sh, radial(radial_in) * fcut)
            a = mix(scatter_sum(messages, i, n))
            # Body order: A, A⊗A, (A⊗A)⊗A ... summed (MACE's symmetric contraction, unfolded).
            b, power = a, a
            for product in products:
                power = product(power, a)
                b = b + power
            h = update(b)
            energy = energy + readout(h).squeeze(-1)
        return energy * self.energy_scale
