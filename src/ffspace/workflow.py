"""The end-to-end jobs behind the CLI, as plain functions: train, evaluate, md, and run (all three + report)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from .config import RunConfig, resolve_data_path
from .data import Dataset, read_dataset
from .errors import ConfigError
from .evaluate import error_metrics, format_metrics, predict
from .evaluate.metrics import metrics_table
from .evaluate.plots import md_plot, parity_plot
from .md import run_md
from .outputs import atomic_write, claim_folder, write_json
from .potential import Potential, torch_device
from .potential.package import versions
from .train import Trainer, model_for_training
from .train.distributed import launched_rank

def _read(spec: str, cfg: RunConfig) -> Dataset:
    d = cfg.data
    return read_dataset(resolve_data_path(spec), format=d.format, energy_key=d.energy_key, forces_key=d.forces_key,
                        stress_key=d.stress_key, energy_unit=d.energy_unit, unit_check=d.unit_check,
                        cache_mb=d.cache_mb)


def set_size(x: float, n: int) -> int:
    """A set size given as a fraction (< 1) of ``n`` structures or as a whole count."""
    if x >= 1 and x != int(x):
        raise ConfigError(f"a set size is a fraction below 1 or a whole count, got {x}")
    return int(round(x * n)) if x < 1 else int(x)


def load_splits(cfg: RunConfig) -> tuple[Dataset, Dataset, Dataset]:
    """Train / validation / test sets as the config says, seeded."""
    full = _read(cfg.data.train, cfg)
    n = len(full)
    n_val = max(1, set_size(cfg.data.n_val, n))
    groups = full.info_values(cfg.data.split_by) if cfg.data.split_by else None
    if cfg.data.test:
        test = _read(cfg.data.test, cfg)
        train, val = full.split([-1, n_val], seed=cfg.data.seed, groups=groups)
    else:
        n_test = max(1, set_size(cfg.data.n_test, n))
        train, val, test = full.split([-1, n_val, n_test], seed=cfg.data.seed, groups=groups)
    if groups is not None and not len(train):
        raise ConfigError(f"data.split_by={cfg.data.split_by}: the {len(set(map(str, groups)))} molecules of "
                          f"{cfg.data.train} all went to validation and test (their sizes are rounded up to whole "
                          f"molecules): lower data.n_val / data.n_test")
    return train.require_nonempty(), val, test


def model_path(cfg: RunConfig) -> Path:
    return Path(cfg.model_path) if cfg.model_path else Path(cfg.out) / "train" / "model.safetensors"


def run_identity(cfg: RunConfig) -> str:
    """What makes a run the same run: its data, model and the training settings that shape the trajectory (and
    the package it evaluates, when one is named). Owns ``out`` and the folders under it (`ffspace.outputs`)."""
    train = cfg.train.identity(exclude=Trainer.FREE_SETTINGS)
    # (split_by enters only when set: runs made before it existed keep their identity)
    data = cfg.data.model_dump(exclude={"unit_check", "cache_mb"} | (set() if cfg.data.split_by else {"split_by"}))
    ident = {"data": data, "model": cfg.model.model_dump(), "train": train}
    if cfg.model_path:
        path = Path(cfg.model_path)
        ident["model_path"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path)
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def claim_out(cfg: RunConfig) -> Path:
    """``out`` as this run's folder (`ffspace.outputs.claim_folder`); every command claims it before writing."""
    if launched_rank() != 0:  # one of several processes torchrun started: rank 0 claims and writes
        return Path(cfg.out)
    return claim_folder(cfg.out, run_identity(cfg), what="output folder (out)", overwrite=cfg.overwrite)


def _trainer(cfg: RunConfig) -> Trainer:
    """The training step, ready to fit: data read and checked, model built (nothing written so far), then ``out``
    and its ``train`` folder claimed."""
    train_set, val_set, _ = load_splits(cfg)
    if cfg.train.init_from and "model" in cfg.model_fields_set:
        print(f"train.init_from={cfg.train.init_from}: the model is the package's; the `model` section is not used",
              file=sys.stderr)
    model = model_for_training(cfg.model.model_dump(), train_set, cfg.train)
    claim_out(cfg)
    return Trainer(model, train_set, val_set, cfg.train, run_dir=Path(cfg.out) / "train", overwrite=cfg.overwrite,
                   extra_config={"data_config": cfg.data.model_dump(), "model_section": cfg.model.model_dump()})


def train(cfg: RunConfig, trainer: Trainer | None = None) -> dict:
    trainer = trainer or _trainer(cfg)
    if launched_rank() == 0:
        print(f"data: {len(trainer.train_set)} train / {len(trainer.val_set)} validation structures from "
              f"{cfg.data.train}", file=sys.stderr)
    return trainer.fit()


def _eval_device(cfg: RunConfig):
    return torch_device(cfg.eval.device or cfg.train.device)


def _md_device(cfg: RunConfig):
    return torch_device(cfg.md.device or cfg.train.device)


def _md_start(cfg: RunConfig):
    if cfg.md.start:
        return read_dataset(cfg.md.start, required=())[0]  # a start structure needs no labels
    return load_splits(cfg)[2][0]


