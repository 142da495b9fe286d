"""Hand-derived forces for Deep Potential (se_e2_a, `ffspace.models.deep_potential`), compressed or not: the fast
path where autograd is the cost.

The energy is a chain of small dense steps, so its derivative is written out backwards, with plain tensor operations
and no tape (the model still computes energies only; `FastForces` compares this with autograd on the first call):

    E_i = scale · N_f(D_i)                 ∂E/∂D: the fitting net's backward pass (tanh layers)
    D_i = T_i T_i[:M2]ᵀ                    ∂E/∂T = ∂E/∂D · T[:M2] + (∂E/∂D)ᵀ · T   (the second on the first M2 rows)
    T_i = (1/n̄) Σ_j G_ij ⊗ R̃_ij            ∂E/∂G_ij = ∂E/∂T_i · R̃_ij / n̄,  ∂E/∂R̃_ij = G_ijᵀ ∂E/∂T_i / n̄
    G_ij = N_e(s_ij) (or its table)       ∂G/∂s: the embedding net's forward-mode tangent (or the quintic's slope)
    R̃_ij = s_ij (1, r̂_ij)                  ∂/∂r_ij: s′ r̂ along the bond, s (I − r̂r̂ᵀ)/r across it
"""

from __future__ import annotations

import torch

from ..models.chunking import within_cutoff
from ..models.deep_potential import DeepPotential


def _layers(net):
    """The (weight, bias, tanh?) triples of an `nn.Sequential` of Linear and Tanh layers."""
    mods = list(net)
    out = []
    for k, m in enumerate(mods):
        if isinstance(m, torch.nn.Linear):
            out.append((m.weight, m.bias, k + 1 < len(mods) and isinstance(mods[k + 1], torch.nn.Tanh)))
    return out


def _value_and_slope(net, s):
    """An embedding net's output (E, M1) and its derivative with respect to its scalar input s (E,)."""
    a, da = s[:, None], torch.ones_like(s)[:, None]
    for w, b, tanh in _layers(net):
        a, da = torch.addmm(b, a, w.T), da @ w.T
        if tanh:
            a = torch.tanh(a)
            da = da * (1.0 - a * a)
    return a, da


def _energy_and_gradient(net, x):
    """A fitting net's output (n,) and its gradient with respect to its input (n, features)."""
    acts, a = [], x
    layers = _layers(net)
    for w, b, tanh in layers:
        a = torch.addmm(b, a, w.T)
        if tanh:
            a = torch.tanh(a)
        acts.append(a)
    grad = None
    for (w, _, tanh), a in zip(reversed(layers), reversed(acts)):
        if grad is None:
            grad = torch.ones_like(a)
        if tanh:
            grad = grad * (1.0 - a * a)
        grad = grad @ w
    return acts[-1][:, 0], grad


def _smooth_inverse_and_slope(r, cutoff, cutoff_smooth):
    """s(r) = sw(r)/r (zero beyond the cutoff) and ds/dr, with sw = u³(−6u² + 15u − 10) + 1."""
    width = cutoff - cutoff_smooth
    u = ((r - cutoff_smooth) / width).clamp(0.0, 1.0)
    sw = u**3 * (-6.0 * u**2 + 15.0 * u - 10.0) + 1.0
    dsw = -30.0 * u * u * (u - 1.0) ** 2 / width  # zero outside the switching interval, where u is clamped
    inside = r < cutoff
    s = torch.where(inside, sw / r, torch.zeros_like(r))
    ds = torch.where(inside, dsw / r - sw / (r * r), torch.zeros_like(r))
    return s, ds


def energies_forces(dp: DeepPotential, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-atom energies (N,) and forces (N, 3) of one Deep Potential term, without autograd."""
    n = batch.numbers.shape[0]
    i, j, vec = within_cutoff(*batch.edge_index, batch.edge_vectors(), dp.cutoff)
    species = dp.species(batch.numbers)
    r = torch.linalg.norm(vec, dim=-1)
    u = vec / r[:, None]
    s, ds = _smooth_inverse_and_slope(r, dp.cutoff, dp.cutoff_smooth)
    env = torch.cat([s[:, None], s[:, None] * u], 1)  # (E, 4)
    m1 = dp.config["embedding"][-1]
    if dp.compressed:
        table = dp.tables()
        k = torch.clamp((s / dp.table_step).floor().long(), 0, table.shape[1] - 1)
        t = (s - k.to(s.dtype) * dp.table_step)[:, None]
        c = table[species[j], k]  # (E, 6, M1)
        g = c[:, 0] + t * (c[:, 1] + t * (c[:, 2] + t * (c[:, 3] + t * (c[:, 4] + t * c[:, 5]))))
        dg = c[:, 1] + t * (2.0 * c[:, 2] + t * (3.0 * c[:, 3] + t * (4.0 * c[:, 4] + t * 5.0 * c[:, 5])))
    else:
        g, dg = vec.new_zeros(s.shape[0], m1), vec.new_zeros(s.shape[0], m1)
        for e, net in enumerate(dp.embedding):
            mask = species[j] == e
            if mask.any():
                value, slope = _value_and_slope(net, s[mask])
                g[mask], dg[mask] = value, slope
    inv = 1.0 / dp.avg_neighbors
    tmat = vec.new_zeros(n, m1, 4).index_add_(0, i, g[:, :, None] * env[:, None, :]) * inv  # (N, M1, 4)
    t2 = tmat[:, :dp.axis]
    d = torch.bmm(tmat, t2.transpose(1, 2)).reshape(n, -1)  # (N, M1·M2)
    energies, d_grad = vec.new_zeros(n), torch.zeros_like(d)
    for e, net in enumerate(dp.fitting):
        mask = species == e
        if mask.any():
            energy, grad = _energy_and_gradient(net, d[mask])
            energies[mask], d_grad[mask] = energy, grad
    scale = dp.energy_scale.to(vec.dtype)
    d_grad = d_grad.reshape(n, m1, dp.axis) * scale
    t_grad = torch.bmm(d_grad, t2)  # (N, M1, 4)
    t_grad[:, :dp.axis] += torch.bmm(d_grad.transpose(1, 2), tmat)
    t_edge = t_grad[i] * inv  # (E, M1, 4)
    g_grad = (t_edge * env[:, None, :]).sum(-1)  # (E, M1)
    env_grad = (t_edge * g[:, :, None]).sum(1)  # (E, 4)
    along_u = (env_grad[:, 1:] * u).sum(-1)
    ds_total = (g_grad * dg).sum(-1) + env_grad[:, 0] + along_u  # ∂E/∂s through G and both parts of R̃
    dvec = (ds_total * ds)[:, None] * u + (s / r)[:, None] * (env_grad[:, 1:] - along_u[:, None] * u)
    forces = torch.zeros_like(batch.positions).index_add_(0, i, dvec).index_add_(0, j, -dvec)
    return energies * scale, forces
