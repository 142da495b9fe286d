"""MACE-style equivariant many-body model on e3nn (Batatia et al., NeurIPS 2022), written for CPU speed.

Per layer, an equivariant atomic basis per channel k (the ACE "A" basis):

    A_i,k,lm = Σ_k' U_l,kk' (1/n̄) Σ_j R_k',l(r_ij) · Y_lm(r̂_ij) · (W h_j)_k'     l = 0..lmax (e3nn real harmonics)

then higher body order by symmetric tensor products of A with itself, channel by channel, coupled to
invariants with Clebsch–Gordan (Wigner 3j) coefficients from e3nn:

    ν = 1: A_k,00      ν = 2: Σ_m A_k,lm A_k,lm (per l)      ν = 3: Σ C^{l1 l2 l3}_{m1 m2 m3} A_k,l1m1 A_k,l2m2 A_k,l3m3

(only even l1 + l2 + l3: true scalars, invariant under rotations and reflections). So a layer sees up to
(correlation + 1)-body correlations. The invariants B_k,p are contracted with element-dependent weights
(MACE's symmetric contraction), mixed across channels, and added to the previous node features; every
layer has a readout and the energies sum. By default hidden features are invariant (MACE's "L = 0 hidden
irreps"): the angular information enters through A up to ``lmax`` ≤ 3 and its products. ``hidden_lmax=1``
also carries l = 1 vector features (A_1 and the ν = 2 couplings A_l1 ⊗ A_l2 → 1 with l1 + l2 odd) into the
next layer's messages through Y_l' ⊗ v → l couplings, with one radial weight per channel and a weight per
channel and path (MACE has a radial weight per channel and path). The couplings are dense matrices
precomputed at construction, so a step costs a few matrix products per layer. Three choices keep the
training step (energy, forces by autograd, and the gradient of both) cheap on CPU: A is aggregated as a
batched matrix product over padded neighbour lists rather than by scattering an (edges × K × D) tensor, the
padding's gradients are gathers rather than scatters, and A ⊗ A is formed only for the (m1 ≤ m2) pairs the
couplings use (29 of 81 for lmax = 2).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FFModel, register
from .chunking import edge_sum, local_edges
from .field import FIELD_SCALE
from .radial import BesselBasis, cosine_cutoff


def _coupling_matrices(lmax: int, correlation: int):
    """(D², P2) and (D², P3·D) matrices turning A ⊗ A (flattened) into the ν = 2 and ν = 3 invariants."""
    from e3nn import o3

    dim = (lmax + 1) ** 2
    start = [l * l for l in range(lmax + 2)]
    c2 = torch.zeros(dim, dim, lmax + 1, dtype=torch.float64)
    for l in range(lmax + 1):
        c2[start[l]:start[l + 1], start[l]:start[l + 1], l] = o3.wigner_3j(l, l, 0).squeeze(-1).double()
    triples = [(l1, l2, l3) for l1 in range(lmax + 1) for l2 in range(l1, lmax + 1) for l3 in range(l2, lmax + 1)
               if l3 <= l1 + l2 and (l1 + l2 + l3) % 2 == 0] if correlation >= 3 else []
    c3 = torch.zeros(dim, dim, len(triples), dim, dtype=torch.float64)
    for p, (l1, l2, l3) in enumerate(triples):
        c3[start[l1]:start[l1 + 1], start[l2]:start[l2 + 1], p, start[l3]:start[l3 + 1]] = \
            o3.wigner_3j(l1, l2, l3).double()
    return c2.reshape(dim * dim, lmax + 1), c3.reshape(dim * dim, len(triples) * dim), len(triples)


def _vector_coupling(lmax: int):
    """(D², P·3) matrix: A ⊗ A → l = 1 vectors (ν = 2) for pairs of odd l1 + l2 (true vectors)."""
    from e3nn import o3

    dim, start = (lmax + 1) ** 2, [l * l for l in range(lmax + 2)]
    pairs = [(l1, l2) for l1 in range(lmax + 1) for l2 in range(l1, lmax + 1) if (l1 + l2) % 2 == 1
             and abs(l1 - l2) <= 1 <= l1 + l2]
    c = torch.zeros(dim, dim, len(pairs), 3, dtype=torch.float64)
    for p, (l1, l2) in enumerate(pairs):
        c[start[l1]:start[l1 + 1], start[l2]:start[l2 + 1], p] = o3.wigner_3j(l1, l2, 1).double()
    return c.reshape(dim * dim, len(pairs) * 3), len(pairs)


def _message_coupling(lmax: int):
    """(D·3, P·D) matrix: Y_l' ⊗ (vector feature) → A_l, for the parity-allowed paths l' ⊗ 1 → l."""
    from e3nn import o3

    dim, start = (lmax + 1) ** 2, [l * l for l in range(lmax + 2)]
    paths = [(lp, l) for lp in range(lmax + 1) for l in range(lmax + 1) if (lp + 1 + l) % 2 == 0
             and abs(lp - 1) <= l <= lp + 1]
    g = torch.zeros(dim, 3, len(paths), dim, dtype=torch.float64)
    for p, (lp, l) in enumerate(paths):
        g[start[lp]:start[lp + 1], :, p, start[l]:start[l + 1]] = o3.wigner_3j(lp, 1, l).double()
    return g.reshape(dim * 3, len(paths) * dim), len(paths)


def _used_pairs(coupling: torch.Tensor, dim: int):
    """Compress a (D², X) coupling of A ⊗ A to the unordered pairs m1 ≤ m2 it uses.

    Returns the (2, D, P) one-hot selections of A_m1 and A_m2 and the (P, X) coupling with the symmetric
    parts folded together (C[m1, m2] + C[m2, m1] for m1 < m2), so Σ_m1m2 C A_m1 A_m2 is unchanged.
    """
    c = coupling.reshape(dim, dim, -1)
    upper = torch.triu(torch.ones(dim, dim, dtype=torch.bool), diagonal=1)[..., None]
    diagonal = torch.eye(dim, dtype=torch.bool)[..., None]
    folded = torch.where(upper, c + c.transpose(0, 1), torch.where(diagonal, c, torch.zeros_like(c)))
    m1, m2 = torch.nonzero(folded.abs().amax(-1) > 1e-12, as_tuple=True)
    select = torch.zeros(2, dim, len(m1), dtype=c.dtype)
    select[0, m1, torch.arange(len(m1))] = 1.0
    select[1, m2, torch.arange(len(m1))] = 1.0
    return select, folded[m1, m2]


def _neighbour_slots(receivers: torch.Tensor, n_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded neighbour layout of the edges, grouped by receiver.

    Returns ``slots`` (N, M), the edge index in each node's neighbour slots padded with E (an extra all-zero
    row), M = max degree; and ``positions`` (E,), the flat slot (n·M + rank) each edge occupies.
    """
    n_edges = receivers.shape[0]
    counts = torch.bincount(receivers, minlength=n_nodes)
    width = int(counts.max()) if n_edges else 0
    order = torch.argsort(receivers, stable=True)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n_edges, device=receivers.device) - first[receivers[order]]
    slots = torch.full((n_nodes, width), n_edges, dtype=torch.long, device=receivers.device)
    slots[receivers[order], rank] = order
    positions = torch.empty_like(order)
    positions[order] = receivers[order] * width + rank
    return slots, positions


