"""Composition of energy terms: `Sum` of models and the per-element reference energies."""

from __future__ import annotations

import torch
from torch import nn

from .base import FFModel, build_model, register


@register("reference")
class AtomicReference(FFModel):
    """A constant energy per element (eV), fitted by least squares from the training data."""

    def __init__(self, energies: dict):
        super().__init__()
        energies = {int(z): float(e) for z, e in energies.items()}
        self.config = dict(energies={str(z): e for z, e in sorted(energies.items())})
        self._init_elements(energies)
        table = torch.zeros(119, dtype=torch.float64)
        for z, e in energies.items():
            table[z] = e
        self.register_buffer("table", table)

    def _apply(self, fn, *args, **kwargs):
        # Keep the table float64 whatever dtype the model moves to: reference energies are large
        # (hundreds of eV per atom) and float32 would round them at the meV level.
        table = self.table
        super()._apply(fn, *args, **kwargs)
        self.table = table.to(device=self.table.device)
        return self

    def forward(self, batch) -> torch.Tensor:
        # float64 per-atom energies; the learned terms' float32 energies are promoted when summed.
        return self.table[batch.numbers]


@register("sum")
class Sum(FFModel):
    """Sum of per-atom energies of several terms: priors and learned models compose, never fork."""

    def __init__(self, terms):
        super().__init__()
        built = [t if isinstance(t, nn.Module) else build_model(t) for t in terms]
        self.terms = nn.ModuleList(built)
        self.cutoff = max((t.cutoff for t in built), default=0.0)
        self.long_range = any(getattr(t, "long_range", False) for t in built)
        # a term that reads the structures' external field (`FieldResponse`) makes the whole model take one
        self.field_dependent = any(getattr(t, "field_dependent", False) for t in built)
        # the sum reads the charge only if every term but the reference energies does: a Δ model's learned term
        # on an MM prior does not, and answers every charge state as the one it was trained on
        energy_terms = [t for t in built if not isinstance(t, AtomicReference)]
        self.reads_total_charge = bool(energy_terms) and all(getattr(t, "reads_total_charge", False)
                                                             for t in energy_terms)
        elements = set()
        for t in built:
            elements |= set(t.elements)
        self._init_elements(elements)

    @property
    def config(self):
        return {"terms": [t.get_config() for t in self.terms]}

    def forward(self, batch) -> torch.Tensor:
        total = self.terms[0](batch)
        for term in self.terms[1:]:
            total = total + term(batch)
        return total
