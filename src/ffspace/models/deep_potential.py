"""Deep Potential, smooth edition with a two-body embedding (DeePMD-kit's ``se_e2_a``; Zhang et al., NeurIPS 2018),
and its compression (Lu et al., JCTC 2022: what ``dp compress`` does).

For atom i with neighbours j inside the cutoff:

    s(r)   = 1/r · sw(r)          sw: 1 below ``cutoff_smooth``, then u³(−6u² + 15u − 10) + 1 to 0 at the cutoff
    R̃_ij   = s(r_ij) · (1, x/r, y/r, z/r)                              (the smooth environment row, 4 numbers)
    G_ij   = N_e(s(r_ij))                                              (embedding net of j's element, M1 outputs)
    T_i    = (1/n̄) Σ_j G_ijᵀ R̃_ij                                       (M1 × 4: rotation-covariant)
    D_i    = T_i T_i[:M2]ᵀ                                              (M1 × M2: invariant)
    E_i    = scale · N_f(D_i)                                          (fitting net of i's element)

Compression replaces each embedding net, a function of the one number s, by a table: on a grid of step
``table_step`` over [0, ``table_s_max``] the net's value and first two derivatives at every node define a quintic
polynomial per interval (continuous to the second derivative), so inference evaluates no embedding net. The table
is rebuilt from the weights whenever they change (it is never stored: a package holds the weights and
``compressed: true``); a compressed model cannot be trained (its tables carry no gradient to the nets). s beyond
``table_s_max`` (atoms closer than 1/table_s_max Å) uses the last interval's polynomial.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .base import FFModel, register
from .chunking import local_edges


def smooth_inverse(r: torch.Tensor, cutoff: float, cutoff_smooth: float) -> torch.Tensor:
    """s(r) = sw(r)/r, zero at and beyond the cutoff, with continuous first and second derivatives."""
    u = ((r - cutoff_smooth) / (cutoff - cutoff_smooth)).clamp(0.0, 1.0)
    sw = u**3 * (-6.0 * u**2 + 15.0 * u - 10.0) + 1.0
    return torch.where(r < cutoff, sw / r, torch.zeros_like(r))


def _mlp(widths, final_activation: bool) -> nn.Sequential:
    layers = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or k < len(widths) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


@register("deep_potential")
class DeepPotential(FFModel):
    def __init__(self, elements, cutoff: float = 6.0, cutoff_smooth: float = 0.5, embedding=(16, 32),
                 axis: int = 8, fitting=(64, 64), avg_neighbors: float = 10.0, energy_scale: float = 1.0,
                 compressed: bool = False, table_step: float = 0.005, table_s_max: float = 2.0):
        super().__init__()
        embedding, fitting = [int(h) for h in embedding], [int(h) for h in fitting]
        if not 0 < cutoff_smooth < cutoff:
            raise ValueError(f"cutoff_smooth must lie between 0 and the cutoff ({cutoff} Å), got {cutoff_smooth}")
        if not embedding or not fitting or min(embedding + fitting) < 1:
            raise ValueError(f"embedding and fitting must be lists of layer widths ≥ 1, got {embedding}, {fitting}")
        if not 1 <= axis <= embedding[-1]:
            raise ValueError(f"axis must be 1..{embedding[-1]} (the embedding's last width), got {axis}")
        if not (table_step > 0 and table_s_max > 10 * table_step):
            raise ValueError(f"table_step must be > 0 and well below table_s_max, got {table_step}, {table_s_max}")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff),
                           cutoff_smooth=float(cutoff_smooth), embedding=embedding, axis=int(axis), fitting=fitting,
                           avg_neighbors=float(avg_neighbors), energy_scale=float(energy_scale),
                           compressed=bool(compressed), table_step=float(table_step), table_s_max=float(table_s_max))
        self._init_elements(elements)
        self.cutoff, self.cutoff_smooth = float(cutoff), float(cutoff_smooth)
        self.axis, self.avg_neighbors = int(axis), float(avg_neighbors)
        self.compressed = bool(compressed)
        self.table_step, self.table_s_max = float(table_step), float(table_s_max)
        n_el, m1 = len(self.elements), embedding[-1]
        self.embedding = nn.ModuleList(_mlp([1] + embedding, final_activation=True) for _ in range(n_el))
        self.fitting = nn.ModuleList(_mlp([m1 * self.axis] + fitting + [1], final_activation=False)
                                     for _ in range(n_el))
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))
        self._table = None  # (key, coefficients (elements, intervals, 6, M1))

    # -- the embedding: its nets, or their tables ------------------------------------------------------------
    def _net_embedding(self, s: torch.Tensor, species_j: torch.Tensor) -> torch.Tensor:
        out = s.new_zeros(s.shape[0], self.config["embedding"][-1])
        for k, net in enumerate(self.embedding):
            mask = species_j == k
            if mask.any():
                out = out.index_put((mask,), net(s[mask][:, None]))
        return out

    def _table_key(self):
        return tuple((p._version, p.data_ptr(), p.dtype, p.device) for p in self.embedding.parameters())

    def tables(self) -> torch.Tensor:
        """(elements, intervals, 6, M1) quintic coefficients of every embedding net on [0, table_s_max], rebuilt
        when the nets' weights change: on each interval [x_k, x_k + h], G(x_k + t) = Σ_p c_p t^p matches the net's
        value, slope and curvature at both ends."""
        key = self._table_key()
        if self._table is not None and self._table[0] == key:
            return self._table[1]
        h = self.table_step
        n = int(round(self.table_s_max / h))
        ref = next(self.embedding.parameters())
        # in float64 whatever the model's dtype: the quintic's coefficients divide by h⁵, which float32 would not survive
        x = torch.arange(n + 1, dtype=torch.float64, device=ref.device) * h
        coeffs = []
        for net in self.embedding:
            net = copy.deepcopy(net).double()
            with torch.enable_grad():
                xs = x.detach().clone().requires_grad_(True)
                g = net(xs[:, None])  # (n + 1, M1)
                d1 = torch.stack([torch.autograd.grad(g[:, c].sum(), xs, create_graph=True)[0]
                                  for c in range(g.shape[1])], 1)
                d2 = torch.stack([torch.autograd.grad(d1[:, c].sum(), xs, retain_graph=True)[0]
                                  for c in range(g.shape[1])], 1)
            g, d1, d2 = g.detach(), d1.detach(), d2.detach()
            y0, y1, v0, v1, a0, a1 = g[:-1], g[1:], d1[:-1], d1[1:], d2[:-1], d2[1:]
            # quintic Hermite: c0..c2 from the left end, c3..c5 solve the right end's value, slope and curvature
            dy = y1 - y0 - v0 * h - 0.5 * a0 * h * h
            dv = v1 - v0 - a0 * h
            da = a1 - a0
            c3 = (10.0 * dy - 4.0 * dv * h + 0.5 * da * h * h) / h**3
            c4 = (-15.0 * dy + 7.0 * dv * h - da * h * h) / h**4
            c5 = (6.0 * dy - 3.0 * dv * h + 0.5 * da * h * h) / h**5
            coeffs.append(torch.stack([y0, v0, 0.5 * a0, c3, c4, c5], 1))  # (n, 6, M1)
        table = torch.stack(coeffs, 0).to(ref.dtype)
        self._table = (key, table)
        return table

    def _table_embedding(self, s: torch.Tensor, species_j: torch.Tensor) -> torch.Tensor:
        table = self.tables()
        n = table.shape[1]
        k = torch.clamp((s.detach() / self.table_step).floor().long(), 0, n - 1)
        t = (s - k.to(s.dtype) * self.table_step)[:, None]
        c = table[species_j, k]  # (E, 6, M1)
        return c[:, 0] + t * (c[:, 1] + t * (c[:, 2] + t * (c[:, 3] + t * (c[:, 4] + t * c[:, 5]))))

    def forward(self, batch) -> torch.Tensor:
        if self.compressed and self.training:
            raise RuntimeError("a compressed Deep Potential cannot be trained (its embedding tables carry no gradient "
                               "to the nets): train with compressed=false, then compress the package")
        i, j, vec, _ = local_edges(self, batch)
        n = batch.numbers.shape[0]
        species = self.species(batch.numbers)
        r = torch.linalg.norm(vec, dim=-1)
        s = smooth_inverse(r, self.cutoff, self.cutoff_smooth)
        env = torch.cat([s[:, None], s[:, None] * vec / r[:, None]], 1)  # (E, 4)
        g = (self._table_embedding if self.compressed else self._net_embedding)(s, species[j])  # (E, M1)
        t = vec.new_zeros(n, g.shape[1], 4).index_add(0, i, g[:, :, None] * env[:, None, :]) / self.avg_neighbors
        d = torch.einsum("nac,nbc->nab", t, t[:, :self.axis]).reshape(n, -1)  # (N, M1·M2)
        energies = d.new_zeros(n)
        for k, net in enumerate(self.fitting):
            mask = species == k
            if mask.any():
                energies = energies.index_put((mask,), net(d[mask]).squeeze(-1))
        return energies * self.energy_scale.to(energies.dtype)


def compress(model, table_step: float | None = None):
    """``model`` (a `DeepPotential` or a `Sum` holding some) with every Deep Potential term compressed, in place;
    returns how many terms it changed."""
    terms = list(getattr(model, "terms", [model]))
    changed = 0
    for term in terms:
        if isinstance(term, DeepPotential):
            term.compressed = True
            term.config["compressed"] = True
            if table_step is not None:
                if not 0 < table_step < term.table_s_max / 10:
                    raise ValueError(f"table_step must be > 0 and well below table_s_max ({term.table_s_max}), "
                                     f"got {table_step}")
                term.table_step = term.config["table_step"] = float(table_step)
            term._table = None
            changed += 1
    return changed


def compress_package(src, dst, table_step: float | None = None):
    """Write the package ``src`` with its Deep Potential terms compressed to ``dst`` (the same weights; the tables
    are rebuilt from them when the package is loaded). Returns ``dst``."""
    from ..errors import ConfigError
    from ..potential.package import load_package, save_package

    model, meta = load_package(src)
    if not compress(model, table_step):
        raise ConfigError(f"model package {src}: no Deep Potential term to compress (family "
                          f"{meta['model'].get('family')!r})")
    return save_package(dst, model, extra={**(meta.get("extra") or {}), "compressed_from": str(src)})