def evaluate(cfg: RunConfig, out_dir: Path | None = None) -> dict:
    """Test-set metrics and a parity plot, in ``out_dir`` (a folder the caller owns; default ``<out>/eval``,
    claimed for this run here)."""
    _, _, test = load_splits(cfg)
    device = _eval_device(cfg)
    if out_dir is None:
        out_dir = claim_folder(claim_out(cfg) / "eval", run_identity(cfg), what="evaluation folder",
                               overwrite=cfg.overwrite)
    pot = Potential.load(model_path(cfg), dtype=cfg.eval.dtype or cfg.train.dtype, device=device)
    t0 = time.perf_counter()
    pred = predict(pot, test, batch_size=cfg.eval.batch_size)
    seconds = time.perf_counter() - t0
    metrics = error_metrics(pred, test)
    metrics["predict_s_per_structure"] = seconds / len(test)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics, fsync=False)
    parity_plot(pred, test, out_dir / "parity.png", title=f"test set ({len(test)} structures)")
    print(f"test ({len(test)} structures): {format_metrics(metrics)}", file=sys.stderr)
    return metrics


def md(cfg: RunConfig, out_dir: Path | None = None):
    c = cfg.md
    start = _md_start(cfg)
    pot = Potential.load(model_path(cfg), dtype=c.dtype, device=_md_device(cfg), fast=c.fast)
    out_dir = Path(out_dir or claim_out(cfg) / "md")
    result = run_md(pot, start, out_dir=out_dir, progress=True, owner=run_identity(cfg), overwrite=cfg.overwrite,
                    **c.run_settings())
    md_plot(result.thermo, out_dir / "md_energy_temperature.png",
            title=f"{c.ensemble.upper()} {c.temperature:g} K, {c.timestep_fs} fs, {result.steps} steps ({result.status})")
    summary = {"status": result.status, "steps": result.steps, "time_ps": result.steps * c.timestep_fs / 1000,
               "mean_temperature_K": float(np.mean(result.thermo["temperature_K"])),
               "report": result.report}
    if c.ensemble == "nve" and len(result.thermo["time_fs"]) > 1:
        summary["energy_drift_eV_per_atom_per_ps"] = result.energy_drift()
    write_json(out_dir / "summary.json", summary, fsync=False)
    print(f"MD: {result.status} after {result.steps} steps ({summary['time_ps']:.2f} ps), "
          f"mean T {summary['mean_temperature_K']:.0f} K", file=sys.stderr)
    return result, summary


def run(cfg: RunConfig) -> Path:
    """Train, evaluate, run MD and write a report folder (metrics, parity plot, MD plot, report.md).

    Everything that can be refused is checked before anything is written: the data, the model settings, the
    devices, the MD start structure and the output folder's ownership."""
    _eval_device(cfg), _md_device(cfg)
    if cfg.md.start:
        _md_start(cfg)
    trainer = _trainer(cfg)
    out = Path(cfg.out)
    lead = launched_rank() == 0
    if lead:
        atomic_write(out / "config.yaml", yaml.safe_dump(cfg.model_dump(), sort_keys=False), fsync=False)
        write_json(out / "versions.json", versions(), fsync=False)
    t0 = time.perf_counter()
    summary = train(cfg, trainer)
    t_train = time.perf_counter() - t0
    if not lead:  # torchrun: the other processes helped train; rank 0 evaluates, runs MD and reports
        return out
    report = out / "report"
    report.mkdir(exist_ok=True)
    metrics = evaluate(cfg, report)
    _, md_summary = md(cfg, out / "md")
    import shutil

    shutil.copy(out / "md" / "md_energy_temperature.png", report / "md_energy_temperature.png")
    shutil.copy(out / "md" / "thermo.csv", report / "md_thermo.csv")
    all_metrics = {"test": metrics, "training": summary, "md": md_summary, "train_time_s": t_train,
                   "total_time_s": time.perf_counter() - t0}
    write_json(report / "metrics.json", all_metrics, fsync=False)
    atomic_write(report / "report.md", _report_md(cfg, all_metrics), fsync=False)
    print(f"report: {report}", file=sys.stderr)
    return report


def _report_md(cfg: RunConfig, m: dict) -> str:
    t, md_s = m["test"], m["md"]
    return f"""# ffspace run report

Data: `{cfg.data.train}`; model: `{cfg.model.family}` ({cfg.model.model_dump()}).

## Test-set accuracy ({t['n_structures']} structures)

{metrics_table(t)}

![parity](parity.png)

## Training

{m['training']['epochs']} epochs in {m['train_time_s']:.0f} s (stopped by: {m['training']['stop_reason']}).

## Molecular dynamics

{cfg.md.ensemble.upper()} at {cfg.md.temperature:g} K, {cfg.md.timestep_fs} fs steps: **{md_s['status']}** after
{md_s['steps']} steps ({md_s['time_ps']:.2f} ps), mean temperature {md_s['mean_temperature_K']:.0f} K.

![md](md_energy_temperature.png)
"""
