"""Build a model for a dataset: reference energies and energy scale from the data (MACE's habit)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.stats import reference_energies
from ..errors import ConfigError
from ..models.base import MODEL_REGISTRY, build_model
from ..models.composite import AtomicReference, Sum
from ..models.electrostatics import LearnedCoulomb
from ..models.zbl import ZBL


def build_model_for_data(model_config: dict, dataset, seed: int = 0):
    """``Sum(AtomicReference(fitted), learned[, ZBL])`` for the elements of ``dataset``.

    ``model_config`` is ``{"family": "painn", ..., "zbl": false, "coulomb": false}``; ``coulomb`` adds
    learned charges with long-range electrostatics. The learned term's energy
    scale is the force RMS of the data, so a unit-variance network output has the right size.
    Weights are initialised from ``seed`` without touching torch's global random state.
    """
    cfg = dict(model_config)
    family = cfg.pop("family", None)
    zbl = cfg.pop("zbl", False)
    coulomb = cfg.pop("coulomb", False)
    if family not in MODEL_REGISTRY or family in ("sum", "reference"):
        raise ConfigError(f"model.family must be a learned family, one of "
                          f"{sorted(set(MODEL_REGISTRY) - {'sum', 'reference', 'zbl'})}; got {family!r}")
    dataset.require_labels(energy=True, forces=False)
    elements = dataset.elements
    ref = reference_energies(dataset, elements)
    forces = [s.forces for s in dataset if s.forces is not None]
    scale = float(np.sqrt((np.concatenate(forces) ** 2).mean())) if forces else 1.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        terms = [AtomicReference(ref)]
        if family != "zbl":
            terms.append(build_model({"family": family, "elements": elements, "energy_scale": scale, **cfg}))
        if zbl or family == "zbl":
            terms.append(ZBL(cutoff=min(3.0, float(cfg.get("cutoff", 3.0)))))
        if coulomb:  # ML short range + learned, charge-conserving charges with Coulomb / Ewald long range
            terms.append(LearnedCoulomb(elements, cutoff=min(4.0, float(cfg.get("cutoff", 4.0)))))
    return Sum(terms)
