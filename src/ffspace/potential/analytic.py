"""Hand-derived forces for linear ACE (and, through `ffspace.potential.analytic_dp`, Deep Potential): the fast path
where autograd is the cost.

On 2 CPU cores one autograd node costs ~20-30 µs (the tape, not the arithmetic): a 21-atom linear ACE call
has ~100 operations forward and ~150 backward, 4-6 ms by autograd for well under a millisecond of arithmetic.
Linear ACE's energy is a polynomial of the atomic basis A, so its derivative is written out here, with plain
tensor operations and no tape:

    G_i = ∂E_i/∂A_i          (ν = 1: w1; ν = 2: (W + Wᵀ) A; ν = 3: the three factors' partial products)
    ∂E/∂r_ij = Σ_k,lm G_i,k,lm ∂(R_k(r) Y_lm(r̂))/∂r_ij / n̄     (radial derivative along r̂, the harmonics'
                                                                 tangential derivative (I − r̂r̂ᵀ)∇Y / r)

and the forces are −∂E/∂positions. The model still computes energies only (`LinearACE.forward`); this evaluator
is derived from its weights and buffers, and `FastForces` compares it with autograd on the first call.
"""

from __future__ import annotations

import torch

from ..models.ace import LinearACE, _monomials, bessel_radial
from ..models.chunking import within_cutoff
from ..models.composite import AtomicReference, Sum
from ..models.deep_potential import DeepPotential
from . import analytic_dp


def supports(model) -> bool:
    """Whether the model is reference energies plus one term with hand-derived forces, linear ACE or Deep Potential
    (what `build_model_for_data` makes)."""
    terms = list(model.terms) if isinstance(model, Sum) else [model]
    return sum(isinstance(t, (LinearACE, DeepPotential)) for t in terms) == 1 and \
        all(isinstance(t, (LinearACE, DeepPotential, AtomicReference)) for t in terms)


def kernel_only(model) -> bool:
    """Whether the model has one MACE-style term: hand-derived forces exist for it only in the C kernel
    (`ffspace.potential.native_mace`), so only on the CPU and where that kernel builds. Its other terms (reference
    energies, and priors such as ZBL or classical MM that `build_model_for_data` adds) are evaluated beside it, by
    autograd where they depend on the geometry."""
    from .native_mace import supports as mace_supports

    terms = list(model.terms) if isinstance(model, Sum) else [model]
    return sum(mace_supports(t) for t in terms) == 1


