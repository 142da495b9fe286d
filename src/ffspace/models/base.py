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
    try:
        return MODEL_REGISTRY[family](**config)
    except TypeError as exc:
        raise ConfigError(f"bad settings for model family {family!r}: {exc}") from None


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index`` (no torch-scatter needed)."""
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add_(0, index, src)