class _PadEdges(torch.autograd.Function):
    """(E, ...) edge rows → (N, M, ...) neighbour layout, zero in the padding slots.

    Each edge fills exactly one slot, so the gradient is a gather back (`_UnpadEdges`) instead of the
    accumulating scatter that autograd uses for indexing, which cost ~10 % of a training step on CPU. The two
    functions are each other's backward, so forces and their parameter gradients (double backward) stay
    gathers too.
    """

    @staticmethod
    def forward(ctx, edge_values, slots, positions):
        ctx.save_for_backward(slots, positions)
        zero = edge_values.new_zeros((1,) + tuple(edge_values.shape[1:]))
        flat = torch.cat([edge_values, zero]).index_select(0, slots.reshape(-1))
        return flat.reshape(tuple(slots.shape) + tuple(edge_values.shape[1:]))

    @staticmethod
    def backward(ctx, grad):
        slots, positions = ctx.saved_tensors
        return _UnpadEdges.apply(grad, slots, positions), None, None


class _UnpadEdges(torch.autograd.Function):
    """(N, M, ...) neighbour layout → (E, ...) edge rows: the adjoint of `_PadEdges` (padding dropped)."""

    @staticmethod
    def forward(ctx, padded, slots, positions):
        ctx.save_for_backward(slots, positions)
        return padded.reshape((-1,) + tuple(padded.shape[2:])).index_select(0, positions)

    @staticmethod
    def backward(ctx, grad):
        slots, positions = ctx.saved_tensors
        return _PadEdges.apply(grad, slots, positions), None, None


