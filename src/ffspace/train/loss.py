"""Weighted energy / force / stress loss (MSE or Huber)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


class Loss:
    """w_E · ⟨((E − E_ref)/N)²⟩ + w_F · ⟨(F − F_ref)²⟩ + w_σ · ⟨(σ − σ_ref)²⟩ + w_μ · ⟨(μ − μ_ref)²⟩ (e·Å; or Huber
    instead of squares)."""

    def __init__(self, energy_weight=1.0, forces_weight=10.0, stress_weight=0.0, kind="mse", huber_delta=0.01,
                 dipole_weight=0.0):
        self.w = {"energy": energy_weight, "forces": forces_weight, "stress": stress_weight, "dipole": dipole_weight}
        self.kind, self.delta = kind, huber_delta

    def _err(self, pred, ref):
        if self.kind == "huber":
            return F.huber_loss(pred, ref, delta=self.delta)
        return F.mse_loss(pred, ref)

    def __call__(self, out: dict, batch, share: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Total loss and its unweighted parts. ``share`` (term → fraction) scales each term by this batch's
        fraction of a larger batch's elements (frames for energy and stress, atoms for forces), so that the
        shares of a batch split across data-parallel workers sum to the loss of the whole batch."""
        parts = {}
        if self.w["energy"] and batch.energy is not None:
            n = batch.n_atoms.to(out["energy"].dtype)
            parts["energy"] = self._err(out["energy"] / n, batch.energy / n)
        if self.w["forces"] and batch.forces is not None:
            parts["forces"] = self._err(out["forces"], batch.forces)
        if self.w["stress"] and batch.stress is not None and "stress" in out:
            mask = batch.has_stress
            if mask.any():
                parts["stress"] = self._err(out["stress"][mask], batch.stress[mask])
        if self.w["dipole"] and batch.dipole is not None and "dipole" in out:
            mask = batch.has_dipole
            if mask.any():
                parts["dipole"] = self._err(out["dipole"][mask], batch.dipole[mask])
        if not parts:
            if share is not None:  # a worker's part of a batch may lack labels the rest of the batch has
                return out["energy"].sum() * 0.0, {}
            raise ValueError("the loss has no term: the batch carries none of the labels with non-zero weight")
        if share is not None:
            parts = {k: v * share[k] for k, v in parts.items()}
        total = sum(self.w[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}
