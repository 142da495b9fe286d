"""MACE-style energies and forces through a C kernel (`ffspace/kernels/mace.c`), built on this machine at first use.

Why: an eager aspirin call of the MACE-style model (`ffspace.models.mace`) is ~10 ms on 2 cores, and removing
PyTorch's per-operation overhead alone (compiling, batching) gains at most ~2.5x (`benchmarks/batch_cost.py`): most of
the arithmetic is the radial MLP, two hidden layers per edge and layer, and its derivative for the forces. That MLP is
a function of the distance alone, so `MaceKernel` tabulates it once per model, per layer and channel, as a quintic
Hermite spline (values, first and second derivatives at knots 0.01 Å apart, or finer where needed, computed in float64 by forward-mode
autograd of the model's own MLP) and checks the spline against the MLP between the knots (`TABLE_TOLERANCE`); the
kernel then evaluates everything else exactly, with the forces' backward pass written out by hand. Nothing but
numbers reaches the compiled code: the weights and tables are float64 arrays derived from the package.
"""

from __future__ import annotations

import copy
import ctypes
import math

import numpy as np
import torch

from ..kernels.build import KernelUnavailable, load_kernel
from ..models.ace import homogeneous_harmonics
from ..models.mace import MACE
from ..models.radial import cosine_cutoff
from .native import _Edges, call_kernel, call_on_batch

_I32, _F64, _P = ctypes.c_int32, ctypes.c_double, ctypes.c_void_p
TABLE_STEPS = (0.01, 0.005, 0.0025)  # Å between knots of the radial tables: the first that meets the tolerance
TABLE_START = 0.05  # Å: a structure with a closer pair is outside the tables: NaN from the kernel, the eager model runs
TABLE_TOLERANCE = 1e-10  # largest spline error allowed, relative to the largest radial weight


class _Params(ctypes.Structure):  # the C struct MaceParams, field for field
    _fields_ = [("n_el", _I32), ("K", _I32), ("lmax", _I32), ("D", _I32), ("layers", _I32), ("vec_layers", _I32),
                ("cutoff", _F64), ("inv_avg", _F64), ("scale", _F64), ("r_min", _F64), ("h", _F64),
                ("n_knots", _I32), ("channels", _P), ("table_offset", _P), ("table", _P),
                ("max_degree", _I32), ("n_mono", _I32), ("mono_exp", _P), ("harm", _P), ("mono_lower", _P),
                ("l_of_m", _P), ("embedding", _P), ("up", _P), ("a_mix", _P), ("n_inv", _I32), ("contraction", _P),
                ("mix_w", _P), ("mix_b", _P), ("skip", _P), ("readout_w", _P), ("readout_b", _P),
                ("ro_hidden", _I32), ("ro1_w", _P), ("ro1_b", _P), ("ro2_w", _P), ("ro2_b", _F64),
                ("n_vec", _I32), ("up_vec", _P), ("msg_nz", _I32), ("msg_cd", _P), ("msg_d", _P), ("msg", _P), ("vec_contraction", _P), ("vec_mix", _P),
                ("n_pairs", _I32), ("pair_m1", _P), ("pair_m2", _P),
                ("nz2", _I32), ("c2_p", _P), ("c2_l", _P), ("c2_v", _P),
                ("n3", _I32), ("nz3", _I32), ("c3_p", _P), ("c3_q", _P), ("c3_d", _P), ("c3_v", _P),
                ("nzv", _I32), ("cv_p", _P), ("cv_q", _P), ("cv_c", _P), ("cv_v", _P)]


def supports(term) -> bool:
    """A MACE-style term the kernel evaluates: lmax ≤ 3, ≤ 256 channels, the standard readouts."""
    if not isinstance(term, MACE) or term.lmax > 3 or term.channels > 256:
        return False
    last = term.readouts[-1]
    return isinstance(last, torch.nn.Sequential) and len(last) == 3 and last[0].out_features <= 64


def _a(values, dtype=np.float64) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    return np.ascontiguousarray(np.asarray(values, dtype=dtype))


def _sparse(dense: np.ndarray):
    """Nonzero (row, column, value) of a 2-D coupling matrix, row-major."""
    rows, cols = np.nonzero(np.abs(dense) > 0.0)
    return rows, cols, dense[rows, cols]


