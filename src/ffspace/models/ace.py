"""Linear ACE: body-ordered symmetric polynomials of the neighbour density, linear in their weights
(Drautz, PRB 2019; Kovács et al., JCTC 2021). Fitted by regularised linear least squares
(`ffspace.train.least_squares`), not by gradient descent.

The atomic basis is MACE's "A" basis with fixed radial functions, one channel k = (neighbour element, n):

    A_i,k,lm = (1/n̄) Σ_{j of element e} R_n(r_ij) Y_lm(r̂_ij)          R_n = sin((n+1)π r/rc)/r · fcut(r)

and the invariants of atom i are its products, coupled to scalars with e3nn's Clebsch–Gordan coefficients:

    ν = 1 (2-body):  A_k,00
    ν = 2 (3-body):  Σ_m A_k1,lm A_k2,lm                        k1 ≤ k2, n1 + n2 + 2l ≤ degree
    ν = 3 (4-body):  Σ C^{l1l2l3}_{m1m2m3} A'_k1,l1m1 A'_k2,l2m2 A'_k3,l3m3
                     n1 + n2 + n3 + l1 + l2 + l3 ≤ degree_3

(A' is the same basis on the first ``n_rbf_3`` radial functions, inside ``cutoff_3``, by default the cutoff: on
rMD17 aspirin a 3.8 Å four-body cutoff fitted worse than 5 Å, 49.0 against 47.0 meV/Å with 300 training frames).
Products are kept once per unordered set of (k, l) (the others repeat them) and only for even l1 + l2 + l3 (true
scalars). The energy of atom i is

    E_i = scale · Σ_f w_{z_i, f} B_i,f        (with a constant B_i,0 = 1: a per-element offset)

The defaults (8 radial functions, l ≤ 3 and degree 10 for ν ≤ 2; for ν = 3 5 radial functions, l ≤ 3 and degree 8:
11 427 weights for H, C and O) are the basis chosen on rMD17 aspirin's validation frames among the sub-bases of one
set of normal equations (benchmarks/ace_basis_search.py, docs/benchmarks.md); the fit's smoothness prior
``ridge_power`` = 2 was chosen there too.

Energy and forces are linear in the weights ``w`` (elements × features), which is what makes a least-squares fit
possible: forces are −Σ_i w · ∂B_i/∂r, and the fit builds ∂B/∂r by forward-mode differentiation.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from .base import FFModel, register
from .chunking import local_edges


def _monomials(u: torch.Tensor, count: int) -> torch.Tensor:
    """(E, count) products of the unit vectors' components: 1, u_a, u_a u_b, u_a u_b u_c, ... (with repeats)."""
    parts, last = [torch.ones_like(u[:, :1])], torch.ones_like(u[:, :1])
    while sum(p.shape[1] for p in parts) < count:
        last = (last[:, :, None] * u[:, None, :]).reshape(u.shape[0], 3 * last.shape[1])  # E may be 0
        parts.append(last)
    return torch.cat(parts, 1)


def bessel_radial(r: torch.Tensor, cutoff: float, freqs: torch.Tensor, derivative: bool = False):
    """R_n(r) = sin(f_n r)/r · fcut(r) (E, n), zero beyond the cutoff; with ``derivative``, also dR_n/dr (for the
    hand-derived forces of ffspace.potential.analytic)."""
    inside = r < cutoff
    r = torch.where(inside, r, torch.full_like(r, cutoff))[:, None]
    freqs = freqs.to(r.dtype)
    sin = torch.sin(freqs * r)
    arg = math.pi * r / cutoff
    fcut = 0.5 * (torch.cos(arg) + 1.0)
    mask = inside[:, None].to(r.dtype)
    radial = sin / r * fcut * mask
    if not derivative:
        return radial
    dfcut = -0.5 * math.pi / cutoff * torch.sin(arg)
    dradial = ((freqs * torch.cos(freqs * r) / r - sin / (r * r)) * fcut + sin / r * dfcut) * mask
    return radial, dradial


