"""`Trainer`: AdamW, warmup + plateau/cosine, EMA, early stopping, a checkpoint every epoch (or every
``val_every``), exact resume, data-parallel workers (torch.distributed).

What "exact" means, measured (train/determinism.py): on CPU, a run with a fixed number of epochs is bit-identical
to a rerun, and a killed run resumed from its checkpoint is bit-identical to an uninterrupted one, for the same
data, settings, torch build, machine and thread count. A wall-clock budget (``max_time_min``) is not
reproducible: the epoch it stops at, and with a cosine schedule every learning rate after warmup, follow the
clock. CUDA runs are not made deterministic."""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import yaml

from ..data.digest import update_with_structures
from ..data.label_check import refuse_constant_labels
from ..errors import ConfigError
from ..evaluate.metrics import error_metrics, format_metrics, predict
from ..graph.batch import collate, graph_of
from ..potential import Potential
from ..outputs import atomic_path, atomic_write, claim_folder, write_json
from ..potential.package import resolve_package_path, save_package, versions
from ..progress import progress as progress_bar
from . import distributed
from .config import TrainConfig
from .determinism import deterministic_training
from .finetune import parameter_groups
from .loss import Loss
from .schedule import EMA, LRSchedule

def _atomic_torch_save(obj, path: Path):
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


class _StreamedGraphs:
    """The graphs of an on-disk training set, made from its structures on access (none kept)."""

    def __init__(self, dataset, cutoff: float):
        self.dataset, self.cutoff = dataset, cutoff

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, k):
        return graph_of(self.dataset[int(k)], self.cutoff)


class _Both:
    """Two hashes fed by one pass (``update`` only)."""

    def __init__(self, *hashes):
        self.hashes = hashes

    def update(self, data: bytes) -> None:
        for h in self.hashes:
            h.update(data)


