"""Typed MD settings: `MDRunSettings` (what `run_md` takes, checked the same way from Python and the CLI) and
`MDConfig` (the YAML section ``md``: those plus the start structure, dtype and device)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, validation_problems


class MDRunSettings(BaseModel):
    """Every setting of one MD run. NaN and infinity are refused everywhere (``allow_inf_nan=False``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int = Field(2000, ge=0)
    timestep_fs: float = Field(0.5, gt=0)
    ensemble: Literal["nve", "nvt"] = "nvt"
    temperature: float = Field(300.0, ge=0, description="K; NVT target and initial velocities")
    init_temperature: float | None = Field(None, ge=0, description="K, initial velocities; default: temperature")
    friction: float = Field(0.01, ge=0, description="Langevin friction, 1/fs")
    seed: int = 0
    traj_interval: int = Field(10, ge=1, description="steps between trajectory frames")
    thermo_interval: int = Field(1, ge=1, description="steps between thermo.csv rows")
    checkpoint_interval: int = Field(500, ge=0, description="steps between checkpoints (0: none)")
    skin: float = Field(1.0, ge=0, description="Verlet-list skin, Å")
    max_force: float = Field(50.0, gt=0, description="blow-up limit on any atom's force, eV/Å")
    min_distance: float = Field(0.5, gt=0, description="blow-up limit on the closest pair, Å")
    bond_tolerance: float | None = Field(
        0.5, gt=0, description="blow-up limit, Å: a covalent bond of the start structure may not stretch or shrink "
        "by more than this (the bench's stability rule); null switches the check off (reactive MD)")


class MDConfig(MDRunSettings):
    """The ``md`` section of a run config."""

    dtype: Literal["float32", "float64"] = "float64"
    device: str | None = Field(None, description="cpu, cuda, cuda:N; default: train.device")
    start: str | None = Field(None, description="starting structure file; default: first test structure")
    fast: bool | Literal["auto"] = Field(
        "auto", description="the fast inference path (ffspace.potential.fast), checked against the eager model on "
        "first use, eager with a warning where it cannot be used: auto = where a family has hand-derived forces "
        "(linear ACE, in a C kernel built on this machine); true = also torch.compile for the other families at the "
        "first step; false = eager autograd")

    def run_settings(self) -> dict:
        return self.model_dump(include=set(MDRunSettings.model_fields))


def check_run_settings(**settings) -> MDRunSettings:
    """`MDRunSettings` of ``settings``, or a `ConfigError` naming every bad one."""
    try:
        return MDRunSettings(**settings)
    except ValidationError as exc:
        raise ConfigError(f"MD settings: {validation_problems(exc)}") from None
