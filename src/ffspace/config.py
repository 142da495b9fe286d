"""Typed configs for every command: YAML file + ``key=value`` overrides (dotted keys for sections)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError, validation_problems
from .md.config import MDConfig
from .train.config import TrainConfig
from .units import ENERGY_TO_EV


class DataConfig(BaseModel):
    """Where the labeled structures come from and how they are split (seeded)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    train: str = Field("builtin:ethanol_gfn2xtb", description="file/folder, or builtin:<name> for shipped data")
    test: str | None = Field(None, description="separate test file; otherwise split from `train`")
    format: Literal["extxyz", "md17", "deepmd", "ase-db", "hdf5"] | None = None
    cache_mb: float | None = Field(None, gt=0, description="hdf5: MiB of blocks the streaming reader keeps in memory "
                                   "(default 256); the set itself stays on disk")
    energy_key: str | None = Field(None, description="label key; default: the reader's own (extxyz: REF_energy)")
    forces_key: str | None = Field(None, description="default: the reader's own (extxyz: REF_forces)")
    stress_key: str | None = Field(None, description="extxyz/ase-db stress key (ASE sign, eV/Å³ or Voigt)")
    energy_unit: Literal[tuple(ENERGY_TO_EV)] | None = Field(
        None, description="unit of the file's energies (forces: that unit per Å); default: the format's own (eV; "
        "kcal/mol for MD17 npz)")
    unit_check: Literal["error", "warn", "off"] = Field(
        "error", description="labels whose size does not fit the declared unit (e.g. kcal/mol read as eV): "
        "refuse (error), warn, or do not check (off)")
    n_val: float = Field(0.1, ge=0, description="validation size: fraction (< 1) or count")
    n_test: float = Field(0.1, ge=0, description="test size when no test file is given: fraction or count")
    seed: int = 0
    split_by: str | None = Field(None, description="keep the structures that share this info key's value (e.g. "
                                 "smiles: one molecule) in one part of the split of `train`, so validation (and "
                                 "test, when split from it) measure molecules the training never saw; sizes are "
                                 "then rounded up to whole molecules")


class ModelSection(BaseModel):
    """``family`` picks the model; the other keys go to its constructor (cutoff, features, layers...)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    family: str = "painn"
    cutoff: float = Field(5.0, gt=0, description="Å")
    zbl: bool = Field(False, description="add a ZBL repulsion prior (switched off below bonding distances)")
    coulomb: bool = Field(False, description="add learned charge-conserving charges with Coulomb/Ewald electrostatics")
    dispersion: str | None = Field(None, description="D4 dispersion prior with this functional's damping, e.g. pbe")
    prior: str | None = Field(None, description="Δ-learning prior: 'mm' (fitted jointly), 'mm_morse' (the same with "
                                        "Morse bonds), 'morse' (its reactive mode: pairwise Morse bonds, no "
                                        "topology) or a model package path (frozen)")


class EvalConfig(BaseModel):
    """How `ffspace eval` (and the evaluation step of `ffspace run`) runs the model."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    device: str | None = Field(None, description="cpu, cuda, cuda:N; default: train.device")
    dtype: Literal["float32", "float64"] | None = Field(None, description="default: train.dtype")
    batch_size: int = Field(32, ge=1, description="structures per model call")


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    data: DataConfig = DataConfig()
    model: ModelSection = ModelSection()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    md: MDConfig = MDConfig()
    out: str = Field("runs/ffspace", description="output folder")
    model_path: str | None = Field(None, description="trained model package (eval/md); default <out>/train/model.safetensors")
    overwrite: bool = Field(False, description="replace the outputs of another run in `out` (never done otherwise)")


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_override(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k, {}), dict):
            raise ConfigError(f"override {dotted}: {k!r} is not a section")
        node = node.setdefault(k, {})
    node[keys[-1]] = value


def read_yaml_mapping(path: Path, what: str) -> dict:
    """The mapping of sections a YAML file holds; errors name ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} {'is a folder, not a file' if path.is_dir() else 'does not exist'}")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of sections")
    return tree


def load_yaml_config(model_cls, path, overrides=(), what: str = "config"):
    """``model_cls`` from a YAML file ← ``key=value`` overrides (dotted keys); errors name the file and field."""
    path = Path(path)
    tree = read_yaml_mapping(path, what)
    for item in overrides:
        key, _, value = item.partition("=")
        apply_override(tree, key, parse_value(value))
    try:
        return model_cls(**tree)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}") from None


def load_config(path: str | Path | None, overrides: list[str] = (), defaults: dict | None = None) -> RunConfig:
    """Defaults ← YAML file ← ``key=value`` overrides; unknown keys are errors that name the key."""
    tree: dict = {} if defaults is None else yaml.safe_load(yaml.safe_dump(defaults))
    if path is not None:
        _merge(tree, read_yaml_mapping(Path(path), "config file"))
    base_model = dict(tree.get("model") or {}) if isinstance(tree.get("model"), dict) else {}
    overridden = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. train.epochs=50)")
        key, value = item.split("=", 1)
        apply_override(tree, key.strip(), parse_value(value))
        overridden.add(key.strip())
    _family_defaults(tree, base_model, overridden)
    try:
        return RunConfig(**tree)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def _family_defaults(tree: dict, base_model: dict, overridden: set) -> None:
    """An override that changes ``model.family`` brings that family's defaults: the base config's settings of the
    old family (PaiNN's ``features``, ``n_rbf``...) are dropped unless an override sets them too. Settings every
    family shares (cutoff and the hybrid options) stay."""
    model = tree.get("model")
    old = base_model.get("family", ModelSection.model_fields["family"].default)
    if "model.family" not in overridden or not isinstance(model, dict) or model.get("family") == old:
        return
    shared = set(ModelSection.model_fields)
    dropped = [k for k in base_model if k not in shared and f"model.{k}" not in overridden]
    for k in dropped:
        model.pop(k, None)
    if dropped:
        print(f"model.family={model.get('family')}: the base config's {old} settings {dropped} are dropped; "
              f"{model.get('family')} takes its own defaults (set model.<key>=... to change them)", file=sys.stderr)


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def resolve_data_path(spec: str) -> str:
    if spec.startswith("builtin:"):
        from .datasets import builtin_path

        try:
            return str(builtin_path(spec.split(":", 1)[1]))
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
    return spec