def radial_weights(mace: MACE, t: int, r: torch.Tensor) -> torch.Tensor:
    """Layer t's radial weights R(r) (len(r), C) exactly as the model computes them (float64 model), columns in the
    kernel's order: (l, k) for the scalar messages, then k for the vector ones."""
    fcut = cosine_cutoff(r, mace.cutoff).unsqueeze(-1)
    rw = mace.radials[t](mace.rbf(r) * fcut) * fcut
    k, l1 = mace.channels, mace.lmax + 1
    scalar = rw[:, :k * l1].reshape(-1, k, l1).transpose(1, 2).reshape(-1, k * l1)
    return torch.cat([scalar, rw[:, k * l1:]], 1)


def _taylor(f, r: torch.Tensor):
    """f(r), f′(r), f″(r) of an elementwise function of r by nested forward-mode autograd."""
    from torch.func import jvp

    ones = torch.ones_like(r)
    (value, slope), (_, curvature) = jvp(lambda x: jvp(f, (x,), (ones,)), (r,), (ones,))
    return value, slope, curvature


def radial_table(mace: MACE, t: int, knots: torch.Tensor, step: float) -> torch.Tensor:
    """(knots, 3, C): R, step·R′ and step²·R″ at the knots, columns as `radial_weights`. The MLP's input (Bessel basis
    times cutoff) is differentiated by nested forward-mode autograd, the MLP by the chain rule written out layer by
    layer (PyTorch has no second-order forward mode for SiLU)."""
    def inside(r):  # `cosine_cutoff` without its `where`: the last knot, r = rc, needs the left-hand derivatives
        return 0.5 * (torch.cos(math.pi * r / mace.cutoff) + 1.0)

    with torch.no_grad():
        x, dx, ddx = _taylor(lambda r: mace.rbf(r) * inside(r).unsqueeze(-1), knots)
        fc, dfc, ddfc = (v.unsqueeze(-1) for v in _taylor(inside, knots))
        for layer in mace.radials[t]:
            if isinstance(layer, torch.nn.Linear):
                x, dx, ddx = layer(x), dx @ layer.weight.T, ddx @ layer.weight.T
            elif isinstance(layer, torch.nn.SiLU):
                sig = torch.sigmoid(x)
                d1 = sig * (1 + x * (1 - sig))
                d2 = sig * (1 - sig) * (2 + x * (1 - 2 * sig))
                x, dx, ddx = x * sig, d1 * dx, d2 * dx * dx + d1 * ddx
            else:
                raise KernelUnavailable(f"the MACE kernel tabulates Linear and SiLU radial layers, not {layer}")
        value, slope, curvature = x * fc, dx * fc + x * dfc, ddx * fc + 2 * dx * dfc + x * ddfc
    k, l1 = mace.channels, mace.lmax + 1

    def order(rw):
        scalar = rw[:, :k * l1].reshape(-1, k, l1).transpose(1, 2).reshape(-1, k * l1)
        return torch.cat([scalar, rw[:, k * l1:]], 1)
    return torch.stack([order(value), step * order(slope), step * step * order(curvature)], 1)


def hermite(table: np.ndarray, r_min: float, step: float, r: np.ndarray) -> np.ndarray:
    """The quintic Hermite spline of a (knots, 3, C) table at distances r (as the kernel evaluates it)."""
    x = (r - r_min) / step
    q = np.clip(x.astype(np.int64), 0, table.shape[0] - 2)
    s = (x - q)[:, None]
    s2, s3, s4, s5 = s**2, s**3, s**4, s**5
    basis = [1 - 10 * s3 + 15 * s4 - 6 * s5, s - 6 * s3 + 8 * s4 - 3 * s5, 0.5 * (s2 - 3 * s3 + 3 * s4 - s5),
             10 * s3 - 15 * s4 + 6 * s5, -4 * s3 + 7 * s4 - 3 * s5, 0.5 * (s3 - 2 * s4 + s5)]
    k0, k1 = table[q], table[q + 1]
    return sum(b * k[:, c] for b, (k, c) in zip(basis, [(k0, 0), (k0, 1), (k0, 2), (k1, 0), (k1, 1), (k1, 2)]))


