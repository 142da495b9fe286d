"""The fast inference path: energy and forces of a model in one `torch.compile`d graph (issue 29, first part), or,
for linear ACE, Deep Potential and the MACE-style model, hand-derived forces without autograd: in C kernels
(`ffspace.potential.native`, `native_dp` for a compressed Deep Potential, `native_mace`) on the CPU, in torch
(`ffspace.potential.analytic`, `analytic_dp`; MACE-style: none, it is compiled or eager) elsewhere. MD calls a C
kernel straight from numpy once the first call has been checked (`FastForces.direct`).

`Potential`'s default ``fast="auto"`` uses only the hand-derived paths (linear ACE: ~10x its eager call on aspirin,
13x on 24 000 waters; compressed Deep Potential 3.6x, uncompressed 1.3x; MACE-style 5-7x, its radial MLPs
tabulated); ``fast=True`` also compiles the other families: their energy *and* the backward pass that
gives the forces (``torch.autograd.grad`` traced inside the graph) become one graph with dynamic shapes (the edge
count changes every MD step, so nothing is recompiled for it), removing the per-operation overhead of eager PyTorch.
On 2 CPU cores and aspirin that gains 1.0-1.4x for PaiNN and MACE and nothing for SchNet and ANI
(`benchmarks/fast_path.py`, docs/benchmarks.md): at these model widths the compiled call is mostly matrix
arithmetic, so compiling is not the default. Compiled code is built on this machine (inductor at first use, cached on
disk by torch; the C kernel by `ffspace.kernels.build`); a package stays safetensors + JSON and nothing compiled is
ever loaded from it.

Guarantees: the first call compares the compiled result with the eager one on the same batch (float32: energies
within 1e-3 eV, forces within 1e-4 eV/Å; float64: 1e-8) and uses it only if it agrees; a model that fails to
compile, or disagrees, runs eagerly from then on, after one `FastPathWarning`. Training and stress always run eagerly, and
so do graphs large enough to be chunked (`ffspace.models.chunking`) unless the path is a C kernel or linear ACE's
hand-derived forces, which hold no per-edge activations. The energy tolerance is absolute on each structure's total; the C kernel computes
in float64, so where it misses the float32 eager result it is compared with the float64 eager evaluation of the same
weights instead (the float32 total of 24 000 water atoms is itself 0.02 eV off the exact one).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..models.chunking import MAX_EDGES
from ..models.ace import LinearACE
from .potential import structure_totals

TOLERANCE = {torch.float32: (1e-3, 1e-4), torch.float64: (1e-8, 1e-8)}  # (energy eV, forces eV/Å)


class FastPathWarning(UserWarning):
    """The fast path of a model could not be used: it runs eagerly (same numbers, slower)."""


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _energies_forces(model, batch):
    energies = model(batch)
    # The sum over all atoms has the gradient of the sum of the structures' totals. (The float64 totals are
    # summed outside: inductor's CPU code for a float64 scatter-add with dynamic sizes fails to build.)
    (gradient,) = torch.autograd.grad(energies.sum(), [batch.positions])
    return energies.detach(), -gradient


def _differences(out, eager) -> tuple[float, float]:
    """Largest |ΔE| of a structure (eV) and |ΔF| of a component (eV/Å) between two results (NaN when either is)."""
    de = float((out["energy"] - eager["energy"].to(out["energy"].dtype)).abs().max())
    forces = out["forces"].to(torch.float64)
    df = float((forces - eager["forces"].to(torch.float64)).abs().max()) if forces.numel() else 0.0
    return de, df


def _kernel_term(model):
    """The model's term that has a C kernel (linear ACE, a compressed Deep Potential, MACE-style), or None."""
    from .native_dp import supports as dp_supports
    from .native_mace import supports as mace_supports

    return next((t for t in getattr(model, "terms", [model])
                 if isinstance(t, LinearACE) or dp_supports(t) or mace_supports(t)), None)


def _native_kernel(model, instead: str = "its hand-derived forces run in torch"):
    """The C kernel for the model's linear ACE, compressed Deep Potential or MACE-style term, or None (after one
    `FastPathWarning` saying what runs ``instead``) where it cannot be built."""
    from ..kernels.build import KernelUnavailable
    from .native import AceKernel
    from .native_dp import DPKernel
    from .native_mace import MaceKernel, supports as mace_supports

    term = _kernel_term(model)
    name, kernel = (("linear ACE", AceKernel) if isinstance(term, LinearACE) else
                    ("MACE", MaceKernel) if mace_supports(term) else ("Deep Potential", DPKernel))
    try:
        return kernel(term)
    except Exception as exc:  # noqa: BLE001 - no compiler, no cache folder, anything: the torch version runs
        why = str(exc) if isinstance(exc, KernelUnavailable) else f"{type(exc).__name__}: {exc}"
        warnings.warn(FastPathWarning(f"{name}'s C kernel is not available ({why}); {instead}"), stacklevel=4)
        return None