@functools.lru_cache(maxsize=None)
def homogeneous_harmonics(lmax: int):
    """e3nn's real spherical harmonics (component normalisation) as sparse polynomials: Y_lm is a homogeneous
    polynomial of degree l in the unit vector's components (unique within that degree), fitted exactly on the degree-l
    monomials x^a y^b z^c (a + b + c = l). Returns the exponents (M, 3), in order of degree, and the nonzero terms
    (monomial, lm, coefficient). The model (`_monomial_harmonics`) and the C kernel (ffspace.potential.native) both
    use these coefficients, so they evaluate the same polynomial: a fitted model whose weights cancel to 1e-4 of
    their size amplifies any difference in Y (1e-12 from a pseudo-inverse) into 1e-6 eV/Å."""
    from e3nn import o3

    exps = [(a, b, deg - a - b) for deg in range(lmax + 1) for a in range(deg, -1, -1) for b in range(deg - a, -1, -1)]
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    mono = torch.stack([u[:, 0] ** a * u[:, 1] ** b * u[:, 2] ** c for a, b, c in exps], 1)
    y = o3.spherical_harmonics(list(range(lmax + 1)), u, normalize=True, normalization="component")
    terms = []
    for l in range(lmax + 1):
        cols = [q for q, e in enumerate(exps) if sum(e) == l]
        coef = torch.tensor(_solve_normal_equations(mono[:, cols].tolist(), y[:, l * l:(l + 1) ** 2].tolist()),
                            dtype=torch.float64)  # (monomials, 2l + 1)
        error = (mono[:, cols] @ coef - y[:, l * l:(l + 1) ** 2]).abs().max()
        assert error < 1e-11, f"Y_{l} is not fitted by degree-{l} monomials (error {float(error):.2g})"
        for a, q in enumerate(cols):
            for m in range(2 * l + 1):
                if abs(float(coef[a, m])) > 1e-14:
                    terms.append((q, l * l + m, float(coef[a, m])))
    return tuple(exps), tuple(terms)


def _solve_normal_equations(a: list, b: list) -> list:
    """min ‖a x − b‖ for small dense lists (rows × n, rows × k) in plain Python floats, by Gaussian elimination on
    the normal equations: the same bits on every call (a threaded LAPACK solve varies in the last bits,
    and a least-squares fit with cancelling weights turns 1e-15 into 1e-7 of its solution)."""
    n, k = len(a[0]), len(b[0])
    m = [[sum(r[i] * r[j] for r in a) for j in range(n)] + [sum(r[i] * rb[c] for r, rb in zip(a, b)) for c in range(k)]
         for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col])]
    return [[m[i][n + c] / m[i][i] for c in range(k)] for i in range(n)]


def _monomial_harmonics(lmax: int) -> torch.Tensor:
    """e3nn's real spherical harmonics to ``lmax`` (component normalisation) as a matrix on `_monomials` (which
    repeat: x·y and y·x): each unique monomial's coefficient sits on its sorted tuple. e3nn's module runs ~40
    elementwise operations (and their derivatives) for lmax = 3: 0.8 ms of a 3-4 ms aspirin call."""
    exps, terms = homogeneous_harmonics(lmax)
    count = sum(3**d for d in range(lmax + 1))
    matrix = torch.zeros(count, (lmax + 1) ** 2, dtype=torch.float64)
    for q, lm, coef in terms:
        a, b, c = exps[q]
        degree = a + b + c
        flat = 0
        for k in (0,) * a + (1,) * b + (2,) * c:  # the tuple's index among the 3^degree ordered ones
            flat = 3 * flat + k
        matrix[sum(3**d for d in range(degree)) + flat, lm] += coef
    return matrix


