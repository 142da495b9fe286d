"""``ffspace bench``: train every model on every dataset under one budget, then measure and report.

Everything a step produces is written to ``<out>/<dataset>/<model>/`` as soon as it exists, so a killed
run resumes where it stopped: a finished training or measurement is read back, a training in flight
resumes from its last checkpoint (with the budget it had left).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from ..config import resolve_data_path, validation_problems
from ..data import Dataset, read_dataset
from ..data.digest import update_with_structures
from ..errors import ConfigError
from ..models import peers
from ..outputs import write_json
from ..evaluate import error_metrics, predict
from ..evaluate.metrics import energy_offset_metrics, per_element_force_errors
from ..potential import Potential
from ..potential.package import versions
from ..train import Trainer, TrainConfig, model_for_training
from ..units import meV
from ..workflow import set_size
from .. import runtime
from . import openmm_reference, speed, stability, systems
from .curves import curve_errors
from .config import BenchConfig, BenchDataset, BenchModel, TestSet
from .report import write_report


def run_bench(cfg: BenchConfig, command: str = "") -> dict:
    """Run (or resume) the whole benchmark; returns the results written to ``<out>/report.json``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False, allow_unicode=True))
    import torch

    if torch.get_num_threads() != cfg.threads:
        print(f"[bench] note: training runs on {torch.get_num_threads()} torch threads, timing on {cfg.threads}; "
              f"set OMP_NUM_THREADS={cfg.threads} to train on the same", file=sys.stderr)
    results = {"name": cfg.name, "command": command, "budget_min": cfg.budget_min,
               "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "cpu_count": os.cpu_count(), "memory_gb": round(speed.machine_memory_bytes() / 2**30, 1),
                           "torch_threads": torch.get_num_threads(), "device": cfg.device,
                           "timing_keeps_freed_memory": cfg.speed.keep_freed_memory,
                           "date": time.strftime("%Y-%m-%d %H:%M %Z")},
               "versions": {**versions(), **_installed(OPTIONAL_PACKAGES)}, "datasets": {}, "water": None}
    for ds in cfg.datasets:
        results["datasets"][ds.name] = _bench_dataset(cfg, ds, out / ds.name)
    if cfg.speed.enabled:
        _molecule_rounds(cfg, out, results)
    if cfg.speed.enabled and cfg.speed.water_replicas:
        write_report(results, out)  # hours of results on record before the scaling stage starts
        try:
            results["water"] = _water_scaling(cfg, out)
        except Exception as exc:  # noqa: BLE001 - the report of everything else must still be written
            print(f"[bench] water scaling failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            results["water"] = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"[:500]}
    write_report(results, out)
    return results


OPTIONAL_PACKAGES = ("e3nn", "vesin", "openmm", "mace-torch", "torchani")


def _installed(names) -> dict:
    """Versions of the optional packages a run may have used (those installed)."""
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def _read(ds: BenchDataset, spec: str | list[str]) -> Dataset:
    if isinstance(spec, list):  # several files, one set, in the order given
        parts = [_read(ds, one) for one in spec]
        return sum(parts[1:], parts[0])
    return read_dataset(resolve_data_path(spec), format=ds.format, energy_key=ds.energy_key,
                        forces_key=ds.forces_key)


def _read_set(ds: BenchDataset, spec: str | TestSet) -> Dataset:
    """An extrapolation set: a file read like the dataset's, or a `TestSet` with keys (and format) of its own."""
    if isinstance(spec, str):
        return _read(ds, spec)
    return read_dataset(resolve_data_path(spec.file), format=spec.format or ds.format,
                        energy_key=spec.energy_key or ds.energy_key, forces_key=spec.forces_key or ds.forces_key)


def _set_file(spec: str | TestSet) -> str:
    return spec if isinstance(spec, str) else spec.file


def splits(ds: BenchDataset) -> tuple[Dataset, Dataset, Dataset]:
    """Seeded train / validation / test sets of a dataset entry."""
    full = _read(ds, ds.train)
    n_val = max(1, set_size(ds.n_val, len(full)))
    if ds.test:
        test = _read(ds, ds.test)
        train, val = full.split([-1, n_val], seed=ds.seed)
    else:
        train, val, test = full.split([-1, n_val, max(1, set_size(ds.n_test, len(full)))], seed=ds.seed)
    if ds.n_train is not None:
        if ds.n_train > len(train):
            raise ConfigError(f"dataset {ds.name}: n_train={ds.n_train} but only {len(train)} structures are left "
                              f"for training in {ds.train}")
        train = train[:ds.n_train]
    return train.require_nonempty(), val, test


