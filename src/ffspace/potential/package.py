"""Model packages: one safetensors file whose header carries JSON metadata; loading runs no code.

The metadata records everything needed to rebuild the model (its config, elements, cutoff,
units, reference energies) and the versions that wrote it.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import torch

from ..errors import ModelPackageError
from ..models.base import build_model
from ..outputs import atomic_write

FORMAT = "ffspace-model"
FORMAT_VERSION = 1


def versions() -> dict:
    import ase
    import numpy

    from .. import __version__

    return {"ffspace": __version__, "torch": torch.__version__, "numpy": numpy.__version__, "ase": ase.__version__,
            "python": platform.python_version()}


def _reference_energies(config: dict) -> dict:
    if config.get("family") == "reference":
        return config["energies"]
    for term in config.get("terms", []):
        found = _reference_energies(term)
        if found:
            return found
    return {}


def save_package(path, model, extra: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically."""
    from safetensors.torch import save

    path = Path(path)
    config = model.get_config()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": config,
            "elements": list(model.elements), "cutoff": float(model.cutoff),
            "units": {"energy": "eV", "length": "Å", "forces": "eV/Å", "stress": "eV/Å^3"},
            "reference_energies_eV": _reference_energies(config), "versions": versions(),
            # Parameters training must leave alone (a fixed Δ-learning prior): restored by load_package.
            # (`train.freeze` is one run's setting and is not recorded: a later fine-tuning trains those again)
            "frozen": [name for name, p in model.named_parameters()
                       if not p.requires_grad and not getattr(p, "frozen_by_train_freeze", False)],
            "extra": extra or {}}
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Serialised here and written by `atomic_write`: safetensors' own writer would make the file 0600.
    return atomic_write(path, save(tensors, metadata={"ffspace": json.dumps(meta)}))


# Model packages shipped inside ffspace, named ``builtin:NAME`` (``NAME.safetensors`` here).
SHIPPED = Path(__file__).resolve().parents[1] / "packages"


def resolve_package_path(path) -> Path:
    """``builtin:NAME`` is the package ffspace ships under that name; anything else is a file path."""
    text = str(path)
    if not text.startswith("builtin:"):
        return Path(path)
    name = text.split(":", 1)[1]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):  # a name, never a path out of the package folder
        raise ModelPackageError(f"{text!r}: a shipped model's name is letters, digits, '_', '.' and '-'")
    found = SHIPPED / f"{name}.safetensors"
    if not found.is_file():
        shipped = sorted(f"builtin:{p.stem}" for p in SHIPPED.glob("*.safetensors"))
        raise ModelPackageError(f"no shipped model {text!r}; this ffspace ships {shipped or 'none'}")
    return found


def read_metadata(path) -> dict:
    from safetensors import safe_open

    path = resolve_package_path(path)
    if not path.is_file():
        raise ModelPackageError(f"model package {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:
        raise ModelPackageError(f"model package {path} is corrupt or not a safetensors file: {exc}") from None
    if "ffspace" not in header:
        raise ModelPackageError(f"{path} is a safetensors file but not an ffspace model package (no metadata)")
    try:
        meta = json.loads(header["ffspace"])
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"model package {path}: metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelPackageError(f"model package {path}: metadata is a {type(meta).__name__}, not a JSON object")
    version = meta.get("format_version", 0)
    if (meta.get("format") != FORMAT or not isinstance(version, int) or isinstance(version, bool)
            or version > FORMAT_VERSION):
        raise ModelPackageError(f"model package {path}: format {meta.get('format')!r} version "
                                f"{version!r} is not readable by this ffspace (reads {FORMAT!r} "
                                f"up to version {FORMAT_VERSION})")
    if not isinstance(meta.get("model"), dict):
        raise ModelPackageError(f"model package {path}: metadata has no 'model' config (keys: {sorted(meta)})")
    return meta


def load_package(path, dtype: torch.dtype | str | None = None):
    """Return ``(model, metadata)``; raises `ModelPackageError` on any corruption. The model is built in ``dtype``
    (default: the dtype its weights were saved in) before the weights go in, so they arrive exactly: a float64
    package is never rounded through float32. Parameters saved as frozen come back frozen."""
    from safetensors.torch import load_file

    from .potential import torch_dtype

    path = resolve_package_path(path)
    meta = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise ModelPackageError(f"model package {path}: cannot read the weights (corrupt or truncated): {exc}") from None
    try:
        model = build_model(meta["model"])
    except Exception as exc:
        raise ModelPackageError(f"model package {path}: cannot rebuild the model from its config: {exc}") from None
    if dtype is None:
        # The widest float dtype among the saved parameters (buffers such as reference-energy tables are
        # float64 in every package).
        params = {name for name, _ in model.named_parameters()}
        saved = {t.dtype for name, t in tensors.items() if name in params and t.is_floating_point()}
        dtype = torch.float64 if torch.float64 in saved else None
    if dtype is not None:
        model = model.to(torch_dtype(dtype))
    try:
        model.load_state_dict(tensors, strict=True)
    except Exception as exc:
        from .. import __version__

        written_by = meta.get("versions", {}).get("ffspace", "an unknown version")
        raise ModelPackageError(f"model package {path}: weights do not fit the model "
                                f"{meta['model'].get('family')!r} (package written by ffspace {written_by}, this is "
                                f"{__version__}; a family's layout can change between development versions): "
                                f"{exc}") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelPackageError(f"model package {path}: tensor {name!r} holds NaN or inf")
    frozen = set(meta.get("frozen", []))
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return model, meta
