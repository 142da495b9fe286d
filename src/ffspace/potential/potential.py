"""`Potential`: energy, forces = −∂E/∂r and stress from any model, by autograd, computed in one place."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..graph.batch import Batch, collate, graph_of

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype itself) as a torch dtype: the one map of dtype names."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")


def torch_device(device) -> torch.device:
    """A torch device that exists on this machine; a clear `ConfigError` otherwise (e.g. cuda without a GPU)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a device torch knows ({exc}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: CUDA is not available here (this torch "
                              f"{torch.__version__} {'has no CUDA support' if torch.version.cuda is None else 'finds no GPU'}); "
                              "use device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {device!r}: Apple MPS is not available here; use device=cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {device!r}: ffspace runs on cpu, cuda or mps")
    return dev


def structure_totals(energies: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Each structure's total energy (G,) from per-atom ``energies``, in float64 even for a float32 model: at
    |E| ~ 10⁴ eV one float32 step is ~1 meV, the size of the errors we want to measure."""
    energy = torch.zeros(batch.n_atoms.shape[0], dtype=torch.float64, device=energies.device)
    return energy.index_add(0, batch.graph_index, energies.to(torch.float64))


class Potential:
    """Wraps a model (per-atom energies) into energies, forces, stress and per-atom energies.

    ``dtype`` and ``device`` are settings of the potential: the model is moved there, the batch
    is cast there. Stress follows ASE: σ = (1/V) ∂E/∂ε, cell vectors as rows.
    """

    def __init__(self, model, dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
                 fast: bool | str = "auto"):
        """``fast``: energy and forces through the fast path (`ffspace.potential.fast`), checked against the eager
        result on first use, eager with a warning where it cannot be used. ``"auto"`` (the default): only where a
        family has hand-derived forces (linear ACE, a compressed Deep Potential and the MACE-style model: in C kernels
        built on this machine, `ffspace.potential.native`, `native_dp`, `native_mace`, ~10x, 3.6x and 5-7x the eager
        call on aspirin; Deep Potential's nets in torch); ``True``: also a torch.compile'd graph for the other families
        (1.0-1.4x on 2 CPU cores, a minute of compiling: docs/benchmarks.md); ``False``: always eager autograd."""
        dtype = torch_dtype(dtype)
        self.dtype, self.device = dtype, torch_device(device)
        # nn.Module.to works in place: convert a copy when needed, so a model held elsewhere (or by
        # another Potential in another dtype) is never changed under its owner's feet.
        params = list(model.parameters())
        if params and (params[0].dtype != dtype or params[0].device != self.device):
            model = copy.deepcopy(model)
        self.model = model.to(device=self.device, dtype=dtype)
        self.cutoff = float(model.cutoff)
        self.elements = list(model.elements)
        # The total charges (e) of the structures a loaded package was trained on, when it records them: a model
        # that reads no charge is then refused other charge states (`check_charges`). None: not known, no check.
        self.trained_charges: list[float] | None = None
        self.fast = None
        if fast not in (True, False, "auto"):
            raise ConfigError(f"fast must be true, false or 'auto', got {fast!r}")
        if fast:
            from .fast import FastForces

            self.fast = FastForces(self, compile=fast is True)

    def check_elements(self, structures) -> None:
        """Raise a `DataError` naming the structure and element the model was not trained on."""
        if not self.elements:
            return
        known = set(self.elements)
        for s in structures:
            unknown = sorted(set(s.numbers.tolist()) - known)
            if unknown:
                from ase.data import chemical_symbols

                names = [chemical_symbols[z] for z in unknown]
                raise DataError(f"element(s) {names} unknown to this model (it knows "
                                f"{[chemical_symbols[z] for z in self.elements]})",
                                file=s.source, frame=s.frame, field="numbers")

    def check_charges(self, structures) -> None:
        """Raise a `DataError` naming the structure whose total charge the model never saw, when the model reads
        no charge (its answer would be that of the charge state it was trained on: a neutral-molecule model on a
        carboxylate) and its package records the charges of its training data. Called where a model is run (MD,
        the ASE calculator), not where it is evaluated: measuring it on an unseen charge state is legitimate."""
        for s in structures:
            problem = self._unseen_charge(float(s.info.get("charge", 0.0)))
            if problem:
                raise DataError(problem, file=s.source, frame=s.frame, field="charge")

    def check_total_charge(self, charge: float, where: str = "charge") -> None:
        """`check_charges` for an engine interface given one total charge (e) as an argument (OpenMM, LAMMPS,
        TorchSim): a `ConfigError` naming the argument ``where``."""
        problem = self._unseen_charge(float(charge))
        if problem:
            raise ConfigError(f"{where}: {problem}")

    def _unseen_charge(self, charge: float) -> str | None:
        return unseen_charge(charge, self.trained_charges, getattr(self.model, "reads_total_charge", False))

    @property
    def field_dependent(self) -> bool:
        """Whether the model takes an external electric field (a `FieldResponse` term)."""
        return bool(getattr(self.model, "field_dependent", False))

    def compute(self, batch: Batch, forces: bool = True, stress: bool = False, training: bool = False,
                fast: bool = True, dipole: bool = False, polarizability: bool = False) -> dict:
        """Return ``energy`` (G,), ``energies`` (N,) and, when asked, ``forces`` (N, 3) and ``stress`` (G, 3, 3);
        for a field-dependent model also ``dipole`` μ = −∂E/∂ℰ (G, 3) e·Å and ``polarizability`` α = −∂²E/∂ℰ²
        (G, 3, 3) e·Å²/V, at the batch's fields (zero where it has none), forces included in the same call.

        ``training=True`` keeps the graph of the force computation so a loss on forces can be
        back-propagated (double backward). It also sets the model's train/eval mode, so models may cache
        what does not depend on positions between evaluation calls (graph-learned MM caches its parameters).
        Energy and forces go through the fast path when the potential has one (and ``fast``).
        """
        if self.model.training != training:
            self.model.train(training)
        batch = batch.to(device=self.device, dtype=self.dtype)
        field = self._field(batch, dipole or polarizability)
        if fast and self.fast is not None and forces and not stress and not training and field is None:
            out = self.fast.compute(batch)
            if out is not None:
                return out
        positions = batch.positions.detach().requires_grad_(forces or stress)
        cell = batch.cell
        inputs = [positions]
        if field is not None:
            field = field.detach().requires_grad_(dipole or polarizability)
            batch = replace(batch, field=field)
        if stress:
            # Homogeneous strain ε applied to positions and cell; σ = (1/V) ∂E/∂ε.
            strain = torch.zeros((batch.n_graphs, 3, 3), dtype=self.dtype, device=self.device, requires_grad=True)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, sym[batch.graph_index])
            cell = cell + torch.bmm(cell, sym)
            inputs.append(strain)
        model_batch = replace(batch, positions=positions, cell=cell)
        energies = self.model(model_batch)
        energy = structure_totals(energies, batch)
        out = {"energy": energy, "energies": energies}
        response = dipole or polarizability
        if forces or stress or response:
            # one backward pass for forces, stress and dipole
            wrt = (inputs if forces or stress else []) + ([field] if response else [])
            if energy.requires_grad:
                grads = torch.autograd.grad(energy.sum(), wrt, create_graph=training or polarizability,
                                            allow_unused=True)
            else:  # a model of constants only (e.g. reference energies): no geometry dependence at all
                grads = [None] * len(wrt)
            if response:
                *grads, g_field = grads
                out["dipole"] = -g_field if g_field is not None else torch.zeros_like(field)
                if polarizability:
                    out["polarizability"] = self._polarizability(out["dipole"], field, training)
            if forces:
                g = grads[0] if grads[0] is not None else torch.zeros_like(batch.positions)
                out["forces"] = -g
            if stress:
                g = grads[-1] if grads[-1] is not None else torch.zeros_like(strain)
                volume = torch.abs(torch.linalg.det(batch.cell))
                periodic = batch.pbc.any(dim=1)
                volume = torch.where(periodic, volume, torch.ones_like(volume))
                out["stress"] = torch.where(periodic[:, None, None], g / volume[:, None, None],
                                            torch.full_like(g, float("nan")))
        if not training:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def _field(self, batch: Batch, response: bool):
        """The batch's fields for the model (None when the model takes none); refuses a field for a model trained
        without one, and a response asked of such a model."""
        if not self.field_dependent:
            if response:
                raise ConfigError("dipole or polarizability asked of a model without a field response (train it "
                                  "with model.field=true on data with dipole labels)")
            if batch.field is not None and bool((batch.field != 0).any()):
                raise DataError("this model was trained without an external electric field and cannot take one: a "
                                "structure carries a non-zero info['field'] (train with model.field=true)",
                                field="field")
            return None
        if batch.field is None:  # no field: zero, where a response (the permanent dipole) is asked for
            return torch.zeros((batch.n_graphs, 3), dtype=self.dtype, device=self.device) if response else None
        return batch.field

    @staticmethod
    def _polarizability(dipole, field, training: bool):
        """α_ab = ∂μ_a/∂ℰ_b (G, 3, 3), one backward pass per component a (structures do not couple)."""
        if not dipole.requires_grad:  # a response linear in the field (charges only): α = 0
            return torch.zeros(dipole.shape + (3,), dtype=dipole.dtype, device=dipole.device)
        rows = []
        for a in range(3):
            (g,) = torch.autograd.grad(dipole[:, a].sum(), [field], create_graph=training, retain_graph=True,
                                       allow_unused=True)
            rows.append(torch.zeros_like(field) if g is None else g)
        return torch.stack(rows, 1)

    def batch(self, structures, labels: bool = False) -> Batch:
        self.check_elements(structures)
        return collate([graph_of(s, self.cutoff) for s in structures], dtype=self.dtype, device=self.device,
                       labels=labels)

    def predict(self, graphs_or_structures, batch_size: int = 32, stress: bool = False) -> dict:
        """Energies (G,), per-atom energies and forces (N_total, ...), if asked stress, and for a field-dependent
        model the dipoles (G, 3) e·Å, as float64 numpy.

        Accepts pre-computed `GraphData` (fast: no neighbor search) or `Structure` objects.
        """
        options = {"dipole": True} if self.field_dependent else {}
        return predict_arrays(self, graphs_or_structures, ("energy", "energies", "forces", "stress", "dipole"),
                              batch_size, stress=stress, **options)

    def __call__(self, structures, stress: bool = False, batch_size: int = 32) -> dict:
        """Evaluate a list of `Structure`; energies as a list, forces and per-atom energies per structure."""
        structures = list(structures)
        pred = self.predict(structures, batch_size, stress)
        cuts = np.cumsum([s.n_atoms for s in structures])[:-1]
        out = {"energy": pred["energy"].tolist(), "energies": np.split(pred["energies"], cuts),
               "forces": np.split(pred["forces"], cuts)}
        if stress:
            out["stress"] = list(pred["stress"])
        return out

    @classmethod
    def load(cls, path, dtype: torch.dtype | str = torch.float32, device="cpu",
             fast: bool | str = "auto") -> "Potential":
        """Load a model package (safetensors + JSON; no code is executed). The weights go straight into a model
        of ``dtype``: a float64 package loaded as float64 is exact. ``fast``: see `Potential`."""
        from .package import load_package

        model, meta = load_package(path, dtype=torch_dtype(dtype))
        potential = cls(model, dtype=dtype, device=device, fast=fast)
        charges = (meta.get("extra") or {}).get("total_charges_e")
        if charges is not None:
            potential.trained_charges = [float(q) for q in charges]
        return potential


def unseen_charge(charge: float, trained: list[float] | None, reads_charge: bool) -> str | None:
    """Why a model that was trained on total charges ``trained`` (None: not recorded) should not be run at
    ``charge`` (e), or None where it may: it reads the charge, or saw that one (within 1e-3 e: charges summed from
    partial charges)."""
    if trained is None or reads_charge or any(abs(charge - q) <= 1e-3 for q in trained):
        return None
    return (f"total charge {charge:g} e, but this model reads no charge and was trained on total charge(s) "
            f"{trained} only")


def predict_arrays(evaluator, graphs_or_structures, keys, batch_size: int = 32, **compute_options) -> dict:
    """``evaluator.compute`` (a `Potential`'s, or a committee's) over batches of ``batch_size``: the outputs
    named in ``keys`` that it gives, concatenated over batches as float64 numpy.

    Accepts pre-computed `GraphData` (fast: no neighbor search) or `Structure` objects (their elements are
    checked against the model's first).
    """
    items = list(graphs_or_structures)
    if items and not hasattr(items[0], "i"):
        evaluator.check_elements(items)
        items = [graph_of(s, evaluator.cutoff) for s in items]
    parts = {key: [] for key in keys}
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size], dtype=evaluator.dtype, device=evaluator.device,
                        labels=False)
        out = evaluator.compute(batch, forces=True, **compute_options)
        for key in parts:
            if key in out:
                parts[key].append(out[key].double().cpu().numpy())
    return {key: np.concatenate(v) for key, v in parts.items() if v}
