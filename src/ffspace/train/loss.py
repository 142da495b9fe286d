"""Weighted energy / force / stress loss (MSE or Huber)."""

from __future__ import annotations

import torch
from torch.nn import functional as F


class Loss:
    """w_E · ⟨((E − E_ref)/N)²⟩ + w_F · ⟨(F − F_ref)²⟩ + w_σ · ⟨(σ − σ_ref)²⟩ (or Huber instead of squares)."""

    def __init__(self, energy_weight=1.0, forces_weight=10.0, stress_weight=0.0, kind="mse", huber_delta=0.01):
        self.w = {"energy": energy_weight, "forces": forces_weight, "stress": stress_weight}
        self.kind, self.delta = kind, huber_delta

    def _err(self, pred, ref):
        if self.kind == "huber":
            return F.huber_loss(pred, ref, delta=self.delta)
        return F.mse_loss(pred, ref)

    def __call__(self, out: dict, batch) -> tuple[torch.Tensor, dict]:
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
        if not parts:
            raise ValueError("the loss has no term: the batch carries none of the labels with non-zero weight")
        total = sum(self.w[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()}