def _monomial_derivatives(count: int) -> torch.Tensor:
    """(3, count, count) D_k with ∂(monomial s)/∂u_k = Σ_q D_k[q, s] · monomial q (`_monomials`' order: degree d
    holds the 3^d ordered tuples, the last factor fastest)."""
    index, degree, offset = {(): 0}, 1, 1
    while offset < count:
        for flat in range(3 ** degree):
            index[tuple((flat // 3 ** (degree - 1 - t)) % 3 for t in range(degree))] = offset + flat
        offset, degree = offset + 3 ** degree, degree + 1
    d = torch.zeros(3, count, count, dtype=torch.float64)
    for factors, s in index.items():
        for t, k in enumerate(factors):
            d[k, index[factors[:t] + factors[t + 1:]], s] += 1.0
    return d


def _couplings(lmax: int):
    """The (l1 ≤ l2 ≤ l3) triples with a true-scalar coupling (triangle rule, even sum)."""
    return [(l1, l2, l3) for l1 in range(lmax + 1) for l2 in range(l1, lmax + 1) for l3 in range(l2, lmax + 1)
            if l3 <= l1 + l2 and (l1 + l2 + l3) % 2 == 0]


@register("ace")
class LinearACE(FFModel):
    linear = True  # trained by `ffspace.train.least_squares`, not SGD

    def __init__(self, elements, cutoff: float = 5.0, n_rbf: int = 8, lmax: int = 3, degree: int = 10,
                 correlation: int = 3, cutoff_3: float | None = None, n_rbf_3: int = 5, lmax_3: int = 3,
                 degree_3: int = 8,
                 avg_neighbors: float = 10.0, energy_scale: float = 1.0,
                 ridge=(1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5), ridge_power: float = 2.0,
                 fit_force_atoms: int | None = None):
        """``ridge``, ``ridge_power`` and ``fit_force_atoms`` are settings of the least-squares fit
        (`ffspace.train.least_squares`): the relative ridge strengths tried (the one with the lowest validation loss
        is kept), how much more a feature of higher polynomial degree is penalised (λ·(1 + degree)^power, a
        smoothness prior; 0 = a plain ridge) and, for large periodic frames, the number of atoms per structure whose
        forces enter the fit (drawn at random, seeded; None = all: a frame's design rows cost ~N², N force rows of
        ~N each)."""
        super().__init__()
        from e3nn import o3

        if not 1 <= correlation <= 3:
            raise ValueError(f"correlation must be 1, 2 or 3 (body order 2 to 4), got {correlation}")
        if not 0 <= lmax <= 4 or not 0 <= lmax_3 <= 3:
            raise ValueError(f"lmax must be 0..4 and lmax_3 0..3, got {lmax} and {lmax_3}")
        cutoff_3 = float(cutoff if cutoff_3 is None else cutoff_3)
        ridge = [float(x) for x in ridge]
        if not ridge or not all(math.isfinite(x) and x > 0 for x in ridge):
            raise ValueError(f"ridge must be a list of strengths > 0, got {ridge}")
        if not (math.isfinite(float(ridge_power)) and float(ridge_power) >= 0):
            raise ValueError(f"ridge_power must be a number ≥ 0, got {ridge_power!r}")
        if fit_force_atoms is not None and (isinstance(fit_force_atoms, bool) or not isinstance(fit_force_atoms, int)
                                            or fit_force_atoms < 1):
            raise ValueError(f"fit_force_atoms must be a whole number ≥ 1 or None, got {fit_force_atoms!r}")
        if cutoff_3 > cutoff:
            raise ValueError(f"cutoff_3 ({cutoff_3} Å) must not exceed cutoff ({cutoff} Å)")
        self.config = dict(elements=sorted(int(z) for z in elements), cutoff=float(cutoff), n_rbf=n_rbf, lmax=lmax,
                           degree=degree, correlation=correlation, cutoff_3=float(cutoff_3), n_rbf_3=n_rbf_3,
                           lmax_3=lmax_3, degree_3=degree_3, avg_neighbors=float(avg_neighbors),
                           energy_scale=float(energy_scale), ridge=ridge, ridge_power=float(ridge_power),
                           fit_force_atoms=fit_force_atoms)
        self._init_elements(elements)
        self.cutoff, self.cutoff_3 = float(cutoff), float(cutoff_3)
        self.correlation, self.avg_neighbors = int(correlation), float(avg_neighbors)
        n_el = len(self.elements)
        self.n_rbf, self.n_rbf_3 = int(n_rbf), int(n_rbf_3)
        self.lmax = int(lmax) if correlation >= 2 else 0
        self.lmax_3 = int(lmax_3) if correlation >= 3 else 0
        # A' is a slice of A when both share the cutoff (then A carries the larger lmax)
        self.lmax_a = max(self.lmax, self.lmax_3) if float(cutoff_3) == float(cutoff) else self.lmax
        harmonics = _monomial_harmonics(max(self.lmax_a, self.lmax_3))
        self.register_buffer("harmonics", harmonics, persistent=False)
        # ∂Y/∂u_k on the same monomials (for the hand-derived forces of ffspace.potential.analytic)
        self.register_buffer("harmonics_grad", _monomial_derivatives(harmonics.shape[0]) @ harmonics,
                             persistent=False)
        k2, k3 = n_el * self.n_rbf, n_el * self.n_rbf_3
        self.k2, self.k3 = k2, k3
        n_of = [k % self.n_rbf for k in range(k2)]
        # ν = 2: (k1 ≤ k2, l) within the degree, as index buffers per l
        self.pairs = []
        for l in range(self.lmax + 1 if correlation >= 2 else 0):
            idx = [(a, b) for a in range(k2) for b in range(a, k2) if n_of[a] + n_of[b] + 2 * l <= degree]
            t = torch.tensor(idx, dtype=torch.long).reshape(-1, 2).T.contiguous()
            self.register_buffer(f"pairs_{l}", t, persistent=False)
            self.pairs.append(t.shape[1])
        # ν = 3: per coupling p = (l1, l2, l3), the channel triples kept (sorted where the l's repeat). All couplings
        # share one sparse Clebsch–Gordan table: its nonzero entries C^p_{m1 m2 m3} as (m1, m2) pairs and a
        # (nonzeros, slots) matrix onto the slots (p, m3), m3 in l3's block, so one matrix product couples every
        # A'_l1 ⊗ A'_l2 (a dense (D3², P·D3) coupling cost 4x the arithmetic, mostly on zeros).
        n3_of = [k % self.n_rbf_3 for k in range(k3)]
        self.couplings = _couplings(self.lmax_3) if correlation >= 3 else []
        entries, slot_m, slot_p, triples = [], [], [], []
        for p, (l1, l2, l3) in enumerate(self.couplings):
            w3j = o3.wigner_3j(l1, l2, l3).to(torch.float64)
            for m3 in range(2 * l3 + 1):
                for m1, m2 in zip(*torch.nonzero(w3j[:, :, m3].abs() > 1e-12, as_tuple=True)):
                    entries.append((l1 * l1 + int(m1), l2 * l2 + int(m2), len(slot_m), float(w3j[m1, m2, m3])))
                slot_m.append(l3 * l3 + m3)
                slot_p.append(p)
            triples += [(p, a, b, c) for a in range(k3) for b in range(k3) for c in range(k3)
                        if not (l1 == l2 and b < a) and not (l2 == l3 and c < b)
                        and n3_of[a] + n3_of[b] + n3_of[c] + l1 + l2 + l3 <= degree_3]
        coupling = torch.zeros(len(entries), len(slot_m), dtype=torch.float64)
        for k, (_, _, slot, value) in enumerate(entries):
            coupling[k, slot] = value
        self.register_buffer("cg_m1", torch.tensor([e[0] for e in entries], dtype=torch.long), persistent=False)
        self.register_buffer("cg_m2", torch.tensor([e[1] for e in entries], dtype=torch.long), persistent=False)
        self.register_buffer("cg", coupling, persistent=False)
        self.register_buffer("slot_m", torch.tensor(slot_m, dtype=torch.long), persistent=False)
        self.register_buffer("slot_p", torch.tensor(slot_p, dtype=torch.long), persistent=False)
        self.register_buffer("triples", torch.tensor(triples, dtype=torch.long).reshape(-1, 4).T.contiguous(),
                             persistent=False)
        # The kept triples as flat indices into U (N, K3·K3·slots) and A'-by-slot (N, K3·slots), one per m3 of
        # their l3 (padded to 2·lmax_3 + 1 with a zero mask): the sparse form of potential.analytic.
        n_slots, width = len(slot_m), 2 * self.lmax_3 + 1
        first_slot = [slot_p.index(p) if p in slot_p else 0 for p in range(len(self.couplings))]
        u_index = torch.zeros(len(triples), width, dtype=torch.long)
        x_index = torch.zeros(len(triples), width, dtype=torch.long)
        mask = torch.zeros(len(triples), width, dtype=torch.float64)
        for t, (p, a, b, c) in enumerate(triples):
            for q in range(2 * self.couplings[p][2] + 1):
                u_index[t, q] = (a * k3 + b) * n_slots + first_slot[p] + q
                x_index[t, q] = c * n_slots + first_slot[p] + q
                mask[t, q] = 1.0
        self.register_buffer("triple_u_index", u_index, persistent=False)
        self.register_buffer("triple_x_index", x_index, persistent=False)
        self.register_buffer("triple_mask", mask, persistent=False)
        self.register_buffer("cg_slot", torch.tensor([e[2] for e in entries], dtype=torch.long), persistent=False)
        self.register_buffer("cg_value", torch.tensor([e[3] for e in entries], dtype=torch.float64),
                             persistent=False)
        d3 = (self.lmax_3 + 1) ** 2
        for name, index in (("slot_onehot", slot_m), ("m1_onehot", [e[0] for e in entries]),
                            ("m2_onehot", [e[1] for e in entries])):  # scatters as products (potential.analytic)
            self.register_buffer(name, torch.nn.functional.one_hot(torch.tensor(index, dtype=torch.long), d3)
                                 .to(torch.float64).reshape(len(index), d3), persistent=False)
        for p, (l1, l2, l3) in enumerate(self.couplings):  # per coupling, for `features`
            self.register_buffer(f"cg_{p}", o3.wigner_3j(l1, l2, l3).to(torch.float64), persistent=False)
        self.n_triples = len(triples)
        self.n_features = 1 + k2 + sum(self.pairs) + self.n_triples
        self.register_buffer("freqs", (torch.arange(1, self.n_rbf + 1, dtype=torch.float64) * math.pi / cutoff),
                             persistent=False)
        self.register_buffer("freqs_3", (torch.arange(1, self.n_rbf_3 + 1, dtype=torch.float64) * math.pi
                                         / cutoff_3), persistent=False)
        self.weights = nn.Parameter(torch.zeros(n_el, self.n_features))
        # The constant tables, exact (float64, CPU): `_apply` rebuilds the buffers from them, so a model that went
        # through float32 and back evaluates exact constants again (and agrees with ffspace.potential.native's kernel)
        self._exact = {name: b.clone() for name, b in self.named_buffers() if b.is_floating_point()}
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale), dtype=torch.float64))

    def feature_degrees(self) -> torch.Tensor:
        """(n_features,) each feature's total polynomial degree, Σ n + Σ l of its factors (radial index n from 0):
        what the fit's smoothness prior (``ridge_power``) penalises."""
        n2 = [k % self.n_rbf for k in range(self.k2)]
        n3 = [k % self.n_rbf_3 for k in range(self.k3)]
        degrees = [0] + n2
        for l in range(len(self.pairs)):
            a, b = getattr(self, f"pairs_{l}").tolist()
            degrees += [n2[x] + n2[y] + 2 * l for x, y in zip(a, b)]
        if self.n_triples:
            p_of, ka, kb, kc = self.triples.tolist()
            for p, ls in enumerate(self.couplings):  # features() orders the triples coupling by coupling
                degrees += [n3[a] + n3[b] + n3[c] + sum(ls) for q, a, b, c in zip(p_of, ka, kb, kc) if q == p]
        return torch.tensor(degrees, dtype=torch.float64)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for name, exact in self._exact.items():
            current = getattr(self, name)
            self._buffers[name] = exact.to(device=current.device, dtype=current.dtype)
        return out

    def _density(self, i, j, species, n: int, radial, sh) -> torch.Tensor:
        """(n, elements·n_rbf, D) atomic basis A: Σ_j R_n(r_ij) Y_lm(r̂_ij), one channel per neighbour element and
        radial function, from the edges' radial functions (E, n_rbf) and harmonics (E, D)."""
        x = radial[:, :, None] * sh[:, None, :]  # (E, n_rbf, D)
        n_el = len(self.elements)
        a = x.new_zeros((n * n_el, radial.shape[1], sh.shape[1])).index_add(0, i * n_el + species[j], x)
        return a.reshape(n, n_el * radial.shape[1], sh.shape[1]) / self.avg_neighbors

    @property
    def shares_basis(self) -> bool:
        """Whether A' is a slice of A (same cutoff, no more radial functions): then it is not built separately."""
        return self.cutoff_3 == self.cutoff and self.n_rbf_3 <= self.n_rbf

    def four_body_slice(self, a: torch.Tensor) -> torch.Tensor:
        """A' as a view of A when `shares_basis`: the first n_rbf_3 radial channels of each element, to lmax_3."""
        n = a.shape[0]
        d3 = (self.lmax_3 + 1) ** 2
        return a.reshape(n, len(self.elements), self.n_rbf, -1)[:, :, :self.n_rbf_3, :d3].reshape(n, -1, d3)

    def _bases(self, batch):
        """The atomic bases A (N, K, (lmax+1)²) and A' (N, K3, (lmax_3+1)², or None) and the atoms' species."""
        n = batch.numbers.shape[0]
        i, j, vec, _ = local_edges(self, batch)
        r = torch.linalg.norm(vec, dim=-1)
        sh = _monomials(vec / r[:, None], self.harmonics.shape[0]) @ self.harmonics.to(vec.dtype)
        species = self.species(batch.numbers)
        a = self._density(i, j, species, n, bessel_radial(r, self.cutoff, self.freqs), sh[:, :(self.lmax_a + 1) ** 2])
        a3 = None
        if self.couplings:
            a3 = self.four_body_slice(a) if self.shares_basis else self._density(
                i, j, species, n, bessel_radial(r, self.cutoff_3, self.freqs_3), sh[:, :(self.lmax_3 + 1) ** 2])
        return a, a3, species

    def _triple_products(self, a3):
        """U_n,a,b,(p,m3) = Σ C^p_{m1 m2 m3} A'_a,m1 A'_b,m2 for every coupling p and m3 of its l3: (N, K3, K3, slots),
        and the third factor A'_c,m3 at each slot: (N, K3, slots)."""
        n, k3, _ = a3.shape
        g1, g2 = a3[:, :, self.cg_m1], a3[:, :, self.cg_m2]  # (N, K3, nonzeros)
        outer = (g1[:, :, None, :] * g2[:, None, :, :]).reshape(n * k3 * k3, -1)
        return (outer @ self.cg.to(a3.dtype)).reshape(n, k3, k3, -1), a3[:, :, self.slot_m]

    def features(self, batch) -> torch.Tensor:
        """(N, n_features) basis B of every atom (the first column is the constant 1). Used by the fit, under
        forward-mode differentiation with one tangent per coordinate, so it forms the full products of each
        coupling, (N, K, K) and (N, K3, K3, K3), and gathers the kept ones: gathering per feature first made the
        tangent tensors ~10x larger (0.7 s per aspirin frame instead of ~0.1 s)."""
        a, a3, _ = self._bases(batch)
        out = [torch.ones_like(a[:, :1, 0]), a[:, :, 0]]
        for l, count in enumerate(self.pairs):
            if count:
                al = a[:, :, l * l:(l + 1) ** 2]
                pairs = getattr(self, f"pairs_{l}")
                out.append(torch.einsum("nam,nbm->nab", al, al)[:, pairs[0], pairs[1]])
        if self.n_triples:
            p_of, ka, kb, kc = self.triples
            for p, (l1, l2, l3) in enumerate(self.couplings):
                cg = getattr(self, f"cg_{p}").to(a3.dtype)
                x1, x2, x3 = (a3[:, :, l * l:(l + 1) ** 2] for l in (l1, l2, l3))
                full = torch.einsum("nam,nbq,mqs,ncs->nabc", x1, x2, cg, x3)  # (N, K3, K3, K3)
                keep = p_of == p
                out.append(full[:, ka[keep], kb[keep], kc[keep]])
        return torch.cat(out, 1)

    def contracted(self) -> dict:
        """The weights as the polynomial's coefficient tensors per element S: w0 (S,), w1 (S, K), w2 (S, K, K, D)
        (the ν = 2 weight of each pair at each m of its l), w3 (slots, S·K3, K3·K3) (per slot (p, m3); zero where a
        product is not in the basis) and w3t (S, T), the kept triples' own weights. E_i = w0 + w1·A_0 +
        Σ_abm A_am w2_abm A_bm + Σ U·(w3 A') then costs a few matrix products: it grows with the channel counts and
        lmax, not with the number of products kept. Cached until the weights or the energy scale change (in-place
        writes through ``weights.data`` are not seen: set weights with ``copy_`` under ``torch.no_grad()``). Not
        differentiable in the weights: linear ACE is fitted by least squares, never by SGD."""
        w = self.weights
        scale = self.energy_scale
        key = (w._version, w.data_ptr(), w.dtype, w.device, scale._version, scale.data_ptr())  # no device sync
        cache = getattr(self, "_contracted_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1]
        w = w.detach() * self.energy_scale.to(w.dtype)
        n_el, k2, k3 = w.shape[0], self.k2, self.k3
        out = {"w0": w[:, 0], "w1": w[:, 1:1 + k2], "w2": None, "w2_sym": None, "w3": None, "w3t": None}
        col = 1 + k2
        if self.pairs:
            w2 = w.new_zeros(n_el, k2, k2, (self.lmax + 1) ** 2)
            for l, count in enumerate(self.pairs):
                pairs = getattr(self, f"pairs_{l}")
                w2[:, pairs[0], pairs[1], l * l:(l + 1) ** 2] = w[:, col:col + count, None]
                col += count
            out["w2"] = w2
            out["w2_sym"] = w2 + w2.transpose(1, 2)
        if self.n_triples:
            p, ka, kb, kc = self.triples
            w3 = w.new_zeros(n_el, k3, k3, len(self.couplings), k3)
            w3[:, ka, kb, p, kc] = w[:, col:col + self.n_triples]
            out["w3t"] = w[:, col:col + self.n_triples]  # (S, T), the triples' own weights
            # expanded to the slots (p, m3): (slots, S·K3, K3·K3)
            out["w3"] = w3[:, :, :, self.slot_p].permute(3, 0, 4, 1, 2).reshape(len(self.slot_p), n_el * k3, k3 * k3)
        self._contracted_cache = (key, out)
        return out

    def forward(self, batch) -> torch.Tensor:
        a, a3, species = self._bases(batch)
        c = self.contracted()
        rows = torch.arange(species.shape[0], device=species.device)
        energy = c["w0"][species] + (c["w1"][species] * a[:, :, 0]).sum(-1)
        if c["w2"] is not None:
            a2 = a[:, :, :c["w2"].shape[-1]]
            y = torch.einsum("nam,zabm->nzbm", a2, c["w2"])[rows, species]  # (N, K, D): each atom's own element
            energy = energy + (y * a2).sum((1, 2))
        if c["w3"] is not None:
            u, x3 = self._triple_products(a3)  # (N, K3, K3, slots), (N, K3, slots)
            n, k3 = a3.shape[0], a3.shape[1]
            # per slot: (S·K3, K3·K3) weights times U → (slots, N, S·K3), then each atom's own element
            y = torch.bmm(u.reshape(n, k3 * k3, -1).permute(2, 0, 1), c["w3"].transpose(1, 2))
            y = y.reshape(-1, n, c["w1"].shape[0], k3)[:, rows, species]  # (slots, N, K3)
            energy = energy + (y * x3.permute(2, 0, 1)).sum((0, 2))
        return energy
