"""Typed MD settings (YAML section ``md``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MDConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(2000, ge=0)
    timestep_fs: float = Field(0.5, gt=0)
    ensemble: Literal["nve", "nvt"] = "nvt"
    temperature: float = Field(300.0, ge=0, description="K; NVT target and initial velocities")
    friction: float = Field(0.01, ge=0, description="Langevin friction, 1/fs")
    seed: int = 0
    traj_interval: int = Field(10, ge=1)
    dtype: Literal["float32", "float64"] = "float64"
    start: str | None = Field(None, description="starting structure file; default: first test structure")
    max_force: float = Field(50.0, gt=0, description="blow-up limit on any atom's force, eV/Å")
    min_distance: float = Field(0.5, gt=0, description="blow-up limit on the closest pair, Å")
