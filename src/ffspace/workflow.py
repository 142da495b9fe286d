"""The end-to-end jobs behind the CLI, as plain functions: train, evaluate, md, and run (all three + report)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from .config import RunConfig, resolve_data_path
from .errors import ConfigError
from .data import Dataset, read_dataset
from .evaluate import error_metrics, format_metrics, predict
from .evaluate.metrics import metrics_table
from .evaluate.plots import md_plot, parity_plot
from .md import BlowUpMonitor, run_md
from .potential import Potential
from .potential.package import versions
from .train import Trainer, build_model_for_data

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _read(spec: str, cfg: RunConfig) -> Dataset:
    d = cfg.data
    return read_dataset(resolve_data_path(spec), format=d.format, energy_key=d.energy_key, forces_key=d.forces_key,
                        stress_key=d.stress_key, energy_unit=d.energy_unit)


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
    if cfg.data.test:
        test = _read(cfg.data.test, cfg)
        train, val = full.split([-1, n_val], seed=cfg.data.seed)
    else:
        n_test = max(1, set_size(cfg.data.n_test, n))
        train, val, test = full.split([-1, n_val, n_test], seed=cfg.data.seed)
    return train.require_nonempty(), val, test


def model_path(cfg: RunConfig) -> Path:
    return Path(cfg.model_path) if cfg.model_path else Path(cfg.out) / "train" / "model.safetensors"


def train(cfg: RunConfig) -> dict:
    train_set, val_set, _ = load_splits(cfg)
    print(f"data: {len(train_set)} train / {len(val_set)} validation structures from {cfg.data.train}",
          file=sys.stderr)
    model = build_model_for_data(cfg.model.model_dump(), train_set, seed=cfg.train.seed)
    trainer = Trainer(model, train_set, val_set, cfg.train, run_dir=Path(cfg.out) / "train",
                      extra_config={"data_config": cfg.data.model_dump(), "model_section": cfg.model.model_dump()})
    return trainer.fit()


def evaluate(cfg: RunConfig, out_dir: Path | None = None) -> dict:
    _, _, test = load_splits(cfg)
    pot = Potential.load(model_path(cfg), dtype=DTYPES[cfg.train.dtype], device=cfg.train.device)
    t0 = time.perf_counter()
    pred = predict(pot, test)
    seconds = time.perf_counter() - t0
    metrics = error_metrics(pred, test)
    metrics["predict_s_per_structure"] = seconds / len(test)
    out_dir = Path(out_dir or Path(cfg.out) / "eval")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    parity_plot(pred, test, out_dir / "parity.png", title=f"test set ({len(test)} structures)")
    print(f"test ({len(test)} structures): {format_metrics(metrics)}", file=sys.stderr)
    return metrics


def md(cfg: RunConfig, out_dir: Path | None = None):
    c = cfg.md
    if c.start:
        start = read_dataset(c.start, required=())[0]  # a start structure needs no labels
    else:
        start = load_splits(cfg)[2][0]
    pot = Potential.load(model_path(cfg), dtype=DTYPES[c.dtype], device=cfg.train.device)
    out_dir = Path(out_dir or Path(cfg.out) / "md")
    result = run_md(pot, start, steps=c.steps, timestep_fs=c.timestep_fs, ensemble=c.ensemble,
                    temperature=c.temperature, friction=c.friction, seed=c.seed, out_dir=out_dir,
                    traj_interval=c.traj_interval, monitor=BlowUpMonitor(c.max_force, c.min_distance),
                    progress=sys.stderr.isatty())
    md_plot(result.thermo, out_dir / "md_energy_temperature.png",
            title=f"{c.ensemble.upper()} {c.temperature:g} K, {c.timestep_fs} fs, {result.steps} steps ({result.status})")
    summary = {"status": result.status, "steps": result.steps, "time_ps": result.steps * c.timestep_fs / 1000,
               "mean_temperature_K": float(np.mean(result.thermo["temperature_K"])),
               "report": result.report}
    if c.ensemble == "nve":
        summary["energy_drift_eV_per_atom_per_ps"] = result.energy_drift()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"MD: {result.status} after {result.steps} steps ({summary['time_ps']:.2f} ps), "
          f"mean T {summary['mean_temperature_K']:.0f} K", file=sys.stderr)
    return result, summary


def run(cfg: RunConfig) -> Path:
    """Train, evaluate, run MD and write a report folder (metrics, parity plot, MD plot, report.md)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    (out / "versions.json").write_text(json.dumps(versions(), indent=2))
    t0 = time.perf_counter()
    summary = train(cfg)
    t_train = time.perf_counter() - t0
    report = out / "report"
    report.mkdir(exist_ok=True)
    metrics = evaluate(cfg, report)
    _, md_summary = md(cfg, out / "md")
    import shutil

    shutil.copy(out / "md" / "md_energy_temperature.png", report / "md_energy_temperature.png")
    shutil.copy(out / "md" / "thermo.csv", report / "md_thermo.csv")
    all_metrics = {"test": metrics, "training": summary, "md": md_summary, "train_time_s": t_train,
                   "total_time_s": time.perf_counter() - t0}
    (report / "metrics.json").write_text(json.dumps(all_metrics, indent=2, default=str))
    (report / "report.md").write_text(_report_md(cfg, all_metrics))
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