def _leaf_terms(model) -> list:
    """A model's terms with nested sums flattened (a frozen Δ prior package is itself a sum: reference + MM)."""
    from ..models.composite import Sum

    return [leaf for t in (model.terms if isinstance(model, Sum) else [model])
            for leaf in (_leaf_terms(t) if isinstance(t, Sum) else [t])]


def _priors(model) -> list:
    """The terms of a model with a C kernel that are neither that term nor reference energies (ZBL, a classical MM
    prior...): evaluated by autograd beside the kernel on a batch, and on molecules in MD by `direct_priors`."""
    from ..models.composite import AtomicReference

    kernel_term = _kernel_term(model)
    return [t for t in _leaf_terms(model) if t is not kernel_term and not isinstance(t, AtomicReference)]


class FastForces:
    """``compute(batch)`` → ``{"energy", "energies", "forces"}`` through the compiled graph, or None when the
    batch (or, after a failure, this model) must go the eager way."""

    def __init__(self, potential, compiler=None, compile: bool = True):
        """``compile=False`` (`Potential`'s ``fast="auto"``): only a hand-derived path; other models run eagerly,
        silently."""
        from . import analytic

        self.potential = potential
        self.state = "new"  # new → checked (compiled result agreed) or off (eager from now on)
        self._compiler = compiler or (lambda fn: torch.compile(fn, dynamic=True))
        self._compiled = None
        self.native, self.kernel, self._bounded_memory = False, None, False
        # Linear ACE and Deep Potential have hand-derived forces (no autograd, nothing to compile): the same
        # first-call check applies. On the CPU linear ACE and a compressed Deep Potential run in C kernels
        # (ffspace.potential.native, native_dp) where they build; the torch versions otherwise. The MACE-style
        # model's hand-derived forces exist only as a C kernel (native_mace): without it, it is compiled or eager.
        model, kernel, on_cpu = potential.model, None, potential.device.type == "cpu"
        self.analytic = analytic.supports(model)
        if self.analytic and on_cpu and _kernel_term(model) is not None:
            kernel = _native_kernel(model)
        elif not self.analytic and on_cpu and analytic.kernel_only(model):
            kernel = _native_kernel(model, "it runs " + ("compiled" if compile else "eagerly"))
            self.analytic = kernel is not None
        if self.analytic:
            self.native, self.kernel = kernel is not None, kernel
            # per-edge memory of a few numbers: a C kernel, or linear ACE in torch (its tensors are per atom);
            # Deep Potential in torch holds (edges, M1, 4) tensors, and priors beside a kernel run by autograd, so a
            # huge graph goes the chunked eager way
            self._bounded_memory = (self.native or isinstance(_kernel_term(model), LinearACE)) and not _priors(model)
            self._compiled = lambda b: _no_grad(analytic.energies_forces, model, b, kernel)
        elif not compile:
            self.state = "off"

    def compute(self, batch) -> dict | None:
        from dataclasses import replace

        if self.state == "off" or (batch.edge_index.shape[1] > MAX_EDGES and not self._bounded_memory):
            return None  # a compiled graph would hold every edge's activations: chunked eager in bounded memory
        positions = batch.positions.detach().requires_grad_(not self.analytic)
        batch = replace(batch, positions=positions)
        try:
            if self._compiled is None:
                model = self.potential.model  # closed over, not an argument: guards on every parameter cost ms
                self._compiled = self._compiler(lambda b: _energies_forces(model, b))
            if self.analytic:
                energies, forces = self._compiled(batch)
            else:  # the backward pass inside the graph: dynamo traces torch.autograd.grad only when asked to
                with torch._dynamo.config.patch(trace_autograd_ops=True):
                    energies, forces = self._compiled(batch)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eagerly, and say so once
            what = "its hand-derived forces failed" if self.analytic else "it could not be compiled"
            self._give_up(f"{what} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            return None
        if self.native and not torch.isfinite(energies).all():
            return None  # e.g. a pair closer than the MACE kernel's radial tables start: the eager model decides
        out = {"energy": structure_totals(energies, batch), "energies": energies, "forces": forces.detach()}
        if self.state == "new":
            problem = self._disagreement(batch, out)
            if problem:
                self._give_up(problem)
                return None
            self.state = "checked"
        return out

    def direct(self, numbers: np.ndarray, cell: np.ndarray, pbc: np.ndarray, copies: int = 1, charge: float = 0.0):
        """For a structure whose atoms and cell stay fixed (an MD run), or ``copies`` independent copies of it
        integrated as one state (`ffspace.md.MoleculeCopies`): ``evaluate(positions, i, j, shifts) → (energies eV
        (copies,), forces eV/Å (copies·N, 3))`` in float64 numpy through the C kernel, without building a torch batch
        (~0.2 ms of a 21-atom step), or None where the model has no C kernel. Positions are all copies' (copies·N,
        3); i, j index them (a copy's pairs offset by its first atom). The numbers are those of `compute`: positions,
        cell and forces rounded to the potential's dtype as a batch would round them, the reference energies added
        in float64. The caller uses it only once `compute` has checked the fast path (``state == "checked"``).
        Priors beside the kernel (the classical MM prior, ZBL) come from `direct_priors` on molecules (total
        ``charge`` e); any other prior, or a periodic cell, keeps the batch path (None)."""
        if not self.native:
            return None
        from ..models.composite import AtomicReference
        from .direct_priors import direct_prior

        priors = [direct_prior(t, numbers, copies, charge) for t in _priors(self.potential.model)]
        if priors and (None in priors or bool(np.asarray(pbc).any())):
            return None  # (these priors run by autograd on a batch: `compute`)

        model, kernel = self.potential.model, self.kernel
        numbers = np.asarray(numbers)
        n_atoms = len(numbers)
        species = kernel.term.species(torch.as_tensor(numbers.astype(np.int64))).numpy()
        species = np.ascontiguousarray(np.tile(species, copies), dtype=np.int64)
        reference = np.zeros(n_atoms)
        for term in _leaf_terms(model):
            if isinstance(term, AtomicReference):
                reference += term.table.cpu().numpy()[numbers]
        rounding = np.float32 if self.potential.dtype == torch.float32 else np.float64
        cells = np.ascontiguousarray(np.repeat(np.asarray(cell, dtype=rounding).astype(np.float64)[None], copies, 0))
        graph = np.repeat(np.arange(copies, dtype=np.int64), n_atoms)
        periodic = bool(np.asarray(pbc).any())

        def evaluate(positions, i, j, shifts):
            energies, forces = kernel.arrays(species, np.ascontiguousarray(positions.astype(rounding), dtype=np.float64),
                                             np.ascontiguousarray(i, dtype=np.int64),
                                             np.ascontiguousarray(j, dtype=np.int64),
                                             np.ascontiguousarray(shifts, dtype=np.float64) if periodic else None,
                                             cells, graph)
            totals = (energies.reshape(copies, n_atoms) + reference).sum(1)
            forces = forces.astype(rounding).astype(np.float64)
            if priors:
                rounded = positions.astype(rounding).astype(np.float64)
                for prior in priors:
                    e, f = prior(rounded, i, j)
                    totals, forces = totals + e, forces + f.astype(rounding)
            return totals, forces
        return evaluate

    def _disagreement(self, batch, out) -> str | None:
        e_tol, f_tol = TOLERANCE[self.potential.dtype]
        de, df = _differences(out, self.potential.compute(batch, forces=True, fast=False))
        if de <= e_tol and df <= f_tol:
            return None
        if self.potential.dtype == torch.float32 and self.native and de == de and df == df:
            # The C kernel computes in float64: where it is further than allowed from the float32 eager result, that
            # result's own rounding (~1e-3 eV on 24 000 atoms) may be the difference. It passes if it is within the
            # float32 tolerances of the exact (float64) eager evaluation of the same weights.
            from .potential import Potential

            exact = Potential(self.potential.model, dtype=torch.float64, device=self.potential.device, fast=False)
            de64, df64 = _differences(out, exact.compute(batch.to(dtype=torch.float64), forces=True))
            if de64 <= e_tol and df64 <= f_tol:
                return None
            de, df = max(de, de64), max(df, df64)
        return (f"its fast-path energy and forces differ from the eager ones (|ΔE| {de:.3g} eV, |ΔF| {df:.3g} eV/Å; "
                f"allowed {e_tol:g}, {f_tol:g})")

    def _give_up(self, why: str) -> None:
        self.state = "off"
        model = self.potential.model
        name = " + ".join(type(m).__name__ for m in getattr(model, "terms", [model]))  # a Sum's terms by name
        warnings.warn(FastPathWarning(f"fast path off for this {name} model: {why}; it runs eagerly"), stacklevel=3)
