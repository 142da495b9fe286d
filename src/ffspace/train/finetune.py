"""Start training from a trained package (fine-tuning, multi-level recipes) and give parts of a model their own
learning rates or none.

A package fitted at one level of theory (GFN2-xTB) and fine-tuned at another (DFT) differs from it mostly by a
constant per element: the reference energies are refitted first, as a correction to the package's (least
squares on what the package leaves unexplained, minimum norm: with data of one composition only the total shift
is determined, and the correction stays as small as it can; a large shift split that way is warned about).
Elements of the package that the new data lacks keep their reference energies and their learned parameters: the
fine-tuned model still takes every element it took.
"""

from __future__ import annotations

import sys
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import torch

from ..data.stats import composition_matrix
from ..errors import ConfigError, DataError
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

        first = next(s for s in _in_file_order(dataset) if set(s.numbers.tolist()) & set(missing))
        raise DataError(f"train.init_from: the package {path} was trained on elements "
                        f"{[chemical_symbols[z] for z in model.elements]}; the training data {dataset.name!r} "
                        f"also has {[chemical_symbols[z] for z in missing]}, which it cannot take",
                        file=first.source, frame=first.frame, field="numbers")
    if reference == "refit":
        model = _refit_reference(model, dataset, path)
    elif reference != "keep":
        raise ConfigError(f"train.init_reference must be 'refit' or 'keep', got {reference!r}")
    return model


def _refit_reference(model, dataset, path):
    from ..potential import Potential

    refs = [k for k, t in enumerate(getattr(model, "terms", [])) if isinstance(t, AtomicReference)]
    if not isinstance(model, Sum) or len(refs) != 1:
        raise ConfigError(f"train.init_from: the package {path} has no single per-element reference term to "
                          f"refit; set train.init_reference=keep")
    dataset = _in_file_order(dataset)
    dataset.require_labels(energy=True, forces=False)
    # What the package leaves unexplained, by least squares over the compositions.
    unexplained = np.array(list(_energies_left(Potential(model, dtype=torch.float64), dataset)))
    elements = dataset.elements
    a = composition_matrix(dataset, elements)
    correction = dict(zip(elements, np.linalg.lstsq(a, unexplained, rcond=None)[0].tolist()))
    _warn_if_underdetermined(a, unexplained, elements, path)
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


def _in_file_order(dataset):
    """The set in the order its file holds it (on disk: one pass over its blocks), else as it is."""
    return dataset.in_file_order() if hasattr(dataset, "in_file_order") else dataset


def _energies_left(potential, dataset, batch_size: int = 32):
    """Each structure's label minus the package's energy, in order, a batch at a time: no forces, and never more
    than one batch in memory (a set larger than memory can be fine-tuned on)."""
    chunk = []
    for s in dataset:
        chunk.append(s)
        if len(chunk) == batch_size:
            yield from _left(potential, chunk)
            chunk = []
    if chunk:
        yield from _left(potential, chunk)


def _left(potential, structures):
    with torch.no_grad():
        energy = potential.compute(potential.batch(structures), forces=False)["energy"]
    return [s.energy - e for s, e in zip(structures, energy.double().cpu().tolist())]


def _warn_if_underdetermined(a: np.ndarray, unexplained: np.ndarray, elements, path) -> None:
    """Say so when the data fix fewer per-element offsets than there are elements and a large shift had to be
    split among them: the split is the smallest correction (minimum norm), not a measured one, so absolute
    energies of other compositions can be far off (a set of one molecule on another energy reference, e.g.
    atomisation energies against a package of total energies)."""
    rank = np.linalg.matrix_rank(a)
    per_atom = float(np.abs(unexplained).mean() / a.sum(1).mean())
    if rank < len(elements) and per_atom > 0.1:  # eV/atom: beyond what a change of DFT functional shifts
        from ase.data import chemical_symbols

        print(f"train.init_from: WARNING: the package {path} is off by {per_atom:.3g} eV/atom on average on this "
              f"data, and its {len(elements)} elements {[chemical_symbols[z] for z in elements]} come in only "
              f"{rank} independent composition(s): the per-element reference energies are split by minimum norm, "
              "so absolute energies of other compositions can be off by as much. Fine-tune on data of several "
              "compositions, or on the package's energy reference (train.init_reference=keep keeps its offsets)",
              file=sys.stderr)


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
