"""Radial bases and cutoff functions shared by the message-passing models."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(π r / rc) + 1) inside the cutoff, 0 outside: value and slope vanish at rc."""
    return torch.where(r < cutoff, 0.5 * (torch.cos(math.pi * r / cutoff) + 1.0), torch.zeros_like(r))


def smoothstep_switch(r: torch.Tensor, r_on, r_off) -> torch.Tensor:
    """1 below r_on, 0 above r_off, quintic (C2) in between; r_on and r_off may be per-edge tensors."""
    x = ((r - r_on) / (r_off - r_on)).clamp(0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


class BesselBasis(nn.Module):
    """sin(n π r / rc) / r, n = 1..n_basis (PaiNN, DimeNet)."""

    def __init__(self, cutoff: float, n_basis: int = 20):
        super().__init__()
        self.cutoff = float(cutoff)
        self.register_buffer("freqs", torch.arange(1, n_basis + 1, dtype=torch.float64) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return torch.sin(self.freqs.to(r.dtype) * r) / r


class GaussianBasis(nn.Module):
    """exp(−γ (r − μ_k)²) on an even grid of centres in [0, rc] (SchNet)."""

    def __init__(self, cutoff: float, n_basis: int = 50):
        super().__init__()
        centres = torch.linspace(0.0, cutoff, n_basis, dtype=torch.float64)
        self.register_buffer("centres", centres)
        self.gamma = 0.5 / float(centres[1] - centres[0]) ** 2

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * (r.unsqueeze(-1) - self.centres.to(r.dtype)) ** 2)
