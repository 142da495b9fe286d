"""Build a model for a dataset: reference energies and energy scale from the data (MACE's habit)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.stats import reference_energies, statistics
from ..data.label_check import refuse_constant_labels
from ..errors import ConfigError
from ..models.base import MODEL_REGISTRY, build_model
from ..models.composite import AtomicReference, Sum
from ..models.dispersion import D4Dispersion
from ..models.electrostatics import LearnedCoulomb
from ..models.mm import ClassicalMM
from ..models.field import FieldResponse
from ..models.morse import MorsePairs
from ..models.zbl import ZBL


def build_model_for_data(model_config: dict, dataset, seed: int = 0):
    """``Sum(AtomicReference(fitted), learned[, ZBL])`` for the elements of ``dataset``.

    ``model_config`` is ``{"family": "painn", ..., "zbl": false, "coulomb": false, "prior": null}``;
    ``coulomb`` adds learned charges with long-range electrostatics; ``field`` adds the response to a uniform
    external electric field (`FieldResponse`: dipole and polarizability from learned charges and polarizabilities),
    and ``field="input"`` also gives the field to an equivariant family as an input vector (MACE, PaiNN); ``prior`` makes a Δ-model: ``"mm"``
    fits a classical MM term jointly with the ML correction (``"mm_morse"``: the same with Morse bonds, whose
    restoring force softens with the stretch), ``"morse"`` its reactive mode (pairwise Morse bonds
    without a topology, so bonds may break and form), a model-package path adds that trained model
    frozen (and the reference energies and scale are fitted to what it leaves unexplained); ``dispersion``
    names a functional (e.g. ``"pbe"``) and adds a fixed DFT-D4 prior with its damping (molecules only). The learned term's energy
    scale is the force RMS of the data, so a unit-variance network output has the right size.
    Weights are initialised from ``seed`` without touching torch's global random state.
    """
    cfg = dict(model_config)
    family = cfg.pop("family", None)
    zbl = cfg.pop("zbl", False)
    coulomb = cfg.pop("coulomb", False)
    field = cfg.pop("field", False) or False
    if field not in (False, True, "input"):
        raise ConfigError(f"model.field must be false, true (a learned response term) or 'input' (the response "
                          f"term and the field as an equivariant input of the family); got {field!r}")
    prior = cfg.pop("prior", None)
    dispersion = cfg.pop("dispersion", None)
    if family not in MODEL_REGISTRY or family in ("sum", "reference"):
        raise ConfigError(f"model.family must be a learned family, one of "
                          f"{sorted(set(MODEL_REGISTRY) - {'sum', 'reference', 'zbl'})}; got {family!r}")
    if hasattr(dataset, "in_file_order"):  # on disk: the passes below do not depend on the order
        dataset = dataset.in_file_order()
    dataset.require_labels(energy=True, forces=False)
    refuse_constant_labels(dataset)  # scale and reference energies from constant labels would be meaningless
    elements = dataset.elements
    _fill_avg_neighbors(family, cfg, dataset)
    if field == "input":
        import inspect

        if "field_input" not in inspect.signature(MODEL_REGISTRY[family].__init__).parameters:
            takes = sorted(f for f, c in MODEL_REGISTRY.items()
                           if "field_input" in inspect.signature(c.__init__).parameters)
            raise ConfigError(f"model.field='input' feeds the field to an equivariant family ({', '.join(takes)}); "
                              f"{family!r} takes it through the response term only (model.field=true)")
        cfg["field_input"] = True
    fixed_prior = _load_fixed_prior(prior) if prior not in (None, "mm", "mm_morse", "morse") else None
    targets = _residuals(dataset, fixed_prior) if fixed_prior is not None else dataset
    ref = reference_energies(targets, elements)
    scale = _force_rms(targets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        terms = [AtomicReference(ref)]
        if fixed_prior is not None:  # Δ-learning: the learned terms fit what the frozen prior misses
            terms.append(fixed_prior)
        elif prior in ("mm", "mm_morse"):  # Δ-learning with an MM prior fitted jointly with the ML correction
            terms.append(ClassicalMM(elements, cutoff=6.0, bond_form="morse" if prior == "mm_morse" else "harmonic"))
        elif prior == "morse":  # the reactive mode of the prior: pairwise Morse bonds, no topology to break
            terms.append(MorsePairs(elements))
        if family != "zbl":
            terms.append(build_model({"family": family, "elements": elements, "energy_scale": scale, **cfg}))
        if zbl or family == "zbl":
            terms.append(ZBL(cutoff=min(3.0, float(cfg.get("cutoff", 3.0)))))
        if dispersion:  # a fixed DFT-D4 prior with the damping of the reference functional
            terms.append(D4Dispersion(method=dispersion))
        if coulomb:  # ML short range + learned, charge-conserving charges with Coulomb / Ewald long range
            terms.append(LearnedCoulomb(elements, cutoff=min(4.0, float(cfg.get("cutoff", 4.0)))))
        if field:  # the response to a uniform external field: learned charges and polarizabilities (molecules)
            terms.append(FieldResponse(elements, cutoff=min(4.0, float(cfg.get("cutoff", 4.0)))))
    return Sum(terms)


def model_for_training(model_config: dict, dataset, train_config) -> "Sum":
    """The model a training run starts from: the package of ``train.init_from`` with its weights (fine-tuning;
    `ffspace.train.finetune`), else a fresh one built from ``model_config`` for ``dataset``."""
    if train_config.init_from:
        from .finetune import start_from_package

        return start_from_package(train_config.init_from, dataset, train_config.init_reference)
    return build_model_for_data(model_config, dataset, seed=train_config.seed)


def _force_rms(dataset) -> float:
    """RMS of the force components (eV/Å), 1 without force labels; in one streaming pass."""
    total, count = 0.0, 0
    for s in dataset:
        if s.forces is not None:
            total += float((s.forces ** 2).sum())
            count += s.forces.size
    return float(np.sqrt(total / count)) if count else 1.0


def _fill_avg_neighbors(family, cfg: dict, dataset) -> None:
    """Families that normalise neighbour sums (MACE) get the data's mean neighbour count unless it is set."""
    import inspect

    params = inspect.signature(MODEL_REGISTRY[family].__init__).parameters
    if "avg_neighbors" in params and "avg_neighbors" not in cfg:
        cutoff = float(cfg.get("cutoff", params["cutoff"].default))
        sample = [dataset[int(k)] for k in np.linspace(0, len(dataset) - 1, min(len(dataset), 200))]
        cfg["avg_neighbors"] = max(1.0, round(statistics(sample, cutoff)["mean_neighbors"], 3))


def _load_fixed_prior(path):
    """A trained model package used as a frozen prior (any family: MM, ML, or a composition)."""
    from ..potential.package import load_package

    model, _ = load_package(path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _residuals(dataset, prior):
    """The dataset with the prior's energies and forces subtracted (what the learned terms must fit)."""
    from ..data.dataset import Dataset
    from ..evaluate.metrics import predict
    from ..potential import Potential

    pot = Potential(prior, dtype=torch.float64)
    pred = predict(pot, list(dataset))
    counts = np.cumsum([s.n_atoms for s in dataset])[:-1]
    out = []
    for s, e, f in zip(dataset, pred["energy"], np.split(pred["forces"], counts)):
        out.append(s.copy(energy=s.energy - e, forces=None if s.forces is None else s.forces - f))
    return Dataset(out, name=dataset.name)