def _pad(edge_values: torch.Tensor, layout: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Edge rows gathered into the (N, M, ...) neighbour layout of `_neighbour_slots`; padding rows are zero."""
    slots, positions = layout
    return _PadEdges.apply(edge_values, slots, positions)


@register("mace")
class MACE(FFModel):
    def __init__(self, elements, cutoff: float = 5.0, channels: int = 64, lmax: int = 2, layers: int = 2,
                 correlation: int = 3, n_rbf: int = 8, radial_hidden: int = 64, avg_neighbors: float = 10.0,
                 hidden_lmax: int = 0, energy_scale: float = 1.0, field_input: bool = False):
        super().__init__()
        from e3nn import o3

        if not 1 <= correlation <= 3:
            raise ValueError(f"correlation must be 1, 2 or 3 (body order 2 to 4), got {correlation}")
        if not 0 <= lmax <= 3:
            raise ValueError(f"lmax must be 0..3, got {lmax}")
        if hidden_lmax not in (0, 1) or (hidden_lmax == 1 and lmax < 1):
            raise ValueError(f"hidden_lmax must be 0 (invariant node features) or 1 (with vectors, lmax ≥ 1), "
                             f"got {hidden_lmax}")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), channels=channels,
                           lmax=lmax, layers=layers, correlation=correlation, n_rbf=n_rbf,
                           radial_hidden=radial_hidden, avg_neighbors=float(avg_neighbors),
                           hidden_lmax=int(hidden_lmax), energy_scale=float(energy_scale))
        if field_input:  # only then, so packages without it keep their config as it was
            if lmax == 0 or (correlation == 1 and hidden_lmax == 0):
                raise ValueError("field_input needs l ≥ 1 features that reach the energy (lmax ≥ 1, and correlation "
                                 "≥ 2 or hidden_lmax = 1): the field enters A at l ≥ 1 only")
            self.config["field_input"] = True
        self.field_input = bool(field_input)
        self._init_elements(elements)
        self.cutoff, self.correlation, self.lmax = float(cutoff), int(correlation), int(lmax)
        self.channels, self.avg_neighbors = int(channels), float(avg_neighbors)
        k, n_el = int(channels), len(self.elements)
        self.spherical_harmonics = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(lmax), normalize=True,
                                                         normalization="component")
        self.register_buffer("l_of_m", torch.tensor([l for l in range(lmax + 1) for _ in range(2 * l + 1)]),
                             persistent=False)
        self.register_buffer("l_mask", (self.l_of_m == torch.arange(lmax + 1)[:, None]).float(), persistent=False)
        c2, c3, n3 = _coupling_matrices(lmax, correlation)
        self.n3 = n3
        self.hidden_lmax = int(hidden_lmax)
        dim = (lmax + 1) ** 2
        cv, self.n_vec = _vector_coupling(lmax) if hidden_lmax else (torch.zeros(dim * dim, 0), 0)
        cm, self.n_msg = _message_coupling(lmax) if hidden_lmax else (torch.zeros(0, 0), 0)
        # A ⊗ A enters only through these couplings: keep the (m1 ≤ m2) pairs any of them uses.
        select, coupled = _used_pairs(torch.cat([c2, c3, cv], 1), dim)
        self.register_buffer("pair_select", select.float(), persistent=False)
        self.register_buffer("c2", coupled[:, :c2.shape[1]].float(), persistent=False)
        self.register_buffer("c3", coupled[:, c2.shape[1]:c2.shape[1] + c3.shape[1]].float(), persistent=False)
        self.register_buffer("cv", coupled[:, c2.shape[1] + c3.shape[1]:].float(), persistent=False)
        # The message coupling reordered to (vector component, m') → (path, m), for the padded-neighbour form.
        cm_nodes = cm.reshape(dim, 3, self.n_msg, dim).permute(1, 0, 2, 3) if hidden_lmax else cm
        self.register_buffer("cm", cm_nodes.float(), persistent=False)
        n_inv = 1 + (lmax + 1 if correlation >= 2 else 0) + n3
        self.embedding = nn.Embedding(n_el, k)
        self.rbf = BesselBasis(cutoff, n_rbf)
        self.up = nn.ModuleList(nn.Linear(k, k, bias=False) for _ in range(layers))
        # Radial weights per channel: one per l for scalar inputs, one shared by the coupling paths for vector
        # inputs (vector node features exist from the second layer on).
        n_radial = [k * (lmax + 1 + (1 if t > 0 and self.hidden_lmax else 0)) for t in range(layers)]
        self.radials = nn.ModuleList(
            nn.Sequential(nn.Linear(n_rbf, radial_hidden), nn.SiLU(), nn.Linear(radial_hidden, radial_hidden),
                          nn.SiLU(), nn.Linear(radial_hidden, n_out)) for n_out in n_radial)
        n_vec_layers = layers - 1 if self.hidden_lmax else 0  # the last layer only needs scalars
        self.up_vec = nn.ParameterList(nn.Parameter(torch.randn(k, k) / k**0.5) for _ in range(n_vec_layers))
        # Weight of each coupling path Y_l' ⊗ v → l per channel (the vector messages' radial weight is shared
        # by the paths of a channel: see `_aggregate_vectors`).
        self.path_weights = nn.ParameterList(nn.Parameter(torch.randn(k, self.n_msg) / self.n_msg**0.5)
                                             for _ in range(n_vec_layers))
        self.vec_contraction = nn.ParameterList(nn.Parameter(torch.randn(n_el, k, 1 + self.n_vec) / 2**0.5)
                                                for _ in range(n_vec_layers))
        self.vec_mix = nn.ParameterList(nn.Parameter(torch.randn(k, k) / k**0.5) for _ in range(n_vec_layers))
        # Channel mixing of A within each l (MACE's linear after the aggregation), as one (L+1, K, K) weight.
        self.a_mix = nn.ParameterList(nn.Parameter(torch.randn(lmax + 1, k, k) / k**0.5) for _ in range(layers))
        # Element-dependent weights of each invariant, per channel (MACE's symmetric contraction).
        self.contraction = nn.ParameterList(nn.Parameter(torch.randn(n_el, k, n_inv) / n_inv**0.5)
                                            for _ in range(layers))
        self.mix = nn.ModuleList(nn.Linear(k, k) for _ in range(layers))
        self.skip = nn.ModuleList(nn.Linear(k, k, bias=False) for _ in range(layers))
        self.readouts = nn.ModuleList([nn.Linear(k, 1) for _ in range(layers - 1)] +
                                      [nn.Sequential(nn.Linear(k, 16), nn.SiLU(), nn.Linear(16, 1))])
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))
        if self.field_input:
            # The external field as one more "neighbour" of every atom (issue 33): its solid harmonics
            # |ℰ|^l Y_lm(ℰ̂), l ≥ 1, enter A with a weight per element, channel and l, so the products of the
            # contraction couple the field with the geometry equivariantly. Polynomials in ℰ: smooth at ℰ = 0
            # with the derivatives μ and α need, and exactly zero without a field (the fast paths stay exact).
            # Zero weights at the start: training begins from the field-free model.
            self.solid_harmonics = o3.SphericalHarmonics(o3.Irreps.spherical_harmonics(lmax), normalize=False,
                                                         normalization="component")
            self.field_weights = nn.ParameterList(nn.Parameter(torch.zeros(n_el, k, lmax + 1)) for _ in range(layers))

    @property
    def field_dependent(self) -> bool:
        return self.field_input

    def _field_harmonics(self, batch):
        """The field's solid harmonics at every atom (N, D), l = 0 zeroed; None without a field input or field."""
        field = getattr(batch, "field", None)
        if not self.field_input or field is None:
            return None
        y = self.solid_harmonics(field[batch.graph_index] / FIELD_SCALE)  # l = 0 is the constant 1
        return torch.cat([torch.zeros_like(y[:, :1]), y[:, 1:]], 1)

    def _aggregate(self, x: torch.Tensor, sh_pad: torch.Tensor, layout) -> torch.Tensor:
        """A_i,k,lm = Σ_j x_ij,k,l · Y_lm(r̂_ij) as a batched matrix product over padded neighbour lists.

        The same sum as scattering the (E, K, D) edge tensor x·Y, but that tensor (and its first and second
        derivatives) is never formed: on CPU those elementwise edge products dominated the training step.
        """
        n = sh_pad.shape[0]
        k, l1, d = self.channels, self.lmax + 1, sh_pad.shape[-1]
        xp = _pad(x.reshape(x.shape[0], k * l1), layout)  # (N, M, K·(L+1)); explicit sizes: E or M may be 0
        # One product for all l (cheaper than a product per l slice); keep the blocks where l = l(d).
        full = torch.bmm(xp.transpose(1, 2), sh_pad).reshape(n, k, l1, d)
        return (full * self.l_mask.to(full.dtype)).sum(2)  # (N, K, D)

    def _aggregate_vectors(self, z: torch.Tensor, path_weights: torch.Tensor, sh_pad: torch.Tensor,
                           layout) -> torch.Tensor:
        """A_i,k,lm += Σ_p w_k,p Σ_j (Y_l'(r̂_ij) ⊗ z_j,k → l)_p, the vector messages, with z = R_k(r_ij) · v_j,k.

        Summed over neighbours first (one batched product with Y, as in `_aggregate`) and coupled by the
        Clebsch–Gordan matrices on nodes afterwards: the coupling is linear, so the order does not matter, and
        the node tensors are smaller than the (E, K, P, D) edge tensor by the mean degree. The radial weight
        R_k is one per channel, shared by the P paths, which then get a weight per channel: per-path radial
        weights made the edge tensors P times larger, and their elementwise products and reductions cost ~30 %
        of a training step on CPU.
        """
        n = sh_pad.shape[0]
        k, d = self.channels, sh_pad.shape[-1]
        zp = _pad(z.reshape(z.shape[0], k * 3), layout)  # (N, M, K·3); explicit sizes: E may be 0
        s = torch.bmm(zp.transpose(1, 2), sh_pad).reshape(n, k, 3 * d)  # (N, K, 3·D)
        coupling = torch.einsum("kp,xpd->kxd", path_weights, self.cm.to(s.dtype).reshape(3 * d, self.n_msg, d))
        return torch.einsum("nkx,kxd->nkd", s, coupling)

    def pair_products(self, a: torch.Tensor) -> torch.Tensor:
        """(N, K, D) → (N·K, P) products A_m1 A_m2 of the coupled pairs, selected by matrix products (whose
        derivatives are matrix products too): on CPU far cheaper than the full D × D outer product."""
        flat = a.reshape(-1, a.shape[-1])
        sel = self.pair_select.to(a.dtype)
        return (flat @ sel[0]) * (flat @ sel[1])

    def invariants(self, a: torch.Tensor, aa: torch.Tensor) -> torch.Tensor:
        """(N, K, D) equivariant basis and its pair products → (N, K, n_inv) rotation- and reflection-invariant
        products."""
        n, k, d = a.shape
        out = [a[..., :1]]
        if self.correlation >= 2:
            out.append((aa @ self.c2.to(a.dtype)).reshape(n, k, -1))
            if self.n3:
                t = (aa @ self.c3.to(a.dtype)).reshape(n, k, self.n3, d)
                out.append((t * a.unsqueeze(2)).sum(-1))
        return torch.cat(out, -1)

    def vectors(self, a: torch.Tensor, aa: torch.Tensor) -> torch.Tensor:
        """(N, K, D) equivariant basis and its pair products → (N, K, 1 + P, 3) true l = 1 vectors: A_1 and the
        ν = 2 couplings."""
        n, k, d = a.shape
        pairs = (aa @ self.cv.to(a.dtype)).reshape(n, k, self.n_vec, 3)
        return torch.cat([a[:, :, None, 1:4], pairs], 2)

    def _layout(self, i: torch.Tensor, n: int, sh: torch.Tensor):
        layout = _neighbour_slots(i, n)
        return layout, _pad(sh, layout)  # (N, M, D)

    def _edge_sum(self, t: int, i, n: int, j, radial_in, fcut, sh, uh, vu, pre=None) -> torch.Tensor:
        """Layer t's basis A (n, K, D) on the ``n`` receivers ``i`` (0..n-1) of these edges, from the node
        features ``uh`` = up(h) and (from the second layer on) the vector features ``vu``; ``pre``: their padded
        layout and harmonics, when already built for the whole graph."""
        layout, sh_pad = pre if pre is not None else self._layout(i, n, sh)
        k, l1 = self.channels, self.lmax + 1
        # The cutoff multiplies the radial weights themselves, so an edge entering the cutoff sphere
        # contributes nothing whatever the MLP's biases.
        rw = self.radials[t](radial_in) * fcut
        x = rw[:, :k * l1].reshape(-1, k, l1) * uh[j].unsqueeze(-1)  # (E, K, L+1)
        a = self._aggregate(x, sh_pad, layout)
        if vu is not None:  # Y_l' ⊗ v_j → l, weighted per path and channel
            rw1 = rw[:, k * l1:].unsqueeze(-1)  # (E, K, 1)
            a = a + self._aggregate_vectors(rw1 * vu[j], self.path_weights[t - 1], sh_pad, layout)
        return a

    def forward(self, batch) -> torch.Tensor:
        n, k = batch.numbers.shape[0], self.channels
        i, j, vec, blocks = local_edges(self, batch)
        r = torch.linalg.norm(vec, dim=-1)
        sh = self.spherical_harmonics(vec)  # (E, D)
        fcut = cosine_cutoff(r, self.cutoff).unsqueeze(-1)
        radial_in = self.rbf(r) * fcut
        species = self.species(batch.numbers)
        # The padded neighbour layout once for all layers, unless large graphs are done block by block
        # in bounded memory (chunking.py): then each block builds its own.
        pre = self._layout(i, n, sh) if blocks is None else None
        h = self.embedding(species)
        v = None  # (N, K, 3) vector node features, from the second layer on
        field_y = self._field_harmonics(batch)
        energy = h.new_zeros(n)
        for t, (up, a_mix, weights, mix, skip, readout) in enumerate(zip(
                self.up, self.a_mix, self.contraction, self.mix, self.skip, self.readouts)):
            uh = up(h)
            vu = None if v is None else torch.einsum("nkm,kq->nqm", v, self.up_vec[t - 1])  # (N, K, 3)
            (a,) = edge_sum(blocks, lambda *args, t=t: self._edge_sum(t, *args, pre=pre), i, n,
                            (j, radial_in, fcut, sh), (uh, vu))
            a = a / self.avg_neighbors
            if field_y is not None:  # layer t's weights on the field's harmonics (computed once for all layers)
                a = a + (self.field_weights[t][species][:, :, self.l_of_m] * field_y.unsqueeze(1)).to(a.dtype)
            a = torch.einsum("nkd,dkq->nqd", a, a_mix[self.l_of_m])
            aa = self.pair_products(a)
            b = (self.invariants(a, aa) * weights[species]).sum(-1)  # (N, K)
            if t < len(self.vec_mix):
                bv = (self.vectors(a, aa) * self.vec_contraction[t][species].unsqueeze(-1)).sum(2)  # (N, K, 3)
                bv = torch.einsum("nkm,kq->nqm", bv, self.vec_mix[t])
                v = bv if v is None else bv + v
            h = mix(b) + skip(h)
            energy = energy + readout(h).squeeze(-1)
        return energy * self.energy_scale
