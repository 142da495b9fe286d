"""Compressed Deep Potential energies and forces through a C kernel (`ffspace/kernels/dp.c`), built on this machine at
first use, as linear ACE's (`ffspace.potential.native`).

Why: the hand-derived forces of `ffspace.potential.analytic_dp` still run ~60 torch operations per call, tens of µs
each on 2 cores, for a few hundred thousand multiply-adds on a molecule. `DPKernel` turns a compressed
`DeepPotential`'s embedding tables (computed in float64) and fitting nets into flat arrays (nothing but numbers reaches
the compiled code) and is what `FastForces` uses for it on the CPU; uncompressed models, other devices, or a machine
without a C compiler run the torch version.
"""

from __future__ import annotations

import copy
import ctypes

import numpy as np
import torch

from ..kernels.build import load_kernel
from ..models.deep_potential import DeepPotential
from .native import _Edges, call_kernel, call_on_batch

_I32, _F64, _P = ctypes.c_int32, ctypes.c_double, ctypes.c_void_p


class _Params(ctypes.Structure):  # the C struct DPParams, field for field
    _fields_ = [("n_el", _I32), ("m1", _I32), ("axis", _I32), ("n_layers", _I32), ("cutoff", _F64),
                ("cutoff_smooth", _F64), ("inv_avg", _F64), ("table_step", _F64), ("scale", _F64),
                ("n_intervals", _I32), ("table", _P), ("widths", _P), ("tanh_after", _P), ("weights", _P),
                ("offset", _P), ("max_width", _I32)]


def supports(term) -> bool:
    return isinstance(term, DeepPotential) and term.compressed


class DPKernel:
    """Per-atom energies (float64) and forces of one compressed `DeepPotential` term, by the C kernel. Raises
    `ffspace.kernels.build.KernelUnavailable` when the kernel cannot be built here."""

    def __init__(self, dp: DeepPotential):
        if not supports(dp):
            raise ValueError("DPKernel needs a compressed Deep Potential")
        self.lib = load_kernel("dp")
        self.lib.dp_energies_forces.restype = ctypes.c_int
        self.lib.dp_energies_forces.argtypes = [ctypes.POINTER(_Params), ctypes.c_int64, _P, ctypes.POINTER(_Edges),
                                                ctypes.c_int32, _P, _P]
        self.term = dp
        self._key = None

    def _key_now(self):
        return tuple((p._version, p.data_ptr()) for p in self.term.parameters()) + \
            (self.term.energy_scale._version, self.term.table_step)

    def _refresh(self) -> None:
        """Tables and weights as float64 arrays, rebuilt when the model's parameters change."""
        key = self._key_now()
        if key == self._key:
            return
        dp = self.term
        exact = copy.deepcopy(dp).to("cpu", torch.float64)  # the tables in float64 (the model's own follow its dtype)
        table = exact.tables().numpy()
        layers = []
        for net in exact.fitting:
            mods = list(net)
            layers.append([(m.weight.detach().numpy(), m.bias.detach().numpy(),
                            k + 1 < len(mods) and isinstance(mods[k + 1], torch.nn.Tanh))
                           for k, m in enumerate(mods) if isinstance(m, torch.nn.Linear)])
        widths = [layers[0][0][0].shape[1]] + [w.shape[0] for w, _, _ in layers[0]]
        flat, offset = [], []
        position = 0
        for element in layers:
            for w, b, _ in element:
                offset.append(position)
                flat += [w.reshape(-1), b.reshape(-1)]
                position += w.size + b.size
        self._arrays = {"table": np.ascontiguousarray(table, dtype=np.float64),
                        "widths": np.asarray(widths, dtype=np.int32),
                        "tanh_after": np.asarray([int(t) for _, _, t in layers[0]], dtype=np.int32),
                        "weights": np.ascontiguousarray(np.concatenate(flat), dtype=np.float64),
                        "offset": np.asarray(offset, dtype=np.int64)}
        prm = _Params(n_el=len(dp.elements), m1=table.shape[-1], axis=dp.axis, n_layers=len(widths) - 1,
                      cutoff=dp.cutoff, cutoff_smooth=dp.cutoff_smooth, inv_avg=1.0 / dp.avg_neighbors,
                      table_step=dp.table_step, scale=float(dp.energy_scale), n_intervals=table.shape[1],
                      max_width=max(widths))
        for name, array in self._arrays.items():
            setattr(prm, name, array.ctypes.data)
        self.params, self._key = prm, key

    def __call__(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom energies (N,) in float64 and forces (N, 3) in the batch's dtype, on the CPU."""
        return call_on_batch(self, batch)

    def arrays(self, species, positions, i, j, shifts, cells, graph) -> tuple[np.ndarray, np.ndarray]:
        """The kernel on numpy arrays (as `AceKernel.arrays`): per-atom energies (N,) and forces (N, 3), float64."""
        self._refresh()
        return call_kernel(self.lib.dp_energies_forces, self.params, "Deep Potential", species, positions, i, j,
                           shifts, cells, graph)
