"""The peer: MACE from mace-torch (Batatia et al.), wrapped as an ffspace family so the same trainer,
data, budget and physics suite apply to it.

This is mace-torch's own ``mace.modules.MACE`` (its interaction, product and readout blocks, untouched),
built from scratch with the settings of its rMD17 examples: residual "RealAgnostic" interactions,
polynomial-envelope Bessel radial basis, radial MLP [64, 64, 64], a 16-channel gated readout on the last
layer. Only the inputs and outputs are adapted:

- in: ffspace's `Batch` → mace-torch's data dict (one-hot ``node_attrs``, ``edge_index`` as
  (sender, receiver) with vectors r_receiver − r_sender + shift, shifts in Å, ``batch``/``ptr``);
- out: mace-torch's per-atom energies (``node_energy``) times the data's energy scale, with its reference
  energies set to zero (ffspace's `AtomicReference` term holds them), and no forces: the `Potential`
  differentiates the energy, as for every other family.

mace-torch is an optional peer (``pip install mace-torch --no-deps`` + its runtime imports, see
docs/benchmarks.md); the family registers only when it imports.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import FFModel, register


@register("mace_torch")
class MACETorch(FFModel):
    """mace-torch's MACE: ``channels`` × (l = 0 … ``hidden_lmax``) hidden irreps, spherical harmonics up to
    ``lmax``, ``layers`` interactions of body order ``correlation`` + 1, cutoff in Å."""

    def __init__(self, elements, cutoff: float = 5.0, channels: int = 64, lmax: int = 3, hidden_lmax: int = 0,
                 layers: int = 2, correlation: int = 3, n_rbf: int = 8, avg_neighbors: float = 10.0,
                 energy_scale: float = 1.0):
        super().__init__()
        from e3nn import o3
        from mace.modules import interaction_classes
        from mace.modules.models import MACE

        if hidden_lmax not in (0, 1, 2):
            raise ValueError(f"hidden_lmax must be 0, 1 or 2, got {hidden_lmax}")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), channels=int(channels),
                           lmax=int(lmax), hidden_lmax=int(hidden_lmax), layers=int(layers),
                           correlation=int(correlation), n_rbf=int(n_rbf), avg_neighbors=float(avg_neighbors),
                           energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        hidden = o3.Irreps(" + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(hidden_lmax + 1)))
        self.mace = MACE(
            r_max=float(cutoff), num_bessel=int(n_rbf), num_polynomial_cutoff=5, max_ell=int(lmax),
            interaction_cls=interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=interaction_classes["RealAgnosticInteractionBlock"],
            num_interactions=int(layers), num_elements=len(self.elements), hidden_irreps=hidden,
            MLP_irreps=o3.Irreps("16x0e"), atomic_energies=np.zeros(len(self.elements)),
            avg_num_neighbors=float(avg_neighbors), atomic_numbers=list(self.elements),
            correlation=int(correlation), gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64])
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))

    def forward(self, batch) -> torch.Tensor:
        i, j = batch.edge_index
        species = self.species(batch.numbers)
        dtype = batch.positions.dtype
        if batch.shifts.shape[0]:  # periodic: integer cell shifts → Å (through the cell, so strain reaches it)
            shifts = torch.einsum("ek,ekl->el", batch.shifts, batch.cell[batch.graph_index[i]])
            unit_shifts = batch.shifts
        else:
            shifts = unit_shifts = batch.positions.new_zeros((i.shape[0], 3))
        counts = batch.n_atoms.to(batch.positions.device)
        data = {
            "positions": batch.positions,
            "node_attrs": torch.nn.functional.one_hot(species, len(self.elements)).to(dtype),
            "edge_index": torch.stack([i, j]),
            "shifts": shifts,
            "unit_shifts": unit_shifts,
            "cell": batch.cell,
            "batch": batch.graph_index,
            "ptr": torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)]),
        }
        out = self.mace(data, training=self.training, compute_force=False)
        return out["node_energy"].to(dtype) * self.energy_scale.to(dtype)
