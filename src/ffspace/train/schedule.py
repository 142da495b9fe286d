"""Learning-rate schedule: linear warmup, then reduce-on-plateau or cosine; resumable."""

from __future__ import annotations

import math


class LRSchedule:
    def __init__(self, optimizer, lr: float, kind: str, warmup_steps: int, total_steps: int,
                 patience: int = 10, factor: float = 0.5, min_lr: float = 1e-6):
        self.opt, self.lr, self.kind = optimizer, lr, kind
        self.warmup_steps, self.total_steps = warmup_steps, max(total_steps, 1)
        self.patience, self.factor, self.min_lr = patience, factor, min_lr
        self.step_count, self.scale, self.best, self.bad = 0, 1.0, math.inf, 0
        self.spike_scale = 1.0  # halved each time the trainer undoes a loss spike (`train.spike_factor`)
        # Fraction of a wall-clock budget already spent (set by the trainer): a cosine schedule then
        # ends with the budget even when epochs run slower than planned.
        self.time_fraction = 0.0
        self._apply()

    def current(self) -> float:
        return self._unscaled() * self.spike_scale

    def _unscaled(self) -> float:
        if self.step_count < self.warmup_steps:
            return self.lr * (self.step_count + 1) / self.warmup_steps
        if self.kind == "cosine":
            t = (self.step_count - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
            t = min(1.0, max(t, self.time_fraction))
            return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))
        return max(self.min_lr, self.lr * self.scale)

    def _apply(self):
        for group in self.opt.param_groups:  # parts of a fine-tuned model may learn slower (train.lr_scale)
            group["lr"] = self.current() * group.get("lr_scale", 1.0)

    def step(self):
        """After every optimizer step."""
        self.step_count += 1
        self._apply()

    def epoch_end(self, val_loss: float, epochs: int = 1):
        """After every validation, covering ``epochs`` epochs since the last one (``train.val_every``): the plateau
        rule looks at the validation loss and counts its patience in epochs."""
        if self.kind != "plateau":
            return
        if val_loss < self.best * (1 - 1e-4):
            self.best, self.bad = val_loss, 0
        else:
            self.bad += epochs
            if self.bad >= self.patience:
                self.scale *= self.factor
                self.bad = 0
        self._apply()

    def set_time_fraction(self, fraction: float):
        self.time_fraction = min(1.0, max(0.0, fraction))
        self._apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "scale": self.scale, "best": self.best, "bad": self.bad,
                "time_fraction": self.time_fraction, "spike_scale": self.spike_scale}

    def load_state_dict(self, state: dict):
        self.step_count, self.scale = int(state["step_count"]), float(state["scale"])
        self.best, self.bad = float(state["best"]), int(state["bad"])
        self.time_fraction = float(state.get("time_fraction", 0.0))
        self.spike_scale = float(state.get("spike_scale", 1.0))
        self._apply()


class EMA:
    """Exponential moving average of the parameters, used for validation and the saved model."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def update(self, model):
        import torch

        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
                else:
                    self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return self.shadow

    def load_state_dict(self, state: dict):
        self.shadow = {k: v.clone() for k, v in state.items()}