def _bench_dataset(cfg: BenchConfig, ds: BenchDataset, folder: Path) -> dict:
    train, val, test = splits(ds)
    # A separate test file may repeat training frames (3BPA's train_mixedT holds some of train_300K): they are
    # left out, and counted in the report. (A seeded split of one file cannot overlap.)
    test, test_dropped = _without(test, [train, val]) if ds.test else (test, 0)
    extrapolation, dropped = {}, {}
    for name, spec in ds.extrapolation.items():
        extrapolation[name], dropped[name] = _without(_read_set(ds, spec), [train, val])
    curves = {name: read_dataset(resolve_data_path(path), format=ds.format, energy_key=ds.energy_key,
                                 forces_key=ds.forces_key, required=("energy",)) for name, path in ds.curves.items()}
    print(f"[bench] {ds.name}: {len(train)} train / {len(val)} val / {len(test)} test"
          + "".join(f" / {len(v)} {k}" for k, v in extrapolation.items())
          + "".join(f" / {len(v)} frames along {k}" for k, v in curves.items()), file=sys.stderr)
    models = {}
    for m in cfg.models:
        family = m.model["family"]
        if peers.is_peer(family) and not peers.installed(family):
            hint = peers.install_hint(family)
            print(f"[bench] {m.name}: the peer {family!r} is not installed; {hint}", file=sys.stderr)
            models[m.name] = {"family": family, "model": m.model, "status": "not installed", "detail": hint}
            continue
        try:
            models[m.name] = _bench_model(cfg, ds, m, train, val, test, extrapolation, folder / m.name, curves)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken model must not take the benchmark down
            print(f"[bench] {m.name} on {ds.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            models[m.name] = {"family": m.model["family"], "model": m.model, "status": "error",
                              "detail": f"{type(exc).__name__}: {exc}"[:500]}
    reference = _openmm_molecule(cfg, folder, models, test[0])
    return {"n_train": len(train), "n_val": len(val), "n_test": len(test), "train": ds.train, "test": ds.test,
            "test_dropped_as_seen_in_training": test_dropped,
            "openmm_reference": reference, "extrapolation_sets": {k: {"file": _set_file(ds.extrapolation[k]), "n": len(v), "dropped_as_seen_in_training":
                                       dropped[k]} for k, v in extrapolation.items()},
            "curve_sets": {k: {"file": ds.curves[k], "n": len(v),
                               "reference_barrier_meV": float(np.ptp([s.energy for s in v]) / meV)}
                           for k, v in curves.items()},
            "models": models}


def _openmm_molecule(cfg: BenchConfig, folder: Path, models: dict, molecule) -> dict | None:
    """OpenMM's cost for the molecule with the first successful graph_mm model exported (the MM reference)."""
    if not (cfg.speed.enabled and openmm_reference.available()):
        return None
    for name, m in models.items():
        if m.get("status") == "ok" and m["family"] == "graph_mm":
            package = folder / name / "train" / "model.safetensors"
            key = {"weights": _file_hash(package), "molecule": molecule.positions.tolist(), "threads": cfg.threads,
                   "freed_memory_kept": runtime.freed_memory_kept()}  # OpenMM runs in this process
            try:
                passes = [_cached(*_in_pass(folder / "openmm_molecule.json", key, r),
                                  lambda: openmm_reference.molecule_cost(package, molecule, cfg.threads))
                          for r in range(cfg.speed.rounds)]
                return {"exported_model": name, **_fastest(passes)}
            except Exception as exc:  # noqa: BLE001 - the reference is optional; say why it is missing
                return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"[:300]}
    return None


def _without(data: Dataset, seen: list[Dataset]) -> tuple[Dataset, int]:
    """``data`` minus the structures that also occur in ``seen`` (same atoms and positions): a test set must
    not hold training frames (3BPA's train_mixedT repeats some of train_300K)."""
    def key(s):
        return hashlib.sha256(s.numbers.tobytes() + np.round(s.positions, 6).tobytes()).hexdigest()

    known = {key(s) for d in seen for s in d}
    kept = [s for s in data if key(s) not in known]
    if not kept:
        raise ConfigError(f"every one of the {len(data)} structures of {data.name} is also in the training or "
                          "validation set: a test or extrapolation set must hold structures the model did not see")
    return Dataset(kept, name=data.name, label_fields=getattr(data, "label_fields", None)), len(data) - len(kept)


PRIOR_FROM_BENCH = "model:"


def _with_bench_prior(m: BenchModel, run_dir: Path) -> tuple[BenchModel, dict]:
    """``model.prior: model:NAME`` names the package of model NAME of this benchmark on the same dataset (listed
    before it) as the frozen Δ prior: the entry with that package's path, and its hash for the cache key."""
    prior = m.model.get("prior")
    if not (isinstance(prior, str) and prior.startswith(PRIOR_FROM_BENCH)):
        return m, {}
    name = prior[len(PRIOR_FROM_BENCH):]
    package = run_dir.parent / name / "train" / "model.safetensors"
    if not package.is_file():
        raise ConfigError(f"model {m.name}: prior {prior!r} needs model {name!r} trained first on this dataset: "
                          f"list it before {m.name!r} in `models` (no package at {package})")
    return m.model_copy(update={"model": {**m.model, "prior": str(package)}}), {"prior": _file_hash(package)}


