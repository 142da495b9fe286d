"""Losses, the `Trainer` (checkpoints, exact resume, EMA, schedules) and model set-up from data."""

from .config import TrainConfig
from .loss import Loss
from .setup import build_model_for_data, model_for_training
from .trainer import Trainer

__all__ = ["Loss", "TrainConfig", "Trainer", "build_model_for_data", "model_for_training"]
