"""What every model shares: metadata, element lookup, a registry that rebuilds a model from its config.

A model maps a `Batch` to per-atom energies (eV). It never computes forces (the `Potential`
does, once, by autograd), never touches files and never changes global torch state.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

MODEL_REGISTRY: dict[str, type["FFModel"]] = {}


def register(family: str):
    def deco(cls):
        cls.family = family
        MODEL_REGISTRY[family] = cls
        return cls

    return deco


class FFModel(nn.Module):
    """Base class: subclasses set ``cutoff`` and ``elements`` and keep their constructor kwargs in ``config``."""

    family: str = "base"
    cutoff: float = 0.0
    elements: list[int] = []
    # Whether the energy depends on the structures' total charge (``Structure.info["charge"]``): a model that
    # does not read it answers every charge state as the one it was trained on (`Potential.check_elements`).
    reads_total_charge: bool = False

    def _init_elements(self, elements):
        self.elements = sorted(int(z) for z in elements)
        lookup = torch.full((119,), -1, dtype=torch.long)
        lookup[torch.tensor(self.elements, dtype=torch.long)] = torch.arange(len(self.elements))
        self.register_buffer("z_to_index", lookup, persistent=False)

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Index of each atom's element in ``self.elements`` (the caller has checked they are known)."""
        return self.z_to_index[numbers]

    def get_config(self) -> dict:
        return {"family": self.family, **self.config}

    def forward(self, batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


# The ranges of the settings families share, checked by `build_model` for every family: ``layers=0`` would
# train a model whose forces are all zero, ``features=0`` fail deep inside torch.
POSITIVE_INTS = {"features", "layers", "channels", "n_rbf", "n_radial", "n_angular_shifts", "radial_hidden",
                 "correlation", "max_degree", "n_rbf_3"}
NON_NEGATIVE_INTS = {"lmax", "hidden_lmax", "lmax_3", "degree", "degree_3"}
POSITIVE_FLOATS = {"cutoff", "angular_cutoff", "radial_eta", "angular_eta", "avg_neighbors", "bond_scale",
                   "switch_width", "energy_scale", "covalent_scale", "cutoff_3"}


def check_settings(family: str, config: dict) -> None:
    """A `ConfigError` naming the first setting of ``config`` outside its range."""
    import math

    for key, value in config.items():
        where = f"model family {family!r}: {key}={value!r}"
        if key in POSITIVE_INTS | NON_NEGATIVE_INTS:
            low = 1 if key in POSITIVE_INTS else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{where} must be a whole number ≥ {low}")
        elif key in POSITIVE_FLOATS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ConfigError(f"{where} must be a finite number > 0")
        elif key == "hidden" and (not isinstance(value, (list, tuple)) or not value
                                  or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in value)):
            raise ConfigError(f"{where} must be a list of layer widths ≥ 1")


def build_model(config: dict) -> FFModel:
    """Rebuild a model from ``{"family": name, **kwargs}`` (what `get_config` returns)."""
    config = dict(config)
    family = config.pop("family", None)
    if family not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model family {family!r}; known: {sorted(MODEL_REGISTRY)}")
    import inspect

    accepted = set(inspect.signature(MODEL_REGISTRY[family].__init__).parameters) - {"self"}
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ConfigError(f"model family {family!r} has no setting(s) {unknown}; it takes {sorted(accepted)} "
                          f"(a base config written for another family may carry them: override or drop them)")
    check_settings(family, config)
    try:
        return MODEL_REGISTRY[family](**config)
    except (TypeError, ValueError) as exc:  # a setting out of the family's own range (e.g. MACE correlation=4)
        raise ConfigError(f"bad settings for model family {family!r}: {exc}") from None


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index`` (no torch-scatter needed)."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)