def _bench_model(cfg, ds, m: BenchModel, train, val, test, extrapolation, run_dir: Path,
                 curves: dict | None = None) -> dict:
    named, prior_key = m, {}
    m, prior_key = _with_bench_prior(m, run_dir)
    # Curves and extrapolation sets have caches of their own: adding one keeps the training. (The empty
    # `extrapolation` keeps the key of a dataset without sets what it was before sets were cached apart.)
    accuracy_key = {"model": named.model_dump(exclude={"stability"}),
                    "train": _train_config(cfg, m).identity(exclude={"progress"}),
                    "dataset": {**ds.model_dump(exclude={"curves"}), "extrapolation": {}},
                    "budget_min": cfg.budget_min, **prior_key}
    # The data's content, not only its file names, must match a kept training (a file relabelled or enlarged in
    # place). It is checked beside the key, not in it, so trainings kept before it was recorded stay usable.
    data = _set_digest(train, val)
    accuracy = _cached(run_dir / "accuracy.json", accuracy_key,
                       lambda: {**_train(cfg, m, train, val, run_dir), "data_digest": data})
    _check_data(accuracy, data, run_dir, named.name, ds.name)
    package = run_dir / "train" / "model.safetensors"
    weights = _file_hash(package)
    entry = {"family": m.model["family"], "model": named.model, "status": "ok", **accuracy,
             "validation": _validation(run_dir / "train" / "summary.json"),
             **_test_errors(cfg, m, package, weights, test, run_dir),
             "extrapolation": _extrapolation(cfg, ds, m, package, weights, extrapolation, run_dir)}
    if curves:
        key = {"weights": weights, "curves": {k: _file_hash(Path(resolve_data_path(ds.curves[k]))) for k in curves},
               "dtype": _train_config(cfg, m).dtype}
        entry["curves"] = _cached(run_dir / "curves.json", key, lambda: _curves(cfg, m, package, curves))
    if cfg.speed.enabled:
        system = speed.save_system(test[0], run_dir / "molecule.npz")
        entry["speed_molecule"] = {dtype: _measure(cfg, run_dir / f"speed_molecule_{dtype}.json", weights, package,
                                                   system, dtype, max(cfg.speed.repeats, 20),
                                                   md_steps=cfg.speed.md_steps)
                                   for dtype in cfg.speed.dtypes}
    if cfg.stability.enabled and m.stability:
        entry["stability"] = _stability(cfg, run_dir, weights, test[0], entry.get("speed_molecule"), train)
    return entry


def _measure(cfg: BenchConfig, path: Path, weights: str, package: Path, system: Path, dtype: str, repeats: int,
             round_: int = 0, md_steps: int = 0):
    """One timing measurement, cached unless it failed in a way a rerun may not repeat (error, kill).
    Pass ``round_`` > 0 of `SpeedConfig.rounds` has a file of its own next to the first pass's. ``md_steps``: also
    time full MD steps (molecules)."""
    key = {"weights": weights, "system": _file_hash(system), "dtype": dtype, "repeats": repeats,
           "threads": cfg.threads, "device": cfg.device, "memory_limit": _memory_limit(cfg),
           "max_call_s": cfg.speed.max_call_s, "time_budget_s": cfg.speed.time_budget_s,
           "keep_freed_memory": cfg.speed.keep_freed_memory}
    if md_steps:
        key["md_steps"] = md_steps
    path, key = _in_pass(path, key, round_)
    # Warm-up, calls up to the time budget, and a last one that may start just under it.
    timeout = 3 * cfg.speed.max_call_s + cfg.speed.time_budget_s + 300.0
    return _cached(path, key, lambda: speed.measure(package, system, dtype, cfg.threads, repeats, cfg.speed.max_call_s,
                                                    _memory_limit(cfg), cfg.device, timeout_s=timeout,
                                                    time_budget_s=cfg.speed.time_budget_s,
                                                    keep_freed_memory=cfg.speed.keep_freed_memory,
                                                    md_steps=md_steps),
                   keep=lambda r: r["status"] in ("ok", "not applicable")
                   or (r["status"] == "out of memory" and "SIGKILL" not in r.get("detail", "")))