def _autograd_term(term, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """A term's per-atom energies and forces by autograd (the priors beside a kernel)."""
    from dataclasses import replace

    with torch.enable_grad():
        positions = batch.positions.detach().requires_grad_(True)
        energies = term(replace(batch, positions=positions))
        if not energies.requires_grad:  # constants only
            return energies.detach(), torch.zeros_like(positions)
        (gradient,) = torch.autograd.grad(energies.sum(), [positions], allow_unused=True)
    return energies.detach(), (-gradient if gradient is not None else torch.zeros_like(positions))


def energies_forces(model, batch, kernel=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-atom energies (N,) and forces (N, 3) of a model `supports` (or, with its kernel, `kernel_only`) accepts,
    without autograd; with ``kernel`` (the C kernel of its linear ACE, compressed Deep Potential or MACE-style term,
    `ffspace.potential.native`, `native_dp`, `native_mace`, on the CPU) the energies are float64."""
    terms = list(model.terms) if isinstance(model, Sum) else [model]
    parts, forces, others = [], None, []
    for term in terms:
        if isinstance(term, AtomicReference):
            parts.append(term(batch))
        elif kernel is not None and term is kernel.term:
            e, forces = kernel(batch)
            parts.append(e)
        elif not isinstance(term, (LinearACE, DeepPotential)):  # a prior beside the MACE kernel
            e, f = _autograd_term(term, batch)
            parts.append(e)
            others.append(f)
        elif isinstance(term, DeepPotential):
            e, forces = kernel(batch) if kernel is not None else analytic_dp.energies_forces(term, batch)
            parts.append(e)
        else:
            e, forces = kernel(batch) if kernel is not None else _ace(term, batch)
            parts.append(e)
    dtype = torch.float64 if kernel is not None else parts[0].dtype
    for f in others:
        forces = forces + f.to(forces.dtype)
    return sum(p.to(dtype) for p in parts), forces


def _edge_gradient(ace, g, i, j, species, radial, dradial, sh, dsh, u, r):
    """∂E/∂r_ij (E, 3) from G = ∂E/∂A (N, K, D) for a basis built from ``radial`` and ``sh``."""
    n_el, n_rbf, d = len(ace.elements), radial.shape[1], sh.shape[1]
    h = g.reshape(-1, n_rbf, d).index_select(0, i * n_el + species[j]) / ace.avg_neighbors  # (E, n_rbf, D)
    along = ((h * sh[:, None, :]).sum(-1) * dradial).sum(-1)  # Σ G R' Y: the radial part
    p = (h * radial[:, :, None]).sum(1)  # (E, D): Σ_n G R_n
    grad_y = torch.einsum("ed,ekd->ek", p, dsh[:, :, :d])  # ∇_u of Σ G R Y
    tangential = (grad_y - (grad_y * u).sum(-1, keepdim=True) * u) / r[:, None]
    return along[:, None] * u + tangential


def _ace(ace: LinearACE, batch):
    n = batch.numbers.shape[0]
    i, j, vec = within_cutoff(*batch.edge_index, batch.edge_vectors(), ace.cutoff)
    r = torch.linalg.norm(vec, dim=-1)
    u = vec / r[:, None]
    mono = _monomials(u, ace.harmonics.shape[0])
    sh = mono @ ace.harmonics.to(vec.dtype)  # (E, D)
    dsh = torch.einsum("ec,kcd->ekd", mono, ace.harmonics_grad.to(vec.dtype))  # (E, 3, D): ∂Y/∂u
    species = ace.species(batch.numbers)
    da = (ace.lmax_a + 1) ** 2
    radial, dradial = bessel_radial(r, ace.cutoff, ace.freqs, derivative=True)
    a = ace._density(i, j, species, n, radial, sh[:, :da])
    c = ace.contracted()
    rows = torch.arange(n, device=species.device)
    energy = c["w0"][species] + (c["w1"][species] * a[:, :, 0]).sum(-1)
    g = torch.zeros_like(a)
    g[:, :, 0] = c["w1"][species]
    if c["w2"] is not None:
        d2 = c["w2"].shape[-1]
        a2 = a[:, :, :d2]
        g2 = torch.einsum("nbm,zabm->nzam", a2, c["w2_sym"])[rows, species]  # (W + Wᵀ) A
        energy = energy + 0.5 * (g2 * a2).sum((1, 2))
        g[:, :, :d2] += g2
    forces_from = [(g, radial, dradial, da)]
    if c["w3"] is not None:
        shared = ace.shares_basis
        d3 = (ace.lmax_3 + 1) ** 2
        if shared:
            a3 = ace.four_body_slice(a)
        else:
            radial3, dradial3 = bessel_radial(r, ace.cutoff_3, ace.freqs_3, derivative=True)
            a3 = ace._density(i, j, species, n, radial3, sh[:, :d3])
        energy3, g3 = _triple_gradient(ace, a3, c, rows, species)
        energy = energy + energy3
        if shared:  # the adjoint of `four_body_slice`
            g.reshape(n, len(ace.elements), ace.n_rbf, -1)[:, :, :ace.n_rbf_3, :d3] += \
                g3.reshape(n, len(ace.elements), ace.n_rbf_3, d3)
        else:
            forces_from.append((g3, radial3, dradial3, d3))
    dvec = sum(_edge_gradient(ace, gg, i, j, species, rr[:, :], dr, sh[:, :d], dsh, u, r)
               for gg, rr, dr, d in forces_from)
    forces = torch.zeros_like(batch.positions).index_add_(0, i, dvec).index_add_(0, j, -dvec)
    return energy, forces


def _triple_gradient(ace, a3, c, rows, species):
    """The ν = 3 energy (N,) and its gradient with respect to A' (N, K3, D3), on the kept triples only (the dense
    (K3·K3·slots, K3) weights are ~90 % zeros: ~4 M multiply-adds per aspirin call, 80 % of its time)."""
    n, k3, d3 = a3.shape
    dtype = a3.dtype
    g1, g2 = a3.index_select(2, ace.cg_m1), a3.index_select(2, ace.cg_m2)  # (N, K3, nonzeros)
    n_slots = ace.slot_m.shape[0]
    # U = Σ_nz C g1 ⊗ g2 into the slots (p, m3): a scatter over the last axis
    outer = (g1[:, :, None, :] * g2[:, None, :, :] * ace.cg_value.to(dtype)).reshape(n * k3 * k3, -1)
    u = outer.new_zeros(n * k3 * k3, n_slots).scatter_add_(1, ace.cg_slot.expand(outer.shape[0], -1), outer)
    u = u.reshape(n, -1)  # (N, K3·K3·slots)
    x = a3.index_select(2, ace.slot_m).reshape(n, -1)  # (N, K3·slots): A'_c,m3 at each slot
    mask = ace.triple_mask.to(dtype)
    ui, xi = ace.triple_u_index, ace.triple_x_index  # (T, W)
    w = c["w3t"][species][:, :, None] * mask  # (N, T, W)
    # index_select, not u[:, ui]: advanced indexing with a 2-d index is ~5x slower on CPU
    gu = u.index_select(1, ui.reshape(-1)).reshape(n, *ui.shape)
    gx = x.index_select(1, xi.reshape(-1)).reshape(n, *xi.shape)
    energy = (gu * gx * w).sum((1, 2))
    shape = (n, -1)
    du = u.new_zeros(u.shape[::-1]).index_add_(0, ui.reshape(-1), (gx * w).reshape(shape).T).T
    dx = x.new_zeros(x.shape[::-1]).index_add_(0, xi.reshape(-1), (gu * w).reshape(shape).T).T
    grad = dx.reshape(n, k3, n_slots) @ ace.slot_onehot.to(dtype)  # back from slots to A'_c,m
    # through U to its two factors
    dq = du.reshape(n, k3, k3, n_slots).index_select(3, ace.cg_slot) * ace.cg_value.to(dtype)  # (N, K3, K3, nonzeros)
    grad = grad + (dq * g2[:, None]).sum(2) @ ace.m1_onehot.to(dtype) \
        + (dq * g1[:, :, None]).sum(1) @ ace.m2_onehot.to(dtype)
    return energy, grad
