"""Linear ACE design rows (a structure's energy row and force rows) by hand-derived forward mode, for the
least-squares fit (`ffspace.train.least_squares`).

Why: the fit's rows are −∂(Σ_i B_i)/∂r, one per coordinate. Forward-mode autograd (``torch.func.jacfwd``) carries
the 3N tangents through every product of the basis and spends ~0.1 s on an aspirin frame with the default basis and
~0.6 s with a basis of 13 000 weights: more than the normal equations themselves, which is what limited the basis a
fit of a few minutes could afford. Here torch computes the atomic bases X = (A, A') and their tangents dX (small:
X is linear in the edges), and the C kernel `ffspace/kernels/ace_design.c` turns them into B and dB with each
feature's partial derivatives, tangents as the SIMD axis. Where the kernel cannot be built the fit uses jacfwd
(same rows; `tests/test_linear_ace.py` compares the two).
"""

from __future__ import annotations

import ctypes
from collections import defaultdict

import numpy as np
import torch

from ..kernels.build import load_kernel
from ..models.ace import LinearACE, _monomials, bessel_radial
from ..models.chunking import local_edges


def _tables(term: LinearACE) -> dict:
    """Each feature as its partial derivatives: per feature f its degree ν and entries (q, [(coef, o1, o2)]) with
    ∂B_f/∂X_q = Σ coef · X_o1 · X_o2 (-1: no factor), in the order of `LinearACE.features`."""
    d = (term.lmax_a + 1) ** 2
    k, d3 = term.k2, (term.lmax_3 + 1) ** 2

    def ia(channel, m):
        return channel * d + m

    def i3(channel, m):  # A' as a slice of A, or its own block after A
        if term.shares_basis:
            return ia((channel // term.n_rbf_3) * term.n_rbf + channel % term.n_rbf_3, m)
        return k * d + channel * d3 + m

    features = [(0, {})]
    for channel in range(k):
        features.append((1, {ia(channel, 0): [(1.0, -1, -1)]}))
    for l in range(len(term.pairs)):
        a_list, b_list = (t.tolist() for t in getattr(term, f"pairs_{l}"))
        for a, b in zip(a_list, b_list):
            entries = defaultdict(list)
            for m in range(l * l, (l + 1) ** 2):
                entries[ia(a, m)].append((1.0, ia(b, m), -1))
                entries[ia(b, m)].append((1.0, ia(a, m), -1))
            features.append((2, entries))
    if term.n_triples:
        p_of, ka, kb, kc = (t.tolist() for t in term.triples)
        for p, (l1, l2, l3) in enumerate(term.couplings):
            cg = getattr(term, f"cg_{p}").detach().to("cpu", torch.float64)
            nonzero = [(m1, m2, m3, float(cg[m1, m2, m3])) for m1, m2, m3 in torch.nonzero(cg.abs() > 1e-12).tolist()]
            for q, a, b, c in zip(p_of, ka, kb, kc):
                if q != p:
                    continue
                entries = defaultdict(list)
                for m1, m2, m3, value in nonzero:
                    x1, x2, x3 = i3(a, l1 * l1 + m1), i3(b, l2 * l2 + m2), i3(c, l3 * l3 + m3)
                    entries[x1].append((value, x2, x3))
                    entries[x2].append((value, x1, x3))
                    entries[x3].append((value, x1, x2))
                features.append((3, entries))
    assert len(features) == term.n_features, (len(features), term.n_features)
    order = np.array([nu for nu, _ in features], dtype=np.int32)
    entry_start, entry_q, term_start, coef, o1, o2 = [0], [], [0], [], [], []
    for _, entries in features:
        for q, terms in entries.items():
            entry_q.append(q)
            for c, a, b in terms:
                coef.append(c)
                o1.append(a)
                o2.append(b)
            term_start.append(len(coef))
        entry_start.append(len(entry_q))
    i32 = lambda v: np.ascontiguousarray(np.asarray(v, dtype=np.int32))  # noqa: E731
    i64 = lambda v: np.ascontiguousarray(np.asarray(v, dtype=np.int64))  # noqa: E731
    return {"order": order, "entry_start": i64(entry_start), "entry_q": i32(entry_q), "term_start": i64(term_start),
            "coef": np.ascontiguousarray(np.asarray(coef, dtype=np.float64)), "o1": i32(o1), "o2": i32(o2)}


def _edge_tangents(term, i, j, species, n, vec, cutoff, freqs, d, selected):
    """The atomic basis (N, K·D) and its derivatives (N, K·D, 3·S) with respect to the coordinates of the S atoms
    ``selected`` (N,) numbers (-1: not selected), from one radial set: A_i = Σ_j φ(r_ij)/n̄ with φ = R_n Y_m, and
    r_ij = r_j − r_i moves with atom j (+) and atom i (−)."""
    n_el = len(term.elements)
    r = torch.linalg.norm(vec, dim=-1)
    u = vec / r[:, None]
    mono = _monomials(u, term.harmonics.shape[0])
    sh = (mono @ term.harmonics.to(vec.dtype))[:, :d]  # (E, D)
    dsh = torch.einsum("ec,kcd->ekd", mono, term.harmonics_grad.to(vec.dtype))[:, :, :d]  # (E, 3, D): ∂Y/∂u
    radial, dradial = bessel_radial(r, cutoff, freqs, derivative=True)
    n_rbf = radial.shape[1]
    tangential = (dsh - (dsh * u[:, :, None]).sum(1, keepdim=True) * u[:, :, None]) / r[:, None, None]  # (E, 3, D)
    dphi = dradial[:, :, None, None] * u[:, None, None, :] * sh[:, None, :, None] \
        + radial[:, :, None, None] * tangential.transpose(1, 2)[:, None]  # (E, n_rbf, D, 3)
    dphi = dphi / term.avg_neighbors
    a = term._density(i, j, species, n, radial, sh).reshape(n, -1)
    row = i * n_el + species[j]
    n_sel = int((selected >= 0).sum())
    da = vec.new_zeros((n * n_el * n_sel, n_rbf, d, 3))
    for moved, sign in ((j, 1.0), (i, -1.0)):  # only the selected atoms' tangents (a water frame has 1 728)
        mask = selected[moved] >= 0
        da.index_add_(0, row[mask] * n_sel + selected[moved[mask]], sign * dphi[mask])
    da = da.reshape(n, n_el, n_sel, n_rbf, d, 3).permute(0, 1, 3, 4, 2, 5).reshape(n, n_el * n_rbf * d, 3 * n_sel)
    return a, da


class DesignKernel:
    """``(graph, atoms) → (energy row (S·F,), force rows (3·len(atoms), S·F))`` of a `LinearACE` term, the rows
    `ffspace.train.least_squares` accumulates (scaled by the term's energy scale; forces = −∂/∂r). Raises
    `ffspace.kernels.build.KernelUnavailable` when the C kernel cannot be built here."""

    def __init__(self, term: LinearACE):
        self.lib = load_kernel("ace_design")
        self.lib.ace_design.restype = ctypes.c_int
        self.term = term
        self.tables = _tables(term)

    def __call__(self, batch, atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        term, t = self.term, self.tables
        n = batch.numbers.shape[0]
        species = term.species(batch.numbers)
        i, j, vec, _ = local_edges(term, batch)
        selected = torch.full((n,), -1, dtype=torch.long)
        selected[atoms] = torch.arange(len(atoms))
        x, dx = _edge_tangents(term, i, j, species, n, vec, term.cutoff, term.freqs, (term.lmax_a + 1) ** 2, selected)
        if term.couplings and not term.shares_basis:
            keep = torch.linalg.norm(vec, dim=-1) < term.cutoff_3
            x3, dx3 = _edge_tangents(term, i[keep], j[keep], species, n, vec[keep], term.cutoff_3, term.freqs_3,
                                     (term.lmax_3 + 1) ** 2, selected)
            x, dx = torch.cat([x, x3], 1), torch.cat([dx, dx3], 1)
        x = np.ascontiguousarray(x.detach().numpy(), dtype=np.float64)
        dx = np.ascontiguousarray(dx.detach().numpy(), dtype=np.float64)
        n_tan, n_features, n_el = 3 * len(atoms), term.n_features, len(term.elements)
        row = np.zeros(n_el * n_features)
        rows = np.zeros((n_el * n_features, n_tan))
        spec = np.ascontiguousarray(species.numpy(), dtype=np.int64)
        p = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
        status = self.lib.ace_design(
            ctypes.c_int64(n), p(spec), ctypes.c_int64(x.shape[1]), ctypes.c_int64(n_tan), p(x), p(dx),
            ctypes.c_int64(n_features), p(t["order"]), p(t["entry_start"]), p(t["entry_q"]), p(t["term_start"]),
            p(t["coef"]), p(t["o1"]), p(t["o2"]), ctypes.c_int32(torch.get_num_threads()), p(row), p(rows))
        if status:
            raise MemoryError("linear ACE design kernel: out of memory")
        scale = float(term.energy_scale)
        return torch.from_numpy(row * scale), torch.from_numpy(rows.T * -scale)