def _in_pass(path: Path, key: dict, round_: int) -> tuple[Path, dict]:
    """The cache file and key of timing pass ``round_`` (the first pass keeps the plain name and key)."""
    if not round_:
        return path, key
    return path.with_name(f"{path.stem}_r{round_}{path.suffix}"), {**key, "round": round_}


def _fastest(rows: list[dict]) -> dict:
    """The pass with the lowest median (the first pass's row when no pass succeeded), with every pass's median."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if len(rows) < 2 or not ok:
        return rows[0]
    best = {**min(ok, key=lambda r: r["ms_per_step"]), "passes_ms_per_step": [r["ms_per_step"] for r in ok]}
    md = [r for r in ok if r.get("md_status") == "ok"]
    if md:  # the full MD steps of the pass with the fastest steps (a pass's calls and steps share its machine phase)
        fastest = min(md, key=lambda r: r["md_ms_per_step"])
        best.update({k: fastest[k] for k in ("md_status", "md_steps", "md_ms_per_step", "md_us_per_atom_step")},
                    passes_md_ms_per_step=[r["md_ms_per_step"] for r in md])
    return best


def _molecule_rounds(cfg: BenchConfig, out: Path, results: dict) -> None:
    """Passes 2.. of every model's molecule timing, after all training; each row becomes the fastest pass's."""
    passes = {}
    for r in range(1, cfg.speed.rounds):
        for ds_name, ds in results["datasets"].items():
            for name, m in ds["models"].items():
                folder = out / ds_name / name
                package = folder / "train" / "model.safetensors"
                for dtype, row in (m.get("speed_molecule") or {}).items():
                    if row.get("status") != "ok":
                        continue
                    again = _measure(cfg, folder / f"speed_molecule_{dtype}.json", _file_hash(package), package,
                                     folder / "molecule.npz", dtype, max(cfg.speed.repeats, 20), round_=r,
                                     md_steps=cfg.speed.md_steps)
                    passes.setdefault((ds_name, name, dtype), [row]).append(again)
                    print(f"[bench] {name} {dtype} molecule, timing pass {r + 1}/{cfg.speed.rounds}: "
                          + (f"{again['ms_per_step']:.2f} ms/step" if again["status"] == "ok" else again["status"]),
                          file=sys.stderr)
    for (ds_name, name, dtype), rows in passes.items():
        results["datasets"][ds_name]["models"][name]["speed_molecule"][dtype] = _fastest(rows)


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _cached_value(path: Path, key: dict) -> dict | None:
    """The finished step at ``path`` if it was made from ``key``, else None."""
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    return stored["value"] if stored.get("key") == _digest(key) else None


def _cached(path: Path, key: dict, compute, keep=lambda value: True, partial: Path | None = None) -> dict:
    """Read a finished step back if it was made from the same inputs (``key``), else compute it and write it
    at once: the unit of resumption. ``keep`` says whether a result is worth keeping for a rerun. ``partial``: the
    step's own checkpoint, removed only once the result is on disk (a kill in between then loses nothing)."""
    digest = _digest(key)
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("key") == digest:
            if partial is not None:  # (killed between writing the result and removing its checkpoint)
                Path(partial).unlink(missing_ok=True)
            return stored["value"]
        print(f"[bench] {path} was made with other settings: redoing it", file=sys.stderr)
    value = compute()
    if keep(value):
        write_json(path, {"key": digest, "inputs": key, "value": value}, fsync=partial is not None)
    if partial is not None:
        Path(partial).unlink(missing_ok=True)
    return value