class Trainer:
    """Fits ``model`` (per-atom energies) to energies and forces of ``train_set``.

    Everything a run produces lands in ``run_dir``: config.yaml (resolved), versions.json,
    metrics.jsonl|csv, checkpoint.pt (every epoch, or every ``val_every`` and after the last) and model.safetensors
    (best EMA weights, or the last epoch's with ``keep: last``).
    Running the same trainer on the same ``run_dir`` again resumes from the last checkpoint (epochs,
    time budget and early-stop patience may change between the two; anything else is refused). A ``run_dir``
    holding another run's files is refused before anything is written, unless ``overwrite`` (which starts
    afresh there); ``owner`` lets a caller that manages the folder (a committee) claim it under its own key.
    After `fit`, ``trainer.model`` holds the kept EMA weights, the same as model.safetensors.
    With ``train.workers`` > 1, `fit` runs the epochs in that many data-parallel processes (see `distributed`).
    """

    def __init__(self, model, train_set, val_set, config: TrainConfig | dict | None = None, run_dir="run",
                 extra_config: dict | None = None, overwrite: bool = False, owner: str | None = None,
                 same_budget: bool = False):
        self.same_budget = same_budget  # a checkpoint with another epochs / max_time_min is refused, not resumed
        self.config = config if isinstance(config, TrainConfig) else TrainConfig(**(config or {}))
        if distributed.launched() and not distributed.active():  # torchrun: this process's own GPU
            self.config = self.config.model_copy(update={"device": distributed.launched_device(self.config.device)})
        self.run_dir = Path(run_dir)
        if hasattr(train_set, "in_file_order"):  # on disk: passes read each block once (the epochs shuffle)
            train_set = train_set.in_file_order()
        need = dict(energy=self.config.energy_weight > 0, forces=self.config.forces_weight > 0)
        train_set.require_labels(**need)
        val_set.require_labels(**need)
        refuse_constant_labels(train_set, **need)
        if self.config.stress_weight > 0 and not any(s.stress is not None for s in train_set):
            # A stress weight with no stress labels would be a silent zero loss term.
            raise ConfigError("train.stress_weight > 0 but no training structure has a stress label "
                              "(set data.stress_key to the key your file uses)")
        self.potential = Potential(model, dtype=self.config.dtype, device=self.config.device)
        self.model = self.potential.model
        if self.config.dipole_weight > 0:
            # A dipole weight without dipole labels or without a field response would be a silent zero loss term.
            if not self.potential.field_dependent:
                raise ConfigError("train.dipole_weight > 0 needs a model with a field response (model.field=true)")
            if not any(s.info.get("dipole") is not None for s in train_set):
                raise ConfigError("train.dipole_weight > 0 but no training structure has a dipole label "
                                  "(info['dipole'], read from REF_dipole)")
        self.potential.check_elements(train_set)
        self.potential.check_elements(val_set)
        # recorded in the package: a model that reads no charge is then refused, in MD and the ASE calculator, the
        # charge states it never saw (`Potential.check_charges`)
        self.total_charges = sorted({float(s.info.get("charge", 0.0)) for part in (train_set, val_set) for s in part})
        if hasattr(val_set, "epoch_order"):  # a part of an on-disk set: validation reads it every epoch
            from ..data import Dataset

            val_set = Dataset(list(val_set), name=val_set.name)
        self.train_set, self.val_set = train_set, val_set
        cutoff = self.potential.cutoff
        # Neighbor search once per structure: training batches are pure tensor stacking. A set on disk (HDF5,
        # larger than memory) is streamed: its graphs are made when a batch needs them.
        self.train_graphs = (_StreamedGraphs(train_set, cutoff) if hasattr(train_set, "epoch_order")
                             else [graph_of(s, cutoff) for s in train_set])
        self.val_graphs = [graph_of(s, cutoff) for s in val_set]
        self.loss = Loss(self.config.energy_weight, self.config.forces_weight, self.config.stress_weight,
                         self.config.loss, self.config.huber_delta, self.config.dipole_weight)
        params = self.model.parameters()
        if self.config.freeze or self.config.lr_scale:
            params = parameter_groups(self.model, self.config.lr_scale, self.config.freeze)
        self.optimizer = torch.optim.AdamW(params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        self.start_weights = self._start_weights()
        steps_per_epoch = math.ceil(len(train_set) / self.config.batch_size)
        self.schedule = LRSchedule(self.optimizer, self.config.lr, self.config.schedule,
                                   self.config.warmup_epochs * steps_per_epoch, self.config.epochs * steps_per_epoch,
                                   self.config.plateau_patience, self.config.plateau_factor, self.config.min_lr)
        self.ema = EMA(self.model, self.config.ema_decay) if self.config.ema_decay > 0 else None
        self.extra_config = extra_config or {}
        self.resolved = {"train": self.config.model_dump(), "model": model.get_config(),
                         "data": {"n_train": len(train_set), "n_val": len(val_set),
                                  "train_source": train_set.name, "val_source": val_set.name},
                         **(extra_config or {})}
        self.fingerprint = self._fingerprint(model, train_set, val_set)
        self.epoch, self.best_val, self.bad_epochs, self.elapsed, self.history = 0, math.inf, 0, 0.0, []
        self._pending_s = 0.0  # training time since the last validation (`val_every`)
        # `train.spike_factor`: epochs undone so far, the lowest kept epoch's mean training loss, undos in a row
        self.spike_undos, self.lowest_train_loss, self._undos_in_a_row = 0, math.inf, 0
        self.owner = owner or self.fingerprint  # (data-parallel workers claim the folder under the same key)
        self._claim(overwrite, self.owner)

    # Settings a run may resume with other values of. Most do not touch the trajectory; ``epochs`` and
    # ``max_time_min`` set when it stops, and with a cosine schedule also the length of the cosine, so a cosine
    # run resumed with another value follows a different (still valid) schedule from where it resumes.
    FREE_SETTINGS = {"epochs", "max_time_min", "early_stop_patience", "progress", "eval_batch_size", "log_format",
                      "device", "workers"}

    def _fingerprint(self, model, train_set, val_set) -> str:
        """Hash of what determines the trajectory: model config, trajectory settings and the data's content."""
        h = hashlib.sha256()
        settings = self.config.identity(exclude=self.FREE_SETTINGS)
        # From a package, the model is the package's (its bytes below) with reference energies refitted to the data
        # (hashed below) by running the model: numbers whose last bits depend on threads and kernels, which would
        # refuse a resume on another machine. So the package and the data identify it, not the refitted config.
        config = {"init_from": "package"} if self.config.init_from else model.get_config()
        h.update(json.dumps({"model": config, "train": settings}, sort_keys=True, default=str).encode())
        # Streamed from disk through a cache smaller than the set: the epochs' order depends on the cache too.
        # (A set the cache holds whole is shuffled as in memory: its key is what it was before this was added.)
        order = train_set.order_key() if hasattr(train_set, "order_key") else None
        if order is not None and order["cache_bytes"] != "whole set":
            h.update(json.dumps(order, sort_keys=True).encode())
        if self.config.init_from:  # the starting weights are the package's: a run from another one is another run
            h.update(resolve_package_path(self.config.init_from).read_bytes())
        # The same without the model's config (fitted numbers whose last bits depend on the machine): what the
        # workers of one run must share (`distributed.agree`). One pass over the data feeds both.
        start = hashlib.sha256(json.dumps([settings, order], sort_keys=True, default=str).encode())
        update_with_structures(_Both(h, start), train_set, val_set)
        self.start_key = start.hexdigest()
        return h.hexdigest()

    # -- persistence ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    # Every file a training run writes into its folder.
    OUTPUTS = ("checkpoint.pt", "model.safetensors", "metrics.jsonl", "metrics.csv", "summary.json", "config.yaml",
               "versions.json")

    def _claim(self, overwrite: bool, owner: str) -> None:
        """Make ``run_dir`` this run's before anything is written (`ffspace.outputs.claim_folder`, as ``owner``:
        the training fingerprint, or the key of a caller that manages the folder, such as a committee): a folder
        of another configuration, or holding files no run of this configuration wrote, is refused; with
        ``overwrite`` its training outputs are removed and training starts afresh."""
        if distributed.launched_rank() != 0:  # torchrun: rank 0 claims and writes
            return
        if self.checkpoint_path.exists() and not overwrite:
            theirs = self._read_checkpoint()["fingerprint"]
            if theirs != self.fingerprint:
                raise ConfigError(f"{self.run_dir} holds a checkpoint of a different configuration; use another "
                                  f"run directory, or set overwrite=true to start afresh there (its model, "
                                  f"checkpoint and metrics are then replaced)")
        claim_folder(self.run_dir, owner, what="training run folder", overwrite=overwrite,
                     ours=lambda folder: self.checkpoint_path.exists())  # a matching checkpoint: checked above
        if overwrite and distributed.rank() == 0:
            for name in self.OUTPUTS:
                (self.run_dir / name).unlink(missing_ok=True)

    def _read_checkpoint(self) -> dict:
        """The checkpoint's contents (tensors and plain values only; anything else is refused unread)."""
        import pickle

        path = self.checkpoint_path
        try:
            state = torch.load(path, map_location=self.potential.device, weights_only=True)
        except pickle.UnpicklingError:
            raise ConfigError(f"training checkpoint {path} holds objects other than tensors and plain values; "
                              "ffspace does not load it (loading could run code). Delete it to start training over, "
                              "or use another run directory") from None
        except Exception as exc:  # noqa: BLE001 - truncated or foreign files raise many types
            raise ConfigError(f"training checkpoint {path} cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); it is corrupt or truncated. Delete it "
                              "to start training over from epoch 0") from None
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise ConfigError(f"training checkpoint {path} is not an ffspace training checkpoint; delete it to start "
                              "training over, or use another run directory")
        return state

    def _write_run_files(self):
        atomic_write(self.run_dir / "config.yaml", yaml.safe_dump(self.resolved, sort_keys=False), fsync=False)
        write_json(self.run_dir / "versions.json", versions(), fsync=False)

    def _write_metrics(self):
        if self.config.log_format == "jsonl":
            text = "".join(json.dumps(row) + "\n" for row in self.history)
            path = self.run_dir / "metrics.jsonl"
        else:
            buf = io.StringIO()
            if self.history:
                w = csv.DictWriter(buf, fieldnames=list(self.history[-1]))
                w.writeheader()
                w.writerows(self.history)
            text, path = buf.getvalue(), self.run_dir / "metrics.csv"
        atomic_write(path, text, fsync=False)

    def save_checkpoint(self):
        state = {"fingerprint": self.fingerprint, "start_key": self.start_key, "epoch": self.epoch,
                 "best_val": self.best_val,
                 "bad_epochs": self.bad_epochs, "elapsed": self.elapsed,
                 "budget": [self.config.epochs, self.config.max_time_min],
                 "history_json": json.dumps(self.history),
                 "spike": [self.spike_undos, self.lowest_train_loss, self._undos_in_a_row],
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "schedule": self.schedule.state_dict(), "ema": self.ema.state_dict() if self.ema else {}}
        _atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> bool:
        if not self.checkpoint_path.exists():
            return False
        state = self._read_checkpoint()
        # Worker r > 0 of a run across machines: its fitted reference energies (in the fingerprint) may differ from
        # worker 0's in the last bits; the same settings and data suffice, and `agree` then sends worker 0's weights.
        same_run = distributed.rank() != 0 and state.get("start_key") == self.start_key
        if state["fingerprint"] != self.fingerprint and not same_run:
            streamed = hasattr(self.train_set, "order_key")
            raise ConfigError(f"{self.run_dir} holds a checkpoint of a different configuration"
                              + (" (for a training set streamed from disk, `data.cache_mb` is part of it: it sets "
                                 "the epochs' read order)" if streamed else "")
                              + f"; use another run directory (or delete {self.checkpoint_path}) to start afresh")
        budget = [self.config.epochs, self.config.max_time_min]
        if self.same_budget and "budget" in state and list(state["budget"]) != budget:
            # With a cosine on the clock a longer budget would restart the learning rate of a finished run, and a
            # shorter one would report a longer training under it: neither is the run the caller asked for.
            raise ConfigError(f"{self.run_dir} holds a training with epochs / max_time_min {state['budget']}, not "
                              f"{budget}; delete {self.run_dir} to train again with the new budget")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.best_val = int(state["epoch"]), float(state["best_val"])
        self.bad_epochs, self.elapsed = int(state["bad_epochs"]), float(state["elapsed"])
        self.history = json.loads(state["history_json"])
        if "spike" in state:
            undos, lowest, in_a_row = state["spike"]
            self.spike_undos, self.lowest_train_loss, self._undos_in_a_row = int(undos), float(lowest), int(in_a_row)
        return True

    def _load_best(self):
        """After training, the model holds the kept EMA weights (`TrainConfig.keep`), the same as model.safetensors."""
        from safetensors.torch import load_file

        path = self.run_dir / "model.safetensors"
        if path.exists():
            self.model.load_state_dict({k: v.to(self.potential.device) for k, v in load_file(str(path)).items()})

    # -- evaluation -------------------------------------------------------------------------
    @contextmanager
    def _with_ema(self):
        """Swap the EMA weights in for evaluation and saving, then restore the training weights."""
        if not self.ema:
            yield
            return
        saved = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.ema.shadow)
        try:
            yield
        finally:
            self.model.load_state_dict(saved)

    def validate(self) -> dict:
        """Metrics of the EMA weights on the validation set; ``loss`` uses the training weights."""
        w = self.loss.w
        with self._with_ema():
            pred = predict(self.potential, self.val_graphs, self.config.eval_batch_size, stress=w["stress"] > 0)
        metrics = error_metrics(pred, self.val_set)
        loss = 0.0
        if w["energy"]:
            n = np.array([s.n_atoms for s in self.val_set])
            e_ref = np.array([s.energy for s in self.val_set])
            loss += w["energy"] * float((((pred["energy"] - e_ref) / n) ** 2).mean())
        if w["forces"]:
            f_ref = np.concatenate([s.forces for s in self.val_set])
            loss += w["forces"] * float(((pred["forces"] - f_ref) ** 2).mean())
        if w["stress"]:
            have = [k for k, s in enumerate(self.val_set) if s.stress is not None]
            if have:
                ref = np.stack([self.val_set[k].stress for k in have])
                loss += w["stress"] * float(((pred["stress"][have] - ref) ** 2).mean())
        if w["dipole"]:
            have = [k for k, s in enumerate(self.val_set) if s.info.get("dipole") is not None]
            if have:
                ref = np.stack([self.val_set[k].info["dipole"] for k in have])
                loss += w["dipole"] * float(((pred["dipole"][have] - ref) ** 2).mean())
        metrics["loss"] = loss
        return metrics

    # -- training ---------------------------------------------------------------------------
    def _share(self, idx, mine) -> dict:
        """This worker's fraction of the batch ``idx``: of its frames (energy), atoms (forces), stress labels."""
        frames = [self.train_set[k] for k in idx]
        own = [self.train_set[k] for k in mine]
        n_stress = sum(s.stress is not None for s in frames)
        n_dipole = sum(s.info.get("dipole") is not None for s in frames)
        return {"energy": len(own) / len(frames),
                "forces": sum(s.n_atoms for s in own) / sum(s.n_atoms for s in frames),
                "stress": sum(s.stress is not None for s in own) / n_stress if n_stress else 0.0,
                "dipole": sum(s.info.get("dipole") is not None for s in own) / n_dipole if n_dipole else 0.0}

    def _reported(self, term: str, idx) -> bool:
        """Whether the loss of the whole batch ``idx`` has this term (its weight is set and its labels exist)."""
        if not self.loss.w[term]:
            return False
        if term == "stress":
            return any(self.train_set[k].stress is not None for k in idx)
        if term == "dipole":
            return any(self.train_set[k].info.get("dipole") is not None for k in idx)
        return True

    def _train_step(self, idx, spent: float):
        """One optimizer step on batch ``idx`` (this worker's part of it); returns the batch's loss and parts."""
        cfg = self.config
        worker, workers = distributed.rank(), distributed.world_size()
        mine = idx[worker::workers]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        parts = {}
        if len(mine):
            batch = collate([self.train_graphs[k] for k in mine], dtype=self.potential.dtype,
                            device=self.potential.device)
            out = self.potential.compute(batch, forces=cfg.forces_weight > 0, stress=cfg.stress_weight > 0,
                                         training=True, dipole=cfg.dipole_weight > 0)
            share = self._share(idx, mine) if workers > 1 else None
            loss, parts = self.loss(out, batch, share)
            loss.backward()
            loss = float(loss.detach())
        else:  # a last batch smaller than the number of workers: this one adds nothing
            loss = 0.0
        if workers > 1:
            # One all-reduce carries the gradients, a has-gradient flag per parameter, the loss, its parts and
            # the mean time spent (for the wall-clock schedule, so that every worker sets the same lr).
            names = [k for k in sorted(self.loss.w) if self._reported(k, idx)]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flags = [0.0 if p.grad is None else 1.0 for p in params]
            stats = torch.tensor([loss, spent / workers] + [parts.get(k, 0.0) for k in names] + flags,
                                 dtype=grads[0].dtype, device=self.potential.device)
            *grads, stats = distributed.all_reduce_sum(grads + [stats])
            used = stats[2 + len(names):]
            for p, g, u in zip(params, grads, used):
                # A parameter no worker's batch reached keeps no gradient, as in one process (AdamW skips it).
                p.grad = g if float(u) > 0 else None
            loss, spent = float(stats[0]), float(stats[1])
            parts = {k: float(v) for k, v in zip(names, stats[2:2 + len(names)])}
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at epoch {self.epoch + 1}; "
                                     f"lower the learning rate (now {self.schedule.current():.2e})")
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        if cfg.max_time_min:
            self.schedule.set_time_fraction(spent / (cfg.max_time_min * 60))
        self.optimizer.step()
        if self.start_weights:
            self._pull_to_start()
        self.schedule.step()
        if self.ema:
            self.ema.update(self.model)
        return loss, parts

    def _start_weights(self) -> list:
        """The package's weights, for ``train.l2_to_start``: taken before any step, so a resumed run (which
        rebuilds the model from the package, then loads its checkpoint) pulls toward the same ones."""
        if not self.config.l2_to_start:
            return []
        if not self.config.init_from:
            raise ConfigError("train.l2_to_start pulls toward a package's weights: set train.init_from too")
        # (per group, in the optimizer's order: no lookup by tensor identity, which a copy to a worker may not keep)
        return [[p.detach().clone() for p in group["params"]] for group in self.optimizer.param_groups]

    @torch.no_grad()
    def _pull_to_start(self) -> None:
        """L2-SP, decoupled (as AdamW decays toward zero): w ← w − lr · λ · (w − w_start), each group at its lr."""
        for group, start in zip(self.optimizer.param_groups, self.start_weights):
            factor = group["lr"] * self.config.l2_to_start
            for p, p0 in zip(group["params"], start):
                p.sub_(factor * (p - p0))

    def _train_epoch(self) -> dict:
        cfg = self.config
        seed = cfg.seed * 100_003 + self.epoch
        # (an epoch trained again after an undone spike takes another order: the same one may well spike again)
        rng = np.random.default_rng([seed, self.spike_undos] if self.spike_undos else seed)
        # An on-disk set orders the epoch so that each of its blocks is read once (`HDF5Dataset.epoch_order`).
        order = (self.train_set.epoch_order(rng) if hasattr(self.train_set, "epoch_order")
                 else rng.permutation(len(self.train_graphs)))
        batches = [order[k:k + cfg.batch_size] for k in range(0, len(order), cfg.batch_size)]
        self.model.train()
        totals, count = {}, 0
        # Off a terminal the bar is silent: the epoch's summary line below is the log.
        bar = progress_bar(batches, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                           enabled=cfg.progress and distributed.rank() == 0, log_every_s=None)
        last_val = {}
        if self.history:  # live validation MAE of the last epoch next to the running loss
            prev = self.history[-1]
            last_val = {"val_E_meV": f"{prev.get('val_energy_mae_meV', float('nan')):.3g}",
                        "val_F_meV/Å": f"{prev.get('val_forces_mae_meV_A', float('nan')):.3g}"}
        t_start = time.perf_counter()
        for idx in bar:
            loss, parts = self._train_step(idx, self.elapsed + time.perf_counter() - t_start)
            count += 1
            totals["loss"] = totals.get("loss", 0.0) + loss
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v
            bar.set_postfix(loss=f"{totals['loss'] / count:.4g}", **last_val)
        bar.close()
        return {f"train_{k}": v / max(count, 1) for k, v in totals.items()}

    def fit(self) -> dict:
        """Train until max epochs, early stop or the time budget; returns the best validation metrics. A model
        that is linear in its weights (linear ACE) is fitted by least squares instead (`least_squares`)."""
        from .least_squares import fit_least_squares, linear_term

        if linear_term(self.model) is not None:
            if distributed.launched():
                raise ConfigError("a linear model (linear ACE) is fitted by least squares in one process: run it "
                                  "without torchrun")
            if self.config.l2_to_start:
                raise ConfigError("train.l2_to_start applies to gradient steps: a linear model (linear ACE) is "
                                  "fitted by least squares, in one solve")
            return fit_least_squares(self)
        workers = self.config.workers
        if distributed.launched() and not distributed.active():
            return self._fit_launched()
        if workers == 1 or distributed.active():
            return self.fit_loop()
        start = {k: v.clone() for k, v in self.model.state_dict().items()} if self.start_weights else None
        self.load_checkpoint()  # a checkpoint of another configuration is refused here, before any worker starts
        if start is not None:
            # The workers take the model as sent and load the checkpoint themselves: sent as the package's, it is
            # what their train.l2_to_start pulls toward, not the checkpoint's weights.
            self.model.load_state_dict(start)
        distributed.spawn(self, workers)
        # The workers are gone: take their final state from the files worker 0 wrote.
        self.load_checkpoint()
        self._load_best()
        return json.loads((self.run_dir / "summary.json").read_text())

    def _fit_launched(self) -> dict:
        """One of the processes torchrun started: join its group, run the epochs, leave together."""
        if self.config.workers != 1:
            raise ConfigError("train.workers > 1 under torchrun: the launcher starts the processes (its "
                              "--nproc-per-node); leave train.workers at 1")
        distributed.join_launched(str(self.potential.device))
        try:
            summary = self.fit_loop()
            distributed.barrier()  # rank 0 has written the package and summary before anyone reads them
        finally:
            distributed.leave()
        self._load_best()
        return summary

    def fit_loop(self) -> dict:
        """The epochs of `fit`, in this process (one data-parallel worker when inside a process group), with
        torch's deterministic algorithms on while they run on CPU (`deterministic_training`)."""
        with deterministic_training(self.potential.device):
            return self._epochs()

    def _epochs(self) -> dict:
        cfg = self.config
        lead = distributed.rank() == 0  # the worker that validates and writes
        try:
            resumed, problem = self.load_checkpoint(), None
        except ConfigError as exc:  # among workers: said by every one of them (`agree`), none left waiting
            if not distributed.active():
                raise
            resumed, problem = False, str(exc)
        distributed.agree([*self.model.parameters(), *self.model.buffers(),
                           *(self.ema.shadow.values() if self.ema else ())],
                          {"epoch": self.epoch, "settings and data": self.start_key, "checkpoint problem": problem})
        if problem:
            raise ConfigError(problem)
        if lead:
            self._write_run_files()
        if resumed and lead:
            print(f"resuming {self.run_dir} from epoch {self.epoch}", file=sys.stderr)
        stop_reason = "max epochs"
        last_epoch_s = self.history[-1]["epoch_s"] if self.history else 0.0
        guard = cfg.spike_factor > 0
        starts = []  # (train.spike_factor) the states at the starts of the last two epochs, oldest first
        closed = None  # the row of the last epoch closed (validated or not): an undo may return to its end
        while self.epoch < cfg.epochs:
            # keep: last takes the end of the schedule whatever the validation says, so it does not stop early
            if cfg.keep == "best" and self.bad_epochs >= cfg.early_stop_patience:
                stop_reason = "early stop"
                break
            if self._over_budget(self.elapsed, last_epoch_s):
                # The next epoch would overrun the budget: stop now, inside it.
                stop_reason = "time budget"
                break
            t0 = time.perf_counter()
            if guard:
                starts = (starts + [self._snapshot(closed)])[-2:]
            row = {"epoch": self.epoch + 1, "lr": self.schedule.current()}
            try:
                row.update(self._train_epoch())
            except FloatingPointError:  # a non-finite loss: the largest spike of all
                if not guard or self._undos_in_a_row >= self.MAX_UNDOS or not math.isfinite(self.lowest_train_loss):
                    raise
                row["train_loss"] = math.inf
            if guard:
                if self._spiked(row["train_loss"]):
                    closed, last_epoch_s = self._undo_spike(starts, row["train_loss"], time.perf_counter() - t0,
                                                            last_epoch_s, lead)
                    starts = []
                    continue
                self._undos_in_a_row = 0
                self.lowest_train_loss = min(self.lowest_train_loss, row["train_loss"])
            self.epoch += 1
            last_epoch_s = self._close_epoch(row, t0, lead)
            closed = row
        if guard and self.epoch > (self.history[-1]["epoch"] if self.history else 0):
            # An undo went back to an epoch closed without validation (`val_every`), and the budget ended the run
            # there: validate, package and checkpoint it now, as the loop's last epoch always is (its training time
            # was counted when it closed: none is added).
            self._close_epoch({**closed, "validated_after_undo": True}, time.perf_counter(), lead, force=True)
        if lead:
            self._load_best()
        best = min(self.history, key=lambda r: r["val_loss"]) if self.history else {}
        summary = {"stop_reason": stop_reason, "epochs": self.epoch, "time_s": self.elapsed, "best": best,
                   "model": str(self.run_dir / "model.safetensors")}
        if guard:
            summary["spike_undos"] = self.spike_undos
        if cfg.keep == "last":  # the package holds the last epoch's weights, not the best one's
            summary["kept"] = self.history[-1] if self.history else {}
        if lead:
            write_json(self.run_dir / "summary.json", summary, fsync=False)
        return summary

    MAX_UNDOS = 3  # undone epochs in a row before one is kept (`train.spike_factor`)

    def _spiked(self, loss: float) -> bool:
        """Whether the epoch's mean training loss is a spike (`train.spike_factor`): above the factor times the lowest
        kept epoch's, with fewer than MAX_UNDOS undos in a row (a loss that stays high is then the new normal)."""
        return (self._undos_in_a_row < self.MAX_UNDOS and math.isfinite(self.lowest_train_loss)
                and not loss <= self.config.spike_factor * self.lowest_train_loss)

    def _snapshot(self, closed: dict | None) -> dict:
        """What an undone epoch restores (copies: the optimizer's and EMA's states are live tensors), with the row
        of the epoch that ended here (``closed``)."""
        return {"epoch": self.epoch, "closed": closed, "lowest": self.lowest_train_loss,
                "model": {k: v.clone() for k, v in self.model.state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "schedule": self.schedule.state_dict(),
                "ema": {k: v.clone() for k, v in self.ema.state_dict().items()} if self.ema else None}

    def _undo_spike(self, starts: list, loss: float, spent: float, last_epoch_s: float, lead: bool):
        """Undo the spiked epoch, and the one before it when that was not validated (a blow-up that began late in
        it); halve the learning rate from there on. The time spent counts against the budget (and in the log's
        ``epochs_s``). Returns the row of the epoch gone back to and the budget's estimate of the next epoch."""
        # worker 0's clock for all: every worker must take the same budget decisions after this
        (spent,) = distributed.broadcast_floats([spent], self.potential.device)
        last_validated = self.history[-1]["epoch"] if self.history else 0
        target = starts[0] if len(starts) == 2 and starts[0]["epoch"] >= last_validated else starts[-1]
        spiked_epoch = self.epoch + 1
        self.model.load_state_dict(target["model"])
        self.optimizer.load_state_dict(copy.deepcopy(target["optimizer"]))
        scale = self.schedule.spike_scale * 0.5
        self.schedule.load_state_dict(target["schedule"])
        self.schedule.spike_scale = scale
        self.schedule._apply()
        if self.ema:
            self.ema.load_state_dict(target["ema"])  # (it copies: the snapshot stays as taken)
        self.epoch, self.lowest_train_loss = target["epoch"], target["lowest"]
        self.spike_undos += 1
        self._undos_in_a_row += 1
        self.elapsed += spent
        self._pending_s += spent
        if lead:
            print(f"epoch {spiked_epoch}: mean training loss {loss:.4g}, above {self.config.spike_factor:g} × the "
                  f"lowest ({self.lowest_train_loss:.4g}): undone back to epoch {self.epoch}, learning rate × "
                  f"{scale:g} from here (undo {self.spike_undos})", file=sys.stderr)
        # (a non-finite loss may stop an epoch at its first step: the next one is estimated at a whole epoch)
        return target["closed"], max(spent, last_epoch_s)

    def _over_budget(self, elapsed: float, next_epoch_s: float) -> bool:
        """Whether an epoch of ``next_epoch_s`` after ``elapsed`` seconds of steps would overrun the time budget (the
        loop's stopping test, and `_close_epoch`'s one epoch ahead: the same arithmetic, so they cannot disagree)."""
        return bool(self.config.max_time_min) and elapsed + next_epoch_s > self.config.max_time_min * 60

    def _close_epoch(self, row: dict, t0: float, lead: bool, force: bool = False) -> float:
        """After the epoch's steps: count its training time and, every ``val_every`` epochs and after the last,
        validate and write the package, log and checkpoint; returns the epoch's training time. Between
        validations nothing is written: a killed run resumes from the last validated epoch and trains the rest again
        (the same steps from the checkpoint, so the same weights)."""
        cfg = self.config
        t1 = time.perf_counter()
        if cfg.val_every > 1 and self.epoch % cfg.val_every and not force:
            (epoch_s,) = distributed.broadcast_floats([t1 - t0], self.potential.device)  # worker 0's, as below
            # the loop's own stopping tests, one epoch ahead: the epoch it stops after is validated
            last = self.epoch >= cfg.epochs or self._over_budget(self.elapsed + epoch_s, epoch_s)
            if not last:
                self.elapsed += epoch_s
                self._pending_s += epoch_s
                return epoch_s
        val = self.validate() if lead else {"loss": math.nan}
        if lead and (val["loss"] < self.best_val or cfg.keep == "last"):
            with self._with_ema():
                save_package(self.run_dir / "model.safetensors", self.model,
                             extra={"epoch": self.epoch, "val": val, "run_config": self.resolved,
                                    "total_charges_e": self.total_charges})
        # Worker 0's validation loss and times are everyone's: the schedule, early stopping and the time budget
        # then decide the same on every worker. The budget (and a cosine on it) counts the training steps only:
        # validating costs each model what its inference costs (a C kernel or not), and a budget that counted it
        # would give two models of one benchmark different training time for the same minutes.
        val_loss, epoch_s, val_s = distributed.broadcast_floats(
            [val["loss"], t1 - t0, time.perf_counter() - t1], self.potential.device)
        since = self.epoch - (self.history[-1]["epoch"] if self.history else 0)  # epochs this validation covers
        self.schedule.epoch_end(val_loss, since)
        row.update({f"val_{k}": v for k, v in val.items() if k != "n_structures"})
        improved = val_loss < self.best_val
        if improved:
            self.best_val, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += since  # (the patience counts epochs)
        self.elapsed += epoch_s
        row["time_s"] = round(self.elapsed, 2)
        row["epoch_s"] = round(epoch_s, 3)
        if cfg.val_every > 1:  # the log has a row per validation: the training time since the last one
            row["epochs_s"] = round(self._pending_s + epoch_s, 3)
            self._pending_s = 0.0
        row["val_s"] = round(val_s, 3)
        self.history.append(row)
        if lead:
            self._write_metrics()
            self.save_checkpoint()
        if cfg.progress and lead:
            print(f"epoch {self.epoch:4d}  lr {row['lr']:.2e}  loss {row['train_loss']:.4g}  "
                  f"val {format_metrics(val)}{'  *' if improved else ''}", file=sys.stderr)
        return epoch_s

