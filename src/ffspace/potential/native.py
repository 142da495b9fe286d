"""Linear ACE energies and forces through a C kernel (`ffspace/kernels/ace.c`), built on this machine at first use.

Why: linear ACE's forces are hand-derived (`ffspace.potential.analytic`), but in torch each of its ~60 operations
still costs tens of µs on 2 cores and moves (N, K, K, slots) intermediates through memory; the kernel does the same
arithmetic per atom in cache, in double precision, on all of torch's threads. `AceKernel` turns a `LinearACE`'s
weights and index tables into flat arrays (nothing but numbers reaches the compiled code) and is what
`FastForces` uses for linear ACE on the CPU; on other devices, or where no C compiler exists, the torch version runs.
"""

from __future__ import annotations

import ctypes

import numpy as np
import torch

from ..kernels.build import load_kernel
from ..models.ace import LinearACE, homogeneous_harmonics

_I32, _F64 = ctypes.c_int32, ctypes.c_double
_P = ctypes.c_void_p


class _Params(ctypes.Structure):  # the C struct AceParams, field for field
    _fields_ = [("n_el", _I32), ("n_rbf", _I32), ("d", _I32), ("cutoff", _F64), ("inv_avg", _F64),
                ("separate3", _I32), ("n_rbf3", _I32), ("d3", _I32), ("cutoff3", _F64), ("max_degree", _I32),
                ("n_mono", _I32), ("mono_exp", _P), ("harm", _P), ("mono_lower", _P), ("w0", _P), ("w1", _P),
                ("has_pairs", _I32), ("w2sym", _P), ("n_slots", _I32), ("cg_start", _P), ("cg_m1", _P),
                ("cg_m2", _P), ("cg_val", _P), ("group_start", _P), ("group_c", _P), ("slot_m", _P),
                ("entry_start", _P), ("entry_ab", _P), ("n_entries", _I32), ("w3", _P)]


class _Edges(ctypes.Structure):  # the C struct Edges
    _fields_ = [("n_edges", ctypes.c_int64), ("i", _P), ("j", _P), ("positions", _P), ("shifts", _P),
                ("cells", _P), ("graph", _P)]


def _i32(values) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.int32))


def _int64(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.int64)


def _float64(t: torch.Tensor) -> np.ndarray:  # positions in float64 before any difference is taken
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)


def _f64(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64))


