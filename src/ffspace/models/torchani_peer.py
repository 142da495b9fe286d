"""The ANI peer: torchani's AEV computer and per-element networks (Smith et al., ANI-1x recipe), wrapped as an
ffspace family so the same trainer, data, budget and physics suite apply to it.

torchani's own ``AEVComputer.like_1x`` (radial cutoff 5.2 Å, angular 3.5 Å, 16 radial and 4 × 8 angular
terms) and ``ANINetworks.like_1x`` (CELU networks of ANI-1x's widths per element), built from scratch. Only
the neighbour list is ffspace's: the batch's full edge list becomes torchani's half list (i < j, or a
positive periodic image of the same atom) and goes in through ``compute_from_neighbors``, so molecules,
batches and periodic cells all take the same path. The per-atom outputs are scaled by the data's energy
scale; the reference energies live in ffspace's `AtomicReference` term.

torchani is an optional peer (``pip install torchani --no-deps``); the family registers only when it imports.
"""

from __future__ import annotations

import warnings

import torch

from .base import FFModel, register

with warnings.catch_warnings():  # torchani warns at import that its optional CUDA extensions are absent
    warnings.simplefilter("ignore")
    from torchani.aev import AEVComputer
    from torchani.neighbors import Neighbors
    from torchani.nn import ANINetworks

_SYMBOLS = {1: "H", 6: "C", 7: "N", 8: "O", 9: "F", 16: "S", 17: "Cl"}


def _half(edge_index: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Mask of the edges that keep each unordered pair once: i < j, or i == j with a positive image shift."""
    i, j = edge_index
    keep = i < j
    if shifts.shape[0]:
        s = shifts.round().long()
        positive = (s[:, 0] > 0) | ((s[:, 0] == 0) & ((s[:, 1] > 0) | ((s[:, 1] == 0) & (s[:, 2] > 0))))
        keep = keep | ((i == j) & positive)
    return keep


@register("torchani")
class TorchANI(FFModel):
    """torchani's ANI-1x-shaped model: AEVs with radial ``cutoff`` and ``angular_cutoff`` (Å), per-element MLPs."""

    def __init__(self, elements, cutoff: float = 5.2, angular_cutoff: float = 3.5, energy_scale: float = 1.0):
        super().__init__()
        unknown = sorted(set(int(z) for z in elements) - set(_SYMBOLS))
        if unknown:
            raise ValueError(f"the torchani peer has networks for {sorted(_SYMBOLS)} only; data has elements {unknown}")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff),
                           angular_cutoff=float(angular_cutoff), energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        self.aev = AEVComputer.like_1x(num_species=len(self.elements), radial_cutoff=float(cutoff),
                                       angular_cutoff=float(angular_cutoff))
        self.networks = ANINetworks.like_1x(symbols=[_SYMBOLS[z] for z in self.elements], in_dim=self.aev.out_dim)
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))

    def forward(self, batch) -> torch.Tensor:
        vec = batch.edge_vectors()
        dist = torch.linalg.norm(vec, dim=-1)
        # torchani's cutoff functions are not zero past the cutoff: its neighbour lists never go there, and
        # neither may ours (a Sum with a longer-ranged term builds longer edges).
        keep = _half(batch.edge_index, batch.shifts) & (dist < self.cutoff)
        vec, dist, pairs = vec[keep], dist[keep], batch.edge_index[:, keep]
        # The whole batch is one "molecule" of torchani's: its graph has no edges between structures.
        species = self.species(batch.numbers)[None]
        neighbors = Neighbors(pairs, dist, -vec)  # torchani: r_first − r_second
        aevs = self.aev.compute_from_neighbors(species, batch.positions[None], neighbors)
        energies = self.networks(species, aevs, atomic=True)[0]
        return energies * self.energy_scale.to(energies.dtype)
