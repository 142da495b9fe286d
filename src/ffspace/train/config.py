"""Typed training settings (YAML section ``train``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TrainConfig(BaseModel):
    """Every knob of the `Trainer`, with defaults that work for small molecules on a CPU."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(200, ge=1, description="maximum number of epochs")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["plateau", "cosine"] = "plateau"
    warmup_epochs: int = Field(1, ge=0, description="linear warmup, in epochs")
    plateau_patience: int = Field(10, ge=1, description="epochs without improvement before the lr is cut")
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    min_lr: float = Field(1e-6, ge=0)
    ema_decay: float = Field(0.99, ge=0, lt=1, description="0 disables EMA weights")
    early_stop_patience: int = Field(50, ge=1, description="epochs without validation improvement before stopping")
    loss: Literal["mse", "huber"] = "mse"
    huber_delta: float = Field(0.01, gt=0)
    energy_weight: float = Field(1.0, ge=0, description="weight of the per-atom energy error (eV/atom)²")
    forces_weight: float = Field(10.0, ge=0, description="weight of the force error (eV/Å)²")
    stress_weight: float = Field(0.0, ge=0)
    dipole_weight: float = Field(0.0, ge=0, description="weight of the dipole error (e·Å)², for a model with "
                                 "model.field=true on data with dipole labels (info['dipole'])")
    grad_clip: float | None = Field(10.0, gt=0)
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    workers: int = Field(1, ge=1, description="data-parallel processes (torch.distributed: gloo on CPU, NCCL on "
                         "CUDA with one device each); each computes part of every batch, the caller's CPU threads "
                         "are divided among them")
    seed: int = 0
    max_time_min: float | None = Field(None, gt=0, description="budget in minutes of training steps (validation is timed apart, "
                                  "`val_s`): no epoch starts that would overrun it; a cosine schedule ends with it")
    log_format: Literal["jsonl", "csv"] = "jsonl"
    progress: bool = True
    eval_batch_size: int = Field(32, ge=1)
    init_from: str | None = Field(None, description="a model package to start from (fine-tuning): its model and "
                                  "weights replace the `model` section's fresh model")
    init_reference: Literal["refit", "keep"] = Field("refit", description="with init_from: correct the package's "
                                                     "per-element reference energies to the new data (another level "
                                                     "of theory) or keep them")
    freeze: list[str] = Field(default_factory=list, description="parameter-name patterns (fnmatch, e.g. "
                              "'terms.1.interactions.0.*') that do not train")
    lr_scale: dict[str, float] = Field(default_factory=dict, description="parameter-name pattern -> factor on the "
                                       "learning rate (the first matching pattern counts), e.g. {'terms.1.readout*': 1, "
                                       "'terms.1.*': 0.1}")
    l2_to_start: float = Field(0.0, ge=0, description="with init_from: pull toward the starting weights (L2-SP, "
                               "decoupled like AdamW's decay: each step moves every trained weight by lr × this × "
                               "its distance from the package's value), so that a few frames refine what the "
                               "package knew rather than overwrite it")
    val_every: int = Field(1, ge=1, description="validate every this many epochs (and after the last one); the "
                           "package, metrics log and checkpoint are written at each validation, so a killed run "
                           "resumes from the last one. More than 1 is for many short epochs (a few frames), where "
                           "validating and writing every epoch adds much to the wall time. The log then has "
                           "a row per validation (its train_* columns, lr and epoch_s are the validated epoch's; "
                           "epochs_s is the training time since the previous row); both patiences count epochs")
    spike_factor: float = Field(0.0, ge=0, description="0: off. Above 1: an epoch whose mean training loss "
                                "exceeds this many times the lowest kept epoch's is undone, with the epoch "
                                "before it when that one was not validated (a blow-up that began late in it): "
                                "weights, optimizer, EMA and schedule go back, the learning rate is halved from "
                                "there on, and the epochs are trained again in another order. The undone time "
                                "counts against max_time_min. At most 3 undos in a row, then the epoch is kept. "
                                "The halving applies below min_lr too")
    keep: Literal["best", "last"] = Field("best", description="the weights the package holds: the epoch with the "
                                          "lowest validation loss, or the last epoch (a fine-tuning on data unlike "
                                          "the validation set, e.g. an active-learning member on hot frames; it "
                                          "then runs its whole schedule, without early stopping). A linear model "
                                          "fitted by least squares has one solution: this does not apply")

    # Settings added after runs, checkpoints and benchmark caches were made: they enter a run's identity only when
    # set, so that those runs resume and the cached results stay valid.
    @field_validator("spike_factor")
    @classmethod
    def _spike_factor_above_one(cls, value: float) -> float:
        if 0 < value <= 1:  # (at or below 1 most epochs would count as spikes)
            raise ValueError(f"0 (off) or above 1, got {value}")
        return value

    _LATER = {"init_from": None, "init_reference": "refit", "freeze": [], "lr_scale": {}, "dipole_weight": 0.0,
              "keep": "best", "l2_to_start": 0.0, "val_every": 1,
              "spike_factor": 0.0}

    def identity(self, exclude=()) -> dict:
        """The settings that identify a run (`model_dump` without ``exclude``, and without the later settings at
        their defaults)."""
        out = self.model_dump(exclude=set(exclude))
        for key, default in self._LATER.items():
            if key in out and out[key] == default:
                out.pop(key)
        if "lr_scale" in out:  # the first matching pattern counts: the order is part of the setting
            out["lr_scale"] = [[k, v] for k, v in self.lr_scale.items()]
        if out.get("init_from"):  # the starting weights: a package retrained at the same path is another run
            from ..potential.package import resolve_package_path

            path = resolve_package_path(self.init_from)
            if path.is_file():
                import hashlib

                out["init_from_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out