def _file_hash(path: Path) -> str:
    """A file's SHA-256, or a folder's (a DeePMD system): its files' relative names and contents, in order."""
    path = Path(path)
    if not path.is_dir():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h = hashlib.sha256()
    for f in sorted(x for x in path.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def _train_config(cfg: BenchConfig, m: BenchModel) -> TrainConfig:
    # One budget for every model: a cosine schedule that ends with the budget of training minutes, no early stop.
    settings = {"epochs": 1_000_000, "schedule": "cosine", "warmup_epochs": 2, "early_stop_patience": 1_000_000,
                "max_time_min": cfg.budget_min, "device": cfg.device, "progress": sys.stderr.isatty(),
                **cfg.train, **m.train}
    try:
        return TrainConfig(**settings)
    except ValidationError as exc:
        raise ConfigError(f"model {m.name}: train settings: {validation_problems(exc)}") from None


def _train(cfg, m: BenchModel, train, val, run_dir: Path) -> dict:
    tc = _train_config(cfg, m)
    if tc.init_from:
        _check_init_family(m, tc.init_from)
    print(f"[bench] training {m.name} ({m.model['family']}) for {tc.max_time_min:g} min", file=sys.stderr)
    model = model_for_training(m.model, train, tc)
    trainer = Trainer(model, train, val, tc, run_dir=run_dir / "train",
                      extra_config={"bench_model": m.model_dump()}, same_budget=True)
    summary = trainer.fit()
    return {"training": {"epochs": summary["epochs"], "time_s": summary["time_s"],
                         "stop_reason": summary["stop_reason"], "dtype": tc.dtype}}


def _check_init_family(m: BenchModel, init_from) -> None:
    """A model fine-tuned from a package takes the package's model, not its own ``model`` section: the report
    names it by that section, so the two must be the same family (a swapped path would be mislabelled)."""
    from ..potential.package import read_metadata, resolve_package_path

    path = resolve_package_path(init_from)
    if not path.is_file():
        return  # the training says so, by name
    config = read_metadata(path)["model"]
    families = {t.get("family") for t in config.get("terms", [])} | {config.get("family")}
    if m.model["family"] not in families:
        raise ConfigError(f"model {m.name}: family {m.model['family']!r}, but its train.init_from package {init_from} "
                          f"holds {sorted(f for f in families if f not in (None, 'sum', 'reference'))}")


def _validation(summary: Path) -> dict:
    """The validation errors of the epoch whose weights were packaged (``kept`` with ``train.keep: last``, else the
    best epoch): what a rule that picks among recipes without looking at test sets needs. Read from
    ``train/summary.json`` each time, so trainings kept before it was reported have it too."""
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    row = data.get("kept") or data.get("best") or {}
    return {k[len("val_"):]: v for k, v in row.items() if k.startswith("val_") and k not in ("val_loss", "val_s")} | (
        {"epoch": row["epoch"]} if "epoch" in row else {})


def _check_data(accuracy: dict, digest: str, run_dir: Path, model: str, dataset: str) -> None:
    """Refuse a kept training made from other data under the same file names; say when it predates the check."""
    kept = accuracy.get("data_digest")
    if kept is None:
        print(f"[bench] {run_dir / 'accuracy.json'} was kept before ffspace recorded the training data's content: "
              "reused without that check (delete the folder to retrain if the data files changed)", file=sys.stderr)
    elif kept != digest:
        raise ConfigError(f"the training or validation frames of {dataset!r} are not those {model!r} was trained on "
                          f"in {run_dir} (same file names, other content: a file relabelled or enlarged in place); "
                          "delete that folder to retrain, or use another `out`")


def _set_digest(*sets) -> str:
    """Content hash of datasets: atoms, positions, energies (`update_with_structures`) and forces."""
    h = hashlib.sha256()
    update_with_structures(h, *sets)
    for s in (s for data in sets for s in data):
        if s.forces is not None:
            h.update(np.ascontiguousarray(s.forces, dtype=np.float64).tobytes())
    return h.hexdigest()


def _test_errors(cfg, m: BenchModel, package: Path, weights: str, test, run_dir: Path) -> dict:
    """Test-set errors, cached apart from the training (keyed by the weights and the test frames' content): a
    test set changed later (frames also in training left out) is evaluated again without retraining."""
    key = {"weights": weights, "test": _set_digest(test), "dtype": _train_config(cfg, m).dtype}

    def evaluate() -> dict:
        pot = Potential.load(package, dtype=_train_config(cfg, m).dtype, device=cfg.device)
        t0 = time.perf_counter()
        pred = predict(pot, test)
        result = {"test": error_metrics(pred, test), "per_element": per_element_force_errors(pred, test),
                  "predict_s_per_structure": (time.perf_counter() - t0) / len(test)}
        t = result["test"]
        print(f"[bench] {m.name}: test E MAE {t.get('energy_mae_meV', float('nan')):.2f} meV, "
              f"F MAE {t.get('forces_mae_meV_A', float('nan')):.2f} meV/Å", file=sys.stderr)
        return result

    return _cached(run_dir / "test_errors.json", key, evaluate)


def _extrapolation(cfg, ds, m: BenchModel, package: Path, weights: str, sets: dict, run_dir: Path) -> dict:
    """Errors on each extrapolation set, one cached file per set keyed by the weights and the set's file and
    keys: a set added to the config (a hot test set labelled later) is evaluated without retraining."""
    out = {}
    for name, data in sets.items():
        spec = ds.extrapolation[name]
        key = {"weights": weights, "set": spec if isinstance(spec, str) else spec.model_dump(),
               "file": _file_hash(Path(resolve_data_path(_set_file(spec)))), "n": len(data),
               "dtype": _train_config(cfg, m).dtype, "metrics": "offset"}  # the mean-offset metrics added
        out[name] = _cached(run_dir / f"extrapolation_{name}.json", key,
                            lambda data=data: _set_errors(cfg, m, package, data))
    return out


def _set_errors(cfg, m: BenchModel, package: Path, data) -> dict:
    pot = Potential.load(package, dtype=_train_config(cfg, m).dtype, device=cfg.device)
    pred = predict(pot, data)
    return {**error_metrics(pred, data), **energy_offset_metrics(pred, data),
            "per_element": per_element_force_errors(pred, data)}


def _curves(cfg, m: BenchModel, package: Path, curves: dict) -> dict:
    pot = Potential.load(package, dtype=_train_config(cfg, m).dtype, device=cfg.device)
    out = {name: curve_errors(pot, frames) for name, frames in curves.items()}
    print(f"[bench] {m.name}: " + ", ".join(f"{k} RMSE {v['rmse_meV']:.1f} meV" for k, v in out.items()),
          file=sys.stderr)
    return out


def _stability(cfg: BenchConfig, run_dir: Path, weights: str, start, molecule_speed: dict | None, train) -> dict:
    """Survival at each temperature (one cached file each) and the NVE drift, from the first test structure; the
    surviving runs' bond lengths and dihedral against the training frames'."""
    c = cfg.stability
    package = run_dir / "train" / "model.safetensors"
    pot = Potential.load(package, dtype=c.dtype, device=cfg.device)
    row = (molecule_speed or {}).get("float32")
    if not row or row.get("status") != "ok":
        row = _measure(cfg, run_dir / "speed_molecule_float32.json", weights, package,
                       speed.save_system(start, run_dir / "molecule.npz"), "float32", max(cfg.speed.repeats, 20))
    # The MD step's cost where it was timed (what the protocol runs: for a model with priors beside a C kernel it
    # differs from a call's on a batch), else a call's.
    cost = row.get("md_ms_per_step") or row.get("ms_per_step", float("inf"))
    fast = cost <= c.slow_ms_per_step

    def length(temperature: float) -> float:
        wanted = c.time_ps_at.get(temperature, c.time_ps)
        if fast or _cached_value(run_dir / f"stability_{temperature:g}K.json", {**key, "time_ps": wanted}):
            return wanted  # (a finished full-length run is kept, whatever a later timing says)
        return min(wanted, c.slow_time_ps)
    frames = list(train)
    dihedral = tuple(c.dihedral) if c.dihedral else stability.choose_dihedral(start, frames)
    reference = stability.reference_distributions(start, frames, dihedral)
    # slow_ms_per_step acts only through the run lengths: a new threshold that leaves a model's run length alone
    # keeps its finished runs.
    # "record": what a result holds; results from before the sampled distributions were kept are redone.
    key = {"weights": weights, "settings": c.model_dump(exclude={"slow_ms_per_step", "slow_time_ps", "time_ps_at"}),
           "start": start.positions.tolist(), "record": "distributions", "dihedral": dihedral,
           "reference": hashlib.sha256(json.dumps(reference).encode()).hexdigest()}
    runs = {}
    for temperature in c.temperatures:
        time_ps = length(temperature)
        print(f"[bench] stability {run_dir.name} at {temperature:g} K: {c.seeds} seeds × {time_ps:g} ps",
              file=sys.stderr)
        run_key = {**key, "time_ps": time_ps}
        # a killed run goes on from its last checkpoint (every ps); the name carries the key: other weights or
        # settings never resume it
        partial = run_dir / (f"stability_{temperature:g}K."
                             f"{hashlib.sha256(json.dumps(run_key).encode()).hexdigest()[:12]}.partial.npz")
        runs[f"{temperature:g}"] = _cached(
            run_dir / f"stability_{temperature:g}K.json", run_key,
            lambda: stability.survival(pot, start, temperature, c.seeds, time_ps, c.timestep_fs, c.friction,
                                       c.bond_tolerance, min_distance=c.min_distance, dihedral=dihedral,
                                       sample_fs=c.sample_fs, reference=reference, checkpoint=partial,
                                       progress=True, remove_checkpoint=False), partial=partial)
        print(f"[bench] stability {run_dir.name} at {temperature:g} K: {stability.verdict(runs[f'{temperature:g}'])}",
              file=sys.stderr)
    result = {"ms_per_step_float32": cost, "time_ps": max(length(t) for t in c.temperatures), "dtype": c.dtype,
              "runs": runs, "reference": {**reference, "dihedral_atoms": list(dihedral) if dihedral else None,
                                          "frames": len(frames)}}
    if c.nve_ps > 0:
        nve_key = {**key, "time_ps": c.nve_ps}
        partial = run_dir / f"stability_nve.{hashlib.sha256(json.dumps(nve_key).encode()).hexdigest()[:12]}.partial.npz"
        result["nve"] = _cached(run_dir / "stability_nve.json", nve_key, lambda: stability.nve_drift(
            pot, start, 300.0, c.seeds, c.nve_ps, c.timestep_fs, bond_tolerance=c.bond_tolerance, checkpoint=partial,
            progress=True, min_distance=c.min_distance, remove_checkpoint=False), partial=partial)
    return result


def _memory_limit(cfg: BenchConfig) -> int:
    if cfg.speed.memory_limit_gb:
        return int(cfg.speed.memory_limit_gb * 2**30)
    return int(0.85 * speed.machine_memory_bytes())


def _water_sizes(cfg: BenchConfig, folder: Path, package: Path, name: str, dtype: str, sizes: dict) -> list[dict]:
    """One timing process per water box, smallest first (peak memory, which sizes fit, the neighbour list); once
    a box fails or one call takes longer than max_call_s, the larger ones are skipped."""
    rows, stop = [], None
    for n, (atoms, path) in sorted(sizes.items()):
        if stop:
            rows.append({"n_atoms": atoms, "status": "skipped", "detail": stop})
            continue
        row = _measure(cfg, folder / f"speed_water_{atoms}_{dtype}.json", _file_hash(package), package, path, dtype,
                       cfg.speed.repeats)
        row.setdefault("n_atoms", atoms)
        rows.append(row)
        if row["status"] != "ok":
            stop = f"a smaller box already gave '{row['status']}'"
        elif row["ms_per_step"] / 1e3 > cfg.speed.max_call_s:
            stop = f"one call took {row['ms_per_step'] / 1e3:.0f} s > max_call_s"
        print(f"[bench] {name} {dtype} water {atoms} atoms: {row['status']}"
              + (f", {row['ms_per_step']:.1f} ms/step" if row["status"] == "ok" else ""), file=sys.stderr)
    return rows


def _water_interleaved(cfg: BenchConfig, folder: Path, name: str, dtype: str, sizes: dict, rows: list[dict],
                       round_: int) -> dict | None:
    """Timing pass ``round_`` of the boxes that fitted, all in one process, in turn (`speed.measure_interleaved`);
    None where fewer than two fitted or the process failed."""
    ok = [r for r in rows if r["status"] == "ok"]
    if len(ok) < 2:
        return None
    package = folder / "train" / "model.safetensors"
    paths = {atoms: path for atoms, path in sizes.values()}
    systems_ = [paths[r["n_atoms"]] for r in ok]
    key = {"weights": _file_hash(package), "systems": [_file_hash(p) for p in systems_], "dtype": dtype,
           "cycles": cfg.speed.water_cycles, "threads": cfg.threads, "device": cfg.device,
           "memory_limit": _memory_limit(cfg), "keep_freed_memory": cfg.speed.keep_freed_memory}
    # Each size's per-process median, with generous room for slow phases, for every cycle and the warm-up.
    timeout = 4 * (cfg.speed.water_cycles + 1) * sum(r["ms_per_step"] for r in ok) / 1e3 + 600.0
    result = _cached(*_in_pass(folder / f"speed_water_interleaved_{dtype}.json", key, round_),
                     lambda: speed.measure_interleaved(package, systems_, dtype, cfg.threads, cfg.speed.water_cycles,
                                                       _memory_limit(cfg), cfg.device, timeout_s=timeout,
                                                       keep_freed_memory=cfg.speed.keep_freed_memory),
                     keep=lambda r: r["status"] == "ok")
    if result["status"] != "ok":
        print(f"[bench] {name} {dtype} water, interleaved pass {round_ + 1}: {result['status']}: "
              f"{result.get('detail')}", file=sys.stderr)
        return None
    print(f"[bench] {name} {dtype} water, interleaved pass {round_ + 1}/{cfg.speed.rounds}, geometric mean of "
          f"{cfg.speed.water_cycles} calls: " + ", ".join(
              f"{t['n_atoms']} atoms " + (f"{speed.geometric_mean(t['calls_ms']):.1f} ms" if t["status"] == "ok"
                                          else t["status"]) for t in result["systems"]), file=sys.stderr)
    return result


def _water_costs(rows: list[dict], timed: list[dict]) -> dict:
    """One model and dtype's water table entry. With interleaved passes (``timed``), each fitted size's cost is
    the geometric mean of its calls over every pass and cycle (the fastest call and the per-size process's
    median are kept beside it), and the exponents are fitted on those costs: the least-squares slope through
    every call's log-time, which uses every call instead of one per size. ``exponent_3000_plus_ci95``: a
    bootstrap interval over the calls of each size; ``exponent_3000_plus_per_cycle``: the slope of each cycle
    alone."""
    ok = [r for r in rows if r["status"] == "ok"]
    per_cycle = []
    for result in timed:
        systems_ = result["systems"]
        for i, row in enumerate(ok):
            if systems_[i]["status"] != "ok":  # e.g. out of memory with every size held at once
                row.setdefault("interleaved_failures", []).append(systems_[i])
                continue
            row.setdefault("interleaved_calls_ms", []).extend(systems_[i]["calls_ms"])
        if all(t["status"] == "ok" for t in systems_):
            per_cycle += [[t["calls_ms"][c] for t in systems_] for c in range(result["cycles"])]
    for row in ok:
        calls = row.get("interleaved_calls_ms")
        if calls:
            typical = speed.geometric_mean(calls)
            row.update(single_process_ms_per_step=row["ms_per_step"], ms_per_step=typical, fastest_ms=min(calls),
                       us_per_atom_step=typical * 1e3 / row["n_atoms"])
    atoms = [r["n_atoms"] for r in ok]
    entry = {"rows": rows, "exponent": speed.fit_exponent(atoms, [r["ms_per_step"] for r in ok]),
             "exponent_3000_plus": speed.fit_exponent(atoms, [r["ms_per_step"] for r in ok], 3000)}
    if per_cycle:
        entry["exponent_3000_plus_per_cycle"] = [speed.fit_exponent(atoms, c, 3000) for c in per_cycle]
    if ok and all(r.get("interleaved_calls_ms") for r in ok):
        entry["exponent_3000_plus_ci95"] = speed.exponent_interval(atoms, [r["interleaved_calls_ms"] for r in ok],
                                                                   3000)
    return entry


def _water_scaling(cfg: BenchConfig, out: Path) -> dict:
    """Cost vs size on water boxes for the models trained on the first dataset (any model can be timed on
    water: the cost of a force field does not depend on what it was trained on, only its elements)."""
    base, origin = systems.water_cell(cfg.speed.water_cell)
    ds = cfg.datasets[0]
    sizes = {}
    for n in cfg.speed.water_replicas:
        box = systems.replicate(base, n)
        sizes[n] = (box.n_atoms, speed.save_system(box, out / "systems" / f"water_{box.n_atoms}.npz"))
    models = [m for m in cfg.models if (out / ds.name / m.name / "train" / "model.safetensors").exists()]
    rows = {(m.name, dtype): _water_sizes(cfg, out / ds.name / m.name, out / ds.name / m.name / "train" /
                                          "model.safetensors", m.name, dtype, sizes)
            for m in models for dtype in cfg.speed.dtypes}  # a model whose training failed is reported with its dataset
    timed = {}  # (model, dtype) -> one interleaved result per pass; the passes run an entire round apart
    for r in range(cfg.speed.rounds if cfg.speed.water_cycles else 0):
        for m in models:
            for dtype in cfg.speed.dtypes:
                got = _water_interleaved(cfg, out / ds.name / m.name, m.name, dtype, sizes, rows[(m.name, dtype)], r)
                if got:
                    timed.setdefault((m.name, dtype), []).append(got)
    table = {}
    for m in models:
        per_dtype = {}
        for dtype in cfg.speed.dtypes:
            per_dtype[dtype] = _water_costs(rows[(m.name, dtype)], timed.get((m.name, dtype), []))
        table[m.name] = per_dtype
    result = {"cell": origin, "trained_on": ds.name, "models": table,
              "interleaved": {"passes": cfg.speed.rounds, "cycles": cfg.speed.water_cycles} if timed else None,
              "families": {m.name: m.model["family"] for m in cfg.models if m.name in table}}
    if openmm_reference.available():
        rows = []
        for n, (atoms, path) in sorted(sizes.items()):
            box = systems.replicate(base, n)
            passes = []
            for r in range(cfg.speed.rounds):
                key = {"positions_hash": _file_hash(path), "threads": cfg.threads,
                       "freed_memory_kept": runtime.freed_memory_kept()}
                try:
                    passes.append(_cached(*_in_pass(out / "openmm_water" / f"tip3p_{atoms}.json", key, r),
                                          lambda: openmm_reference.water_cost(box, cfg.threads)))
                except Exception as exc:  # noqa: BLE001 - optional reference
                    passes.append({"status": "error", "n_atoms": atoms,
                                   "detail": f"{type(exc).__name__}: {exc}"[:300]})
            row = _fastest(passes)
            rows.append(row)
            print(f"[bench] OpenMM TIP3P water {atoms} atoms: {row['status']}"
                  + (f", {row['ms_per_step']:.2f} ms/step" if row["status"] == "ok" else f": {row.get('detail')}"),
                  file=sys.stderr)
        ok = [r for r in rows if r["status"] == "ok"]
        result["openmm_tip3p"] = {"rows": rows,
                                  "exponent": speed.fit_exponent([r["n_atoms"] for r in ok], [r["ms_per_step"] for r in ok]),
                                  "exponent_3000_plus": speed.fit_exponent([r["n_atoms"] for r in ok],
                                                                           [r["ms_per_step"] for r in ok], 3000)}
    return result