class MaceKernel:
    """Per-atom energies (float64) and forces of one MACE-style term, by the C kernel. Raises
    `ffspace.kernels.build.KernelUnavailable` when the kernel cannot be built here or the model's radial functions
    cannot be tabulated to `TABLE_TOLERANCE`."""

    def __init__(self, mace: MACE):
        if not supports(mace):
            raise KernelUnavailable("the MACE kernel needs lmax ≤ 3, ≤ 256 channels and the standard readouts")
        self.lib = load_kernel("mace")
        self.lib.mace_energies_forces.restype = ctypes.c_int
        self.lib.mace_energies_forces.argtypes = [ctypes.POINTER(_Params), ctypes.c_int64, _P,
                                                  ctypes.POINTER(_Edges), ctypes.c_int32, _P, _P]
        self.term = mace
        self.table_error = None  # the largest relative spline error measured between knots
        self._key = None
        self._refresh()  # tables that miss the MLP refuse the kernel now, not at the first call

    def _key_now(self):
        # the parameter list once (walking the modules each call cost ~0.1 ms); in-place changes bump _version, a
        # replaced tensor (`.to`, `.data =`) changes data_ptr
        if getattr(self, "_watched", None) is None:
            self._watched = list(self.term.parameters()) + [self.term.energy_scale]
        return tuple((p._version, p.data_ptr()) for p in self._watched)

    def _refresh(self) -> None:
        """Tables, couplings and weights as float64 arrays, rebuilt when the model's parameters change."""
        key = self._key_now()
        if key == self._key:
            return
        m = copy.deepcopy(self.term).to("cpu", torch.float64)
        k, lmax, layers = m.channels, m.lmax, len(m.up)
        l1, d = lmax + 1, (lmax + 1) ** 2
        arrays = {}
        # radial tables: the spline's error falls as step⁶, so a model with sharper radial functions gets finer knots
        for step_wanted in TABLE_STEPS:
            step, tables, worst = self._tables(m, layers, step_wanted)
            if worst <= TABLE_TOLERANCE:
                break
        else:
            raise KernelUnavailable(f"the radial functions are not tabulated to {TABLE_TOLERANCE:g} "
                                    f"(spline error {worst:.2g} of the largest weight at {step:.3g} Å)")
        self.table_error, self.table_step = worst, step
        n_int = tables[0].shape[0] - 1
        channels = [t.shape[2] for t in tables]
        offsets = np.cumsum([0] + [t.size for t in tables])[:-1]
        tables = [t.reshape(-1) for t in tables]
        arrays["table"] = np.concatenate(tables)
        arrays["channels"] = _a(channels, np.int32)
        arrays["table_offset"] = _a(offsets, np.int64)
        # harmonics as polynomials (as the linear ACE kernel)
        exps, terms = homogeneous_harmonics(lmax)
        index = {tuple(e): q for q, e in enumerate(exps)}
        harm = np.zeros((len(exps), d))
        for q, lm, coef in terms:
            harm[q, lm] += coef
        lower = np.full((len(exps), 3), -1, dtype=np.int32)
        for q, e in enumerate(exps):
            for c in range(3):
                if e[c]:
                    low = list(e)
                    low[c] -= 1
                    lower[q, c] = index[tuple(low)]
        arrays.update(mono_exp=_a(exps, np.int32).reshape(-1, 3), harm=harm, mono_lower=lower,
                      l_of_m=_a(m.l_of_m, np.int32))
        # weights, stored (in, out)
        arrays["embedding"] = _a(m.embedding.weight)
        arrays["up"] = _a(torch.stack([u.weight.T for u in m.up]))
        arrays["a_mix"] = _a(torch.stack(list(m.a_mix)))
        arrays["contraction"] = _a(torch.stack([w.transpose(1, 2) for w in m.contraction]))
        arrays["mix_w"] = _a(torch.stack([x.weight.T for x in m.mix]))
        arrays["mix_b"] = _a(torch.stack([x.bias for x in m.mix]))
        arrays["skip"] = _a(torch.stack([x.weight.T for x in m.skip]))
        linear = list(m.readouts[:-1])
        arrays["readout_w"] = _a([r.weight.reshape(-1).tolist() for r in linear] or [[0.0]])
        arrays["readout_b"] = _a([float(r.bias.detach()) for r in linear] or [0.0])
        last = m.readouts[-1]
        arrays["ro1_w"], arrays["ro1_b"] = _a(last[0].weight.T), _a(last[0].bias)
        arrays["ro2_w"] = _a(last[2].weight.reshape(-1))
        vec_layers = len(m.vec_mix)
        if vec_layers:
            arrays["up_vec"] = _a(torch.stack(list(m.up_vec)))
            cm = m.cm.reshape(3 * d, m.n_msg, d)
            cd, dd = np.nonzero(cm.abs().amax(1).numpy() > 0)  # the (c·D + d', d) any path couples
            arrays["msg_cd"], arrays["msg_d"] = _a(cd, np.int32), _a(dd, np.int32)
            arrays["msg"] = _a(torch.stack([torch.einsum("kp,zp->zk", pw, cm[cd, :, dd]) for pw in m.path_weights]))
            arrays["vec_contraction"] = _a(torch.stack([w.transpose(1, 2) for w in m.vec_contraction]))
            arrays["vec_mix"] = _a(torch.stack(list(m.vec_mix)))
        # the symmetric contraction's couplings (the model's own float32-rounded buffers, as eager evaluates them)
        select = m.pair_select.numpy()
        arrays["pair_m1"] = _a(select[0].argmax(0), np.int32)
        arrays["pair_m2"] = _a(select[1].argmax(0), np.int32)
        c2 = _sparse(m.c2.numpy()) if m.correlation >= 2 else ([], [], [])
        arrays.update(c2_p=_a(c2[0], np.int32), c2_l=_a(c2[1], np.int32), c2_v=_a(c2[2]))
        c3 = m.c3.numpy().reshape(select.shape[2], -1)
        p3, col, v3 = _sparse(c3) if m.n3 else ([], np.zeros(0, dtype=np.int64), [])
        arrays.update(c3_p=_a(p3, np.int32), c3_q=_a(np.asarray(col) // d, np.int32),
                      c3_d=_a(np.asarray(col) % d, np.int32), c3_v=_a(v3))
        cv = _sparse(m.cv.numpy()) if m.n_vec else ([], np.zeros(0, dtype=np.int64), [])
        arrays.update(cv_p=_a(cv[0], np.int32), cv_q=_a(np.asarray(cv[1]) // 3, np.int32),
                      cv_c=_a(np.asarray(cv[1]) % 3, np.int32), cv_v=_a(cv[2]))
        # an empty array still needs an address
        self._arrays = {name: (a if a.size else np.zeros(1, dtype=a.dtype)) for name, a in arrays.items()}
        prm = _Params(n_el=len(m.elements), K=k, lmax=lmax, D=d, layers=layers, vec_layers=vec_layers,
                      cutoff=m.cutoff, inv_avg=1.0 / m.avg_neighbors, scale=float(m.energy_scale),
                      r_min=TABLE_START, h=step, n_knots=n_int + 1, max_degree=lmax, n_mono=len(exps),
                      n_inv=m.contraction[0].shape[-1], ro_hidden=last[0].out_features, ro2_b=float(last[2].bias.detach()),
                      n_vec=m.n_vec, msg_nz=len(arrays.get("msg_cd", [])), n_pairs=select.shape[2], nz2=len(c2[2]), n3=m.n3, nz3=len(v3), nzv=len(cv[2]))
        for name, array in self._arrays.items():
            setattr(prm, name, array.ctypes.data)
        self.params, self._key = prm, key

    @staticmethod
    def _tables(m: MACE, layers: int, step_wanted: float):
        """Each layer's (knots, 3, C) table at knots ~``step_wanted`` apart (the last knot on the cutoff), and the
        largest spline error relative to the largest weight, measured at 7 points per interval off the knots."""
        n_int = int(np.ceil((m.cutoff - TABLE_START) / step_wanted))
        step = (m.cutoff - TABLE_START) / n_int
        knots = torch.linspace(TABLE_START, m.cutoff, n_int + 1, dtype=torch.float64)
        probe = torch.linspace(TABLE_START, m.cutoff, 7 * n_int + 1, dtype=torch.float64)[:-1] + 0.37 * step / 7
        tables, worst = [], 0.0
        for t in range(layers):
            table = radial_table(m, t, knots, step).numpy()
            with torch.no_grad():
                exact = radial_weights(m, t, probe).numpy()
            spline = hermite(table, TABLE_START, step, probe.numpy())
            worst = max(worst, float(np.abs(spline - exact).max() / max(np.abs(exact).max(), 1e-300)))
            tables.append(table)
        return step, tables, worst

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies (N,) in float64 and forces (N, 3) in the batch's dtype, on the CPU."""
        return call_on_batch(self, batch)

    def arrays(self, species, positions, i, j, shifts, cells, graph) -> tuple[np.ndarray, np.ndarray]:
        """The kernel on numpy arrays (as `AceKernel.arrays`): per-atom energies (N,) and forces (N, 3), float64."""
        self._refresh()
        return call_kernel(self.lib.mace_energies_forces, self.params, "MACE", species, positions, i, j, shifts,
                           cells, graph)
