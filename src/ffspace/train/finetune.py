"""Start training from a trained package (fine-tuning, multi-level recipes) and give parts of a model their own
learning rates or none.

A package fitted at one level of theory (GFN2-xTB) and fine-tuned at another (DFT) differs from it mostly by a
constant per element: the reference energies are refitted first, as a correction to the package's (least
squares on what the package leaves unexplained, minimum norm: with data of one composition only the total shift
is determined, and the correction stays as small as it can). Elements of the package that the new data lacks keep
their reference energies and their learned parameters: the fine-tuned model still takes every element it took.
"""

from __future__ import annotations

import sys
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import torch

from ..data.stats import composition_matrix
from ..errors import ConfigError
from ..models.composite import AtomicReference, Sum


def start_from_package(path, dataset, reference: str = "refit"):
    """The model of the package at ``path`` with its weights, ready to train on ``dataset``.

    ``reference``: ``"refit"`` corrects the per-element reference energies of the elements in ``dataset`` to
    what the package leaves unexplained there (the others are kept); ``"keep"`` leaves them as they are."""
    from ..potential.package import load_package, resolve_package_path

    path = resolve_package_path(path)
    if not path.is_file():
        raise ConfigError(f"train.init_from: no model package at {path}")
    model, _ = load_package(path)
    missing = sorted(set(dataset.elements) - set(model.elements))
    if missing:
        from ase.data import chemical_symbols

        raise ConfigError(f"train.init_from: the package {path} was trained on elements "
                          f"{[chemical_symbols[z] for z in model.elements]}; the training data {dataset.name!r} "
                          f"also has {[chemical_symbols[z] for z in missing]}, which it cannot take")
    if reference == "refit":
        model = _refit_reference(model, dataset, path)
    elif reference != "keep":
        raise ConfigError(f"train.init_reference must be 'refit' or 'keep', got {reference!r}")
    return model


def _refit_reference(model, dataset, path):
    from ..evaluate.metrics import predict
    from ..potential import Potential

    refs = [k for k, t in enumerate(getattr(model, "terms", [])) if isinstance(t, AtomicReference)]
    if not isinstance(model, Sum) or len(refs) != 1:
        raise ConfigError(f"train.init_from: the package {path} has no single per-element reference term to "
                          f"refit; set train.init_reference=keep")
    if hasattr(dataset, "in_file_order"):  # on disk: one pass over its blocks
        dataset = dataset.in_file_order()
    dataset.require_labels(energy=True, forces=False)
    # What the package leaves unexplained, by least squares over the compositions (streamed: no copy of the set).
    pred = predict(Potential(model, dtype=torch.float64), dataset)
    labels = np.array([s.energy for s in dataset])
    elements = dataset.elements
    a = composition_matrix(dataset, elements)
    correction = dict(zip(elements, np.linalg.lstsq(a, labels - pred["energy"], rcond=None)[0].tolist()))
    old = model.terms[refs[0]]
    energies = {z: float(old.table[z]) for z in old.elements}
    for z, d in correction.items():
        energies[z] = energies.get(z, 0.0) + d
    model.terms[refs[0]] = AtomicReference(energies).to(device=old.table.device)
    shift = np.mean([abs(d) for d in correction.values()])
    print(f"train.init_from: reference energies of {len(correction)} element(s) refitted to the data "
          f"(mean |correction| {shift:.4g} eV)", file=sys.stderr)
    kept = sorted(set(old.elements) - set(correction))
    if kept:
        from ase.data import chemical_symbols

        # Nothing in the data says how far these elements' atoms move with the new level of theory: their forces
        # and the relative energies of one composition stay right, but absolute energies of molecules holding
        # them are on the package's scale, off by that level's per-atom offset.
        print(f"train.init_from: {[chemical_symbols[z] for z in kept]} are not in the training data: their "
              f"reference energies stay the package's ({path}); absolute energies of molecules with them are on "
              "its level of theory (forces and relative energies of one composition are unaffected)",
              file=sys.stderr)
    return model


def parameter_groups(model, lr_scale: dict[str, float], freeze: list[str]) -> list[dict]:
    """AdamW parameter groups: parameters whose name matches a ``freeze`` pattern (fnmatch, e.g.
    ``terms.1.embedding.*``) stop training; the others take the factor of the first ``lr_scale`` pattern they match
    (1 if none), as ``lr_scale`` in their group, which the schedule multiplies into every learning rate. A
    pattern that matches no parameter is an error (a typo would otherwise train what it meant to freeze)."""
    names = [name for name, _ in model.named_parameters()]
    for kind, patterns in (("train.freeze", freeze), ("train.lr_scale", list(lr_scale))):
        for pattern in patterns:
            if not any(fnmatchcase(n, pattern) for n in names):
                tops = sorted({".".join(n.split(".")[:3]) for n in names})
                raise ConfigError(f"{kind}: the pattern {pattern!r} matches no parameter of the model; its "
                                  f"parameters start with {tops} (full names: model.named_parameters())")
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if any(fnmatchcase(name, pattern) for pattern in freeze):
            if p.requires_grad:  # (a Δ model's fixed prior stays the package's: frozen for good)
                p.requires_grad_(False)
                p.frozen_by_train_freeze = True  # this run's choice, not the package's: its package trains them
            continue
        if not p.requires_grad:  # frozen in the package (a Δ model's prior)
            continue
        scale = next((float(f) for pattern, f in lr_scale.items() if fnmatchcase(name, pattern)), 1.0)
        groups.setdefault(scale, []).append(p)
    if not groups:
        raise ConfigError("train.freeze leaves no parameter to train")
    return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]