class AceKernel:
    """Energies (per atom, float64) and forces of one `LinearACE` term, by the C kernel. Raises
    `ffspace.kernels.build.KernelUnavailable` when the kernel cannot be built here."""

    def __init__(self, ace: LinearACE):
        self.lib = load_kernel("ace")
        self.lib.ace_energies_forces.restype = ctypes.c_int
        self.lib.ace_energies_forces.argtypes = [ctypes.POINTER(_Params), ctypes.c_int64, _P,
                                                 ctypes.POINTER(_Edges), ctypes.c_int32, _P, _P]
        self.ace = self.term = ace
        self._contracted = None
        self._tables()

    def _tables(self) -> None:
        """Index tables (fixed by the model's settings) into `self.params`; the weights follow in `_weights`."""
        ace = self.ace
        lmax_y = max(ace.lmax_a, ace.lmax_3)
        dy = (lmax_y + 1) ** 2
        exps, terms = homogeneous_harmonics(lmax_y)
        index = {tuple(e): q for q, e in enumerate(exps)}
        exps = np.array(exps, dtype=np.int32).reshape(-1, 3)
        harm = np.zeros((len(exps), dy))
        for q, lm, coef in terms:
            harm[q, lm] += coef
        lower = np.full((len(exps), 3), -1, dtype=np.int32)  # ∂(x^a y^b z^c)/∂x = a · x^(a-1) y^b z^c
        for q, e in enumerate(exps.tolist()):
            for k in range(3):
                if e[k]:
                    d = list(e)
                    d[k] -= 1
                    lower[q, k] = index[tuple(d)]
        # ν = 3, per slot (p, m3): its Clebsch–Gordan nonzeros, and its entries (kept triples (p, a, b, c)) grouped
        # by the third factor c
        n_slots, k3 = len(ace.slot_m), ace.k3
        cg = sorted(zip(ace.cg_slot.tolist(), ace.cg_m1.tolist(), ace.cg_m2.tolist(), ace.cg_value.tolist()))
        cg_start = np.searchsorted([z[0] for z in cg], np.arange(n_slots + 1))
        first_slot = {}
        for slot, p in enumerate(ace.slot_p.tolist()):
            first_slot.setdefault(p, slot)
        entries = sorted((first_slot[p] + q, c, a * k3 + b, t) for t, (p, a, b, c) in enumerate(ace.triples.T.tolist())
                         for q in range(2 * ace.couplings[p][2] + 1))
        groups = sorted({(e[0], e[1]) for e in entries})
        group_start = np.searchsorted([g[0] for g in groups], np.arange(n_slots + 1))
        entry_start = [n for n, e in enumerate(entries) if n == 0 or e[:2] != entries[n - 1][:2]] + [len(entries)]
        self._entry_triple = np.array([e[3] for e in entries], dtype=np.int64)
        keep = dict(mono_exp=exps, harm=harm, mono_lower=lower, cg_start=_i32(cg_start),
                    cg_m1=_i32([z[1] for z in cg]), cg_m2=_i32([z[2] for z in cg]), cg_val=_f64([z[3] for z in cg]),
                    group_start=_i32(group_start), group_c=_i32([g[1] for g in groups]), slot_m=_i32(ace.slot_m),
                    entry_start=_i32(entry_start), entry_ab=_i32([e[2] for e in entries]))
        self._arrays = {k: np.ascontiguousarray(v) for k, v in keep.items()}
        prm = _Params()
        prm.n_el, prm.n_rbf, prm.d = len(ace.elements), ace.n_rbf, (ace.lmax_a + 1) ** 2
        prm.cutoff, prm.inv_avg = ace.cutoff, 1.0 / ace.avg_neighbors
        prm.separate3 = int(bool(ace.couplings) and not ace.shares_basis)
        prm.n_rbf3, prm.d3, prm.cutoff3 = ace.n_rbf_3, (ace.lmax_3 + 1) ** 2, ace.cutoff_3
        prm.max_degree, prm.n_mono = lmax_y, len(exps)
        prm.has_pairs, prm.n_slots, prm.n_entries = int(bool(ace.pairs)), n_slots, len(entries)
        for name, array in self._arrays.items():
            setattr(prm, name, array.ctypes.data)
        self.params = prm

    def _weights(self) -> None:
        """The weights (times the energy scale) as float64 arrays, refreshed when `LinearACE.contracted` is."""
        c = self.ace.contracted()
        if c is self._contracted:
            return
        ace = self.ace
        w = _f64(ace.weights.detach().double() * ace.energy_scale.double())
        k2, n2 = ace.k2, sum(ace.pairs)
        w3 = w[:, 1 + k2 + n2:1 + k2 + n2 + ace.n_triples]
        # ν = 2 as (S, K, K, D) with D the kernel's harmonics count (A's lmax may exceed ν = 2's), W + Wᵀ, in float64
        # (`contracted` multiplies in the model's dtype)
        w2 = np.zeros((w.shape[0], k2, k2, (ace.lmax_a + 1) ** 2))
        col = 1 + k2
        for l, count in enumerate(ace.pairs):
            a, b = getattr(ace, f"pairs_{l}").cpu().numpy()
            w2[:, a, b, l * l:(l + 1) ** 2] = w[:, col:col + count, None]
            col += count
        self._w = {"w0": _f64(w[:, 0]), "w1": _f64(w[:, 1:1 + k2]), "w2sym": _f64(w2 + w2.transpose(0, 2, 1, 3)),
                   "w3": _f64(w3[:, self._entry_triple])}
        for name, array in self._w.items():
            setattr(self.params, name, array.ctypes.data)
        self._contracted = c

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies (N,) in float64 and forces (N, 3) in the batch's dtype, on the CPU."""
        return call_on_batch(self, batch)

    def arrays(self, species, positions, i, j, shifts, cells, graph) -> tuple[np.ndarray, np.ndarray]:
        """The kernel on numpy arrays (contiguous; int64 species (N,), i, j (E,) and graph (N,); float64
        positions (N, 3), shifts (E, 3) or None, cells (G, 3, 3)): per-atom energies (N,) and forces (N, 3),
        float64. What an MD loop calls directly, without building a torch batch."""
        self._weights()
        return call_kernel(self.lib.ace_energies_forces, self.params, "linear ACE", species, positions, i, j, shifts,
                           cells, graph)


def call_on_batch(kernel, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``kernel.arrays`` on a `Batch`: per-atom energies (N,) in float64 and forces (N, 3) in the batch's dtype."""
    energies, forces = kernel.arrays(_int64(kernel.term.species(batch.numbers)), _float64(batch.positions),
                                     *(_int64(t) for t in batch.edge_index),
                                     _float64(batch.shifts) if batch.shifts.shape[0] else None,
                                     _float64(batch.cell), _int64(batch.graph_index))
    return torch.from_numpy(energies), torch.from_numpy(forces).to(batch.positions.dtype)


def call_kernel(fn, params, what: str, species, positions, i, j, shifts, cells, graph):
    """One call of a C kernel with the signature ``(params*, n_atoms, species, Edges*, threads, energies, forces)``
    on numpy arrays (see `AceKernel.arrays`); per-atom energies (N,) and forces (N, 3), float64."""
    n = positions.shape[0]
    arrays = {"i": i, "j": j, "positions": positions, "cells": cells, "graph": graph}
    if shifts is not None:
        arrays["shifts"] = shifts
    edges = _Edges(n_edges=i.size, **{k: v.ctypes.data for k, v in arrays.items()})
    energies = np.empty(n, dtype=np.float64)
    forces = np.empty((n, 3), dtype=np.float64)
    status = fn(ctypes.byref(params), n, species.ctypes.data, ctypes.byref(edges), torch.get_num_threads(),
                energies.ctypes.data, forces.ctypes.data)
    if status == 1:
        raise MemoryError(f"the {what} kernel ran out of memory")
    if status != 0:
        raise RuntimeError(f"the {what} kernel refused its parameters (status {status})")
    return energies, forces
