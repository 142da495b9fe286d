"""Response of a molecule to a uniform external electric field ℰ, learned from geometry (issue 33).

    E_field(R, ℰ) = −ℰ·μ(R) − ½ ℰ·α(R)·ℰ

to second order in the field (the perturbative regime of field-dependent potentials; Joll et al., Nat. Commun.
2024, keep the same orders). Both response tensors are built from learned atomic quantities so that they are
equivariant by construction and transfer between molecules:

- μ(R) = Σ_i q_i(R) (r_i − r̄): charges from a small SchNet, shifted to conserve each structure's total charge,
  so the geometry dependence of the charges (charge flux) shapes the dipole derivatives an IR spectrum needs;
  r̄ is the structure's centre of geometry (for a neutral structure the dipole does not depend on it);
- α(R) = Σ_i a_i(R) 𝟙 + Σ_(i,j) β_ij(R) r̂_ij r̂_ijᵀ: isotropic atomic polarizabilities plus bond-polarizability
  tensors along every pair within the cutoff (the classic bond-polarizability model of Raman intensities),
  a_i, β_ij ≥ 0 (softplus), so α is positive semidefinite.

The term is composed with any family (`model.field: true`), whose energy is the field-free surface; the dipole
μ = −∂E/∂ℰ and polarizability α = −∂²E/∂ℰ² come out of `Potential.compute` by autograd. Units: ℰ in V/Å,
energies in eV, μ in e·Å, α in e·Å²/V (× 14.3996 = Å³). Molecules only: the dipole of a periodic cell is not
the sum of charges times wrapped positions.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import FFModel, register, scatter_sum
from .electrostatics import conserve_charge
from .radial import cosine_cutoff
from .schnet import SchNet, ShiftedSoftplus

# Starting atomic polarizability ~0.5 Å³ = 0.035 e·Å²/V, bond term a third of it: the right order for
# first-row atoms, so a fit starts from a sane response.
_A0, _B0 = 0.035, 0.012

# Fields reach the equivariant families' inputs (``field_input``) in units of 0.1 V/Å, the strength of the
# fields of the labels and spectroscopy (≤ 0.2 V/Å), so the features they make are of order one.
FIELD_SCALE = 0.1


class _AtomicHeads(SchNet):
    """A SchNet whose readout gives three numbers per atom (raw charge, atomic and bond polarizability)."""

    def __init__(self, elements, cutoff: float, features: int, layers: int):
        super().__init__(elements, cutoff=cutoff, features=features, layers=layers, n_rbf=20, energy_scale=1.0)
        self.readout = nn.Sequential(nn.Linear(features, features // 2), ShiftedSoftplus(),
                                     nn.Linear(features // 2, 3))
        with torch.no_grad():  # start from zero charges and the typical polarizabilities above
            self.readout[-1].weight.mul_(0.1)
            self.readout[-1].bias.copy_(torch.tensor([0.0, _inv_softplus(_A0), _inv_softplus(_B0)]))


def _inv_softplus(x: float) -> float:
    return float(torch.log(torch.expm1(torch.tensor(x, dtype=torch.float64))))


@register("field")
class FieldResponse(FFModel):
    """Per-atom energies of the structures' external fields (zero where a batch has no field)."""

    field_dependent = True
    # Charges are conserved over the whole structure (smooth when a bond breaks, as reactive MD needs), so two
    # far-apart molecules may exchange charge: the term is not additive over fragments (the physics suite skips
    # that check, as for electrostatics).
    long_range = True

    def __init__(self, elements, cutoff: float = 4.0, features: int = 32, layers: int = 2, energy_scale: float = 1.0):
        super().__init__()
        # energy_scale is accepted for a uniform interface; the response has physical units and does not use it.
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), features=int(features),
                           layers=int(layers), energy_scale=float(energy_scale))
        self._init_elements(elements)
        self.cutoff = float(cutoff)
        self.heads = _AtomicHeads(elements, self.cutoff, int(features), int(layers))

    def responses(self, batch) -> dict:
        """Charges q (N,) e, atomic polarizabilities a (N,) and bond polarizabilities β (E,) in e·Å²/V, with the
        centred positions (N, 3) and the unit edge vectors (E, 3)."""
        if bool(batch.pbc.any()):
            raise ValueError("the field response is defined for molecules only (no periodic cell): the dipole of "
                             "a periodic structure is not a sum of charges times wrapped positions")
        raw = self.heads(batch)
        total = batch.total_charge if batch.total_charge is not None else raw.new_zeros(batch.n_graphs)
        q = conserve_charge(raw[:, 0], batch.graph_index, batch.n_atoms, total.to(raw.dtype))
        a = F.softplus(raw[:, 1])
        n_graphs = batch.n_graphs
        centre = scatter_sum(batch.positions, batch.graph_index, n_graphs) / batch.n_atoms.to(raw.dtype)[:, None]
        centred = batch.positions - centre[batch.graph_index]
        i, j = batch.edge_index
        vec = batch.edge_vectors()
        r = torch.linalg.norm(vec, dim=-1)
        # Each unordered pair appears twice (i→j, j→i): half of the pair tensor on each, from both atoms' values.
        beta = 0.25 * (F.softplus(raw[i, 2]) + F.softplus(raw[j, 2])) * cosine_cutoff(r, self.cutoff)
        return {"charges": q, "atomic": a, "bond": beta, "centred": centred, "unit": vec / r[:, None],
                "edge_atom": i}

    def forward(self, batch) -> torch.Tensor:
        field = getattr(batch, "field", None)
        if field is None:
            return batch.positions.new_zeros(batch.positions.shape[0])
        parts = self.responses(batch)
        e_atom = field[batch.graph_index]  # (N, 3) the field at every atom
        energy = -parts["charges"] * (e_atom * parts["centred"]).sum(-1) - 0.5 * parts["atomic"] * (e_atom**2).sum(-1)
        i = parts["edge_atom"]
        projected = (field[batch.graph_index[i]] * parts["unit"]).sum(-1)
        energy = energy - 0.5 * scatter_sum(parts["bond"] * projected**2, i, energy.shape[0])
        return energy
