"""Typed config of ``ffspace active``: start, labeler, committee, exploration, selection and budgets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..config import load_yaml_config, validation_problems
from ..errors import ConfigError
from ..reference.config import InputConfig, LabelerConfig, SamplerConfig
from ..train import TrainConfig


class CommitteeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    members: int = Field(4, ge=2, description="models per committee")
    subsample: float = Field(0.8, gt=0, le=1, description="fraction of the labels each member trains on")
    warm_start: bool = Field(True, description="round k's members start from round k−1's")
    init_from: str | None = Field(None, description="model package round 0's members start from (one trained on "
                                                    "the start labels): each member then fine-tunes it on its own "
                                                    "subsample instead of training from scratch")
    warm_minutes: float | None = Field(None, gt=0, description="training budget in minutes of a member that starts "
                                                               "from a package (init_from or the previous round's); "
                                                               "default: train.max_time_min")
    warm_lr: float | None = Field(None, gt=0, description="peak learning rate of a member that starts from a package; "
                                                          "default: train.lr (a from-scratch rate can undo the "
                                                          "start: round 0 of active_stability_3bpa lost accuracy "
                                                          "at 0.005 from its first epoch on)")
    warm_keep: Literal["best", "last"] = Field("last", description="the weights a member that starts from a "
                                               "package keeps: its last epoch's (default), or its best on the "
                                               "validation set. The validation set is mostly start frames: on "
                                               "active_stability_3bpa's round 1 it was best at epoch 1, before the "
                                               "member had learned the explored frames")
    workers: int = Field(1, ge=1, description="members trained at once, each in its own process with an equal "
                                              "share of the CPU threads (the same members; for small molecules, "
                                              "whose steps cannot use a second thread, it keeps every core busy)")


class ExploreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    temperatures: list[float] = Field([300.0, 600.0, 900.0], description="K")
    ramp: bool = Field(True, description="round k explores the first k+1 temperatures (cool first, then hotter)")
    seeds: int = Field(4, ge=1, description="trajectories per temperature, run as one batch")
    steps: int = Field(2000, ge=1, description="MD steps per trajectory")
    timestep_fs: float = Field(0.5, gt=0)
    friction: float = Field(0.01, ge=0, description="Langevin friction, 1/fs")
    record_every: int = Field(20, ge=1, description="steps between recorded frames")
    min_distance_factor: float = Field(0.6, gt=0, description="a trajectory whose atoms come closer than this × "
                                                               "the sum of their covalent radii has collapsed")
    bond_tolerance: float | None = Field(0.5, gt=0, description="Å: a trajectory in which a bond of the start "
                                                                "structure is this far from its start length has "
                                                                "broken (the stability benchmark's rule); null: "
                                                                "bonds are not checked")


class SelectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    lower: float = Field(0.1, gt=0, description="eV/Å: a frame whose largest force deviation is below is 'known'")
    upper: float = Field(1.0, gt=0, description="eV/Å: above, the model is lost; the trajectory stops there")
    per_round: int = Field(10, ge=1, description="frames labeled per round at most")
    per_trajectory: int = Field(3, ge=1, description="at most this many frames from one trajectory")
    strategy: Literal["highest", "random", "diverse", "weighted"] = Field(
        "highest", description="order in which candidates are taken: by decreasing deviation, at random "
                               "(DP-GEN), by deviation × distance to the labeled and picked frames, or at "
                               "random with probability ∝ deviation²")
    min_separation: int = Field(5, ge=1, description="two picks of one trajectory are at least this many "
                                                     "recording intervals apart")

    @model_validator(mode="after")
    def _order(self):
        if self.lower >= self.upper:
            raise ValueError(f"select.lower ({self.lower}) must be below select.upper ({self.upper})")
        return self


class ActiveConfig(BaseModel):
    """Every setting of the label–train–explore loop, with defaults for a small molecule on a CPU."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    out: str = Field("runs/active", description="run folder; rerunning resumes from what is there")
    input: InputConfig
    initial: SamplerConfig = Field(SamplerConfig(kind="normal_modes", n_frames=20),
                                   description="how the first labels are sampled from the input structure")
    initial_dataset: str | None = Field(None, description="labeled file to start from instead of sampling")
    initial_keys: dict[str, str] = Field({}, description="label keys of initial_dataset when they are not the "
                                                         "reader's defaults, e.g. {energy_key: energy, forces_key: "
                                                         "forces} for 3BPA's extxyz")
    labeler: LabelerConfig = LabelerConfig()
    model: dict[str, Any] = Field({"family": "painn", "features": 32, "layers": 2, "cutoff": 5.0})
    train: dict[str, Any] = Field({"epochs": 100, "schedule": "cosine", "lr": 3e-3, "batch_size": 4},
                                  description="TrainConfig of each committee member, each round")
    committee: CommitteeConfig = CommitteeConfig()
    explore: ExploreConfig = ExploreConfig()
    select: SelectConfig = SelectConfig()
    goal: Literal["accuracy", "stability"] = Field(
        "accuracy", description="when the loop stops: 'accuracy' once every explored frame is below select.lower; "
                                "'stability' once a round that explored at every temperature of explore.temperatures "
                                "(the last, hottest, included) saw every trajectory run its full length: no broken "
                                "bond, collapse, non-finite value or committee deviation above select.upper")
    n_val: int = Field(2, ge=1, description="initial labels kept for validation (a fresh member's early "
                                         "stopping and kept epoch; a warm member keeps its last, committee.warm_keep)")
    val_every: int = Field(10, ge=2, description="every n-th label picked by the loop goes to validation too")
    max_rounds: int = Field(10, ge=1)
    max_labels: int = Field(200, ge=1, description="label budget, the initial labels included")
    label_workers: int = Field(1, ge=1, description="labelling processes side by side, each with an equal share of "
                                                    "the CPU threads (a DFT label of a small molecule uses a second "
                                                    "thread poorly)")
    seed: int = 0
    progress: bool = True

    def train_config(self) -> TrainConfig:
        try:
            return TrainConfig(**{"progress": False, **self.train})
        except ValidationError as exc:
            raise ConfigError(validation_problems(exc, prefix="train.")) from None


def load_active_config(path, overrides: list[str] = ()) -> ActiveConfig:
    """YAML file ← ``key=value`` overrides (dotted keys); errors name the file and the field."""
    return load_yaml_config(ActiveConfig, path, overrides, what="active-learning config")
