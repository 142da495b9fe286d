"""A labeling job: inputs → samplers → labels (store) → dataset file that `ffspace train` reads."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from ..data.readers import read_dataset, read_extxyz
from ..data.structure import Structure
from ..data.writers import write_extxyz
from ..outputs import atomic_path
from ..progress import progress as progress_bar
from .config import LabelConfig
from ..errors import ConfigError, DataError
from .base import LabelFailure
from .inputs import from_smiles, read_structures
from .molecules import problem, read_smiles_files
from .runner import label_structures, run_tasks
from .sampling import dimer_scan, md_sample, normal_mode_sample, rattle, start_info, torsion_scan
from .store import LabelStore


def start_structures(cfg: LabelConfig, left_out: list[dict] | None = None) -> list[Structure]:
    """The start structures of ``cfg.input``. A SMILES that cannot be used (RDKit cannot parse or embed it, an
    element outside ``input.elements``, a molecule of an ``input.exclude`` set) is appended to ``left_out`` with
    the reason, and the others go on; with no ``left_out`` list, or when no molecule is left, it is an error."""
    inp = cfg.input
    if inp.smiles or inp.smiles_file:
        if inp.smiles:
            entries = [(smi, None, None, "<smiles>")
                       for smi in ([inp.smiles] if isinstance(inp.smiles, str) else inp.smiles)]
        else:  # a molecule's seed is its place in the files read in turn: a file appended changes no earlier
            # molecule's conformers (a recipe whose list grew samples anew: it needs its own `out` or `resample`)
            entries = read_smiles_files(_smiles_files(inp))
        where = ", ".join(_smiles_files(inp)) or "<smiles>"
        out, skipped = [], []
        for k, (smi, name, line, source) in enumerate(entries):
            reason = problem(smi, inp.elements, inp.exclude, charge=cfg.labeler.charge,
                             multiplicity=cfg.labeler.multiplicity)
            if reason is None:
                try:
                    conformers = from_smiles(smi, inp.n_conformers, seed=cfg.seed + k)
                except DataError as exc:
                    reason = exc.args[0] if exc.args else str(exc)
            if reason is not None:
                error = DataError(f"SMILES {smi!r}{f' ({name})' if name else ''}: {reason}", file=source, frame=line,
                                  field="smiles")
                if left_out is None:
                    raise error
                skipped.append({"smiles": smi, "name": name, "line": line, "reason": reason,
                                **({"file": source} if len(_smiles_files(inp)) > 1 else {})})
                print(f"left out: {error}", file=sys.stderr)
                continue
            for c in conformers:
                if name:
                    c.info["name"] = name
            out += conformers
        if not out:
            reasons = "; ".join(f"{x['smiles']}: {x['reason']}" for x in skipped)
            raise DataError(f"no usable molecule ({reasons})", file=where, field="smiles")
        if left_out is not None:
            left_out.extend(skipped)
        return out
    if inp.file:
        return read_structures(inp.file)
    return list(read_dataset(inp.dataset, required=()))


def _smiles_files(inp) -> list[str]:
    """``input.smiles_file`` as a list (one file or several)."""
    if not inp.smiles_file:
        return []
    return [inp.smiles_file] if isinstance(inp.smiles_file, str) else list(inp.smiles_file)


def _one_file(inp):
    """``input.smiles_file`` as the single path it names, or None for several: `[a.smi]` is the same input as
    `a.smi` (one sampling fingerprint)."""
    files = _smiles_files(inp)
    return files[0] if len(files) == 1 else None


def sample(cfg: LabelConfig, starts: list[Structure]) -> list[Structure]:
    """Frames from every start structure and sampler (see `sample_start`)."""
    return [f for k, start in enumerate(starts) for f in sample_start(cfg, start, k)]


def sample_start(cfg: LabelConfig, start: Structure, k: int) -> list[Structure]:
    """Frames of every sampler from start structure ``k``. MD and the normal-mode Hessian are driven by
    GFN2-xTB whatever the labeler is: sampling needs many cheap force calls, labels few expensive ones."""
    from .xtb import XTBLabeler

    driver = XTBLabeler(charge=cfg.labeler.charge, multiplicity=cfg.labeler.multiplicity)
    frames = []
    for j, sc in enumerate(cfg.samplers):
        seed = cfg.seed + 1000 * k + j
        if sc.kind == "none":
            frames.append(start.copy(energy=None, forces=None, stress=None,
                                     info=start_info(start.info, keep_sampler=True)))
        elif sc.kind == "rattle":
            frames += rattle(start, sc.n_frames, sc.sigma, seed=seed)
        elif sc.kind == "normal_modes":
            frames += normal_mode_sample(start, driver, sc.n_frames, sc.temperature, seed=seed)
        elif sc.kind == "torsion_scan":
            frames += torsion_scan(start, sc.n_frames, sc.dihedral, seed=seed)
        elif sc.kind == "dimers":
            frames += dimer_scan(start, sc.distances, sc.n_frames, seed=seed)
        else:
            calc = driver.calculator()
            if sc.driver != "xtb":  # a trained ffspace model drives the exploration
                from ..interfaces import FFSpaceCalculator

                calc = FFSpaceCalculator(sc.driver, dtype="float64")
            frames += md_sample(start, calc, sc.n_frames, sc.temperature, sc.interval,
                                sc.timestep_fs, sc.equilibration_steps, seed=seed, progress=cfg.progress)
    if cfg.fields is not None:
        frames = in_fields(frames, cfg.fields, seed=cfg.seed + 1000 * k + 999)
    return frames


def in_fields(frames: list[Structure], fields, seed: int) -> list[Structure]:
    """Each frame in ``fields.copies`` random uniform fields (and without one, with ``fields.keep_zero``)."""
    rng = np.random.default_rng(seed)
    out = []
    for f in frames:
        if fields.keep_zero:
            out.append(f)
        for _ in range(fields.copies):
            direction = rng.normal(size=3)
            g = f.copy()
            g.info["field"] = direction / np.linalg.norm(direction) * rng.uniform(0.0, fields.max_v_per_a)
            out.append(g)
    return out


def _sampling_fingerprint(cfg: LabelConfig, starts: list[Structure] | None = None) -> str:
    inp = cfg.input.model_dump()
    if _one_file(cfg.input) is not None:
        inp["smiles_file"] = _one_file(cfg.input)
    for key in ("smiles_file", "elements", "exclude"):  # settings added later enter only when set: older stores
        if not inp[key]:                                 # keep their samples
            inp.pop(key)
    relevant = {"input": inp, "samplers": [s.model_dump() for s in cfg.samplers],
                "seed": cfg.seed}
    if cfg.fields is not None:  # entered only when set: older stores keep their samples
        relevant["fields"] = cfg.fields.model_dump()
    # the molecules, not the file's name (several files: each one's content, in order)
    if _one_file(cfg.input) is not None and Path(_one_file(cfg.input)).is_file():
        relevant["smiles_file_sha256"] = hashlib.sha256(Path(_one_file(cfg.input)).read_bytes()).hexdigest()
    elif cfg.input.smiles_file:
        relevant["smiles_file_sha256"] = [hashlib.sha256(Path(f).read_bytes()).hexdigest() if Path(f).is_file()
                                          else None for f in cfg.input.smiles_file]
    if starts is not None:  # given start structures replace the ones cfg.input and cfg.seed would make
        h = hashlib.sha256()
        for s in starts:
            h.update(np.asarray(s.numbers, dtype=np.int64).tobytes() + np.round(s.positions, 8).tobytes())
        relevant["starts"] = h.hexdigest()
    for sc in cfg.samplers:  # a model driver is identified by its file's content, not its name
        if sc.kind == "md" and sc.driver != "xtb" and Path(sc.driver).is_file():
            relevant.setdefault("drivers", []).append(hashlib.sha256(Path(sc.driver).read_bytes()).hexdigest())
    if any(s.kind in ("md", "normal_modes") for s in cfg.samplers):
        relevant["driver"] = {"charge": cfg.labeler.charge, "multiplicity": cfg.labeler.multiplicity}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def samples_path(cfg: LabelConfig, folder, starts: list[Structure] | None = None) -> Path:
    """Where `sampled_frames` keeps the frames of ``cfg``'s samplers in ``folder`` (whether made yet or not)."""
    return Path(folder) / f"samples-{_sampling_fingerprint(cfg, starts)}.extxyz"


def _write_failures(folder, left_out: list[dict]) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(folder) / "input_failures.jsonl") as tmp:
        Path(tmp).write_text("".join(json.dumps(x) + "\n" for x in left_out))


_SAMPLING_FAILURES = (DataError, LabelFailure, RuntimeError, ValueError)


def _sample_molecule(cfg: LabelConfig, start: Structure, k: int):
    """A worker's task: ``("ok", frames)``, or ``("failed", reason)`` where the samplers cannot handle the
    molecule (a torsion scan of a molecule without a rotatable bond, an xTB failure)."""
    try:
        return "ok", sample_start(cfg, start, k)
    except _SAMPLING_FAILURES as exc:
        return "failed", str(exc)


def _write_part(part: Path, start: Structure, sampled: list[Structure], failure: str | None) -> str | None:
    """One start's frames into its part file (empty when it failed, with the reason in ``.failed.json``); the
    message to show for a failed one."""
    message = None
    if failure is not None:
        name = start.info.get("name") or start.info.get("smiles")
        record = {"smiles": start.info.get("smiles"), "name": name,
                  "conformer": start.info.get("conformer"), "reason": f"sampling failed: {failure}"}
        part.with_suffix(".failed.json").write_text(json.dumps(record))
        message = f"left out: {name}: sampling failed: {failure}"
    with atomic_path(part) as tmp:
        if sampled:
            write_extxyz(tmp, sampled)
        else:
            Path(tmp).write_text("")
    return message


def _sample_in_parallel(cfg: LabelConfig, starts: list[Structure], parts: Path, scheduler=None) -> None:
    """The parts not made yet, one molecule per task on ``cfg.workers`` local processes or on a Dask cluster
    (``scheduler``, else ``cfg.scheduler``), each written here as it finishes: a kill loses the molecules in flight.
    A part is a function of the recipe and the molecule's place in the list (its seeds), not of which worker made
    it, as long as the thread count is the same: MD is chaotic, so sums that differ in the last bits with another
    thread count give other frames after some hundreds of steps (OMP_NUM_THREADS=1 makes them the same anywhere).
    A Dask cluster's workers need the recipe's programs (RDKit, tblite) and any model driver's file at its path."""
    todo = [k for k in range(len(starts)) if not (parts / f"{k:05d}.extxyz").exists()]
    scheduler = scheduler if scheduler is not None else cfg.scheduler
    if len(todo) < 2 or (cfg.workers < 2 and scheduler is None):
        return
    quiet = cfg.model_copy(update={"progress": False})  # (one bar here, not one per sampler in each worker)
    bar = progress_bar(total=len(todo), desc="sampling", unit="molecule", enabled=cfg.progress)
    try:
        tasks = [(quiet, starts[k], k) for k in todo]
        for i, (status, result) in run_tasks(_sample_molecule, tasks, cfg.workers, scheduler):
            k = todo[i]
            message = _write_part(parts / f"{k:05d}.extxyz", starts[k], result if status == "ok" else [],
                                  None if status == "ok" else result)
            if message:
                bar.write(message)
            bar.update(1)
    finally:
        bar.close()


def sampled_frames(cfg: LabelConfig, folder, starts: list[Structure] | None = None,
                   scheduler=None) -> list[Structure]:
    """The frames of ``cfg``'s samplers, made once into ``folder/samples-<fingerprint>.extxyz`` and read back.

    Read back rather than kept in memory, so the label keys (positions rounded in the file) are identical on
    every rerun; named by the sampling settings, so a rerun with other settings samples anew instead of
    reusing stale frames. ``starts`` defaults to `start_structures` (``cfg.input``); given ones enter the name.
    Each start's frames are kept in ``samples-<fingerprint>.parts/`` as they are made, so a killed sampling of many
    molecules goes on with the next one; molecules left out are listed in ``input_failures.jsonl``. A list of
    molecules (SMILES) is sampled on ``cfg.workers`` processes, or on the Dask cluster of ``scheduler`` /
    ``cfg.scheduler``, when one is set.
    """
    path = samples_path(cfg, folder, starts)
    if not path.exists():
        left_out, given = [], starts
        starts = start_structures(cfg, left_out) if starts is None else starts
        if left_out:
            _write_failures(folder, left_out)
        parts = path.with_name(path.stem + ".parts")
        parts.mkdir(parents=True, exist_ok=True)
        frames = []
        molecules = bool(cfg.input.smiles or cfg.input.smiles_file) and given is None
        if molecules:
            _sample_in_parallel(cfg, starts, parts, scheduler)
        for k, start in enumerate(starts):
            part = parts / f"{k:05d}.extxyz"
            if not part.exists():
                sampled, failure = [], None
                try:
                    sampled = sample_start(cfg, start, k)
                except _SAMPLING_FAILURES as exc:
                    if not molecules:
                        raise
                    # One molecule of a list that the sampler cannot handle: recorded, and the list goes on.
                    failure = str(exc)
                message = _write_part(part, start, sampled, failure)
                if message:
                    print(message, file=sys.stderr)
            failed = part.with_suffix(".failed.json")
            if failed.exists():  # (also when an earlier, killed run found it)
                left_out.append(json.loads(failed.read_text()))
                _write_failures(folder, left_out)
            frames += read_extxyz(part, required=()) if part.stat().st_size else []
        with atomic_path(path) as tmp:
            write_extxyz(tmp, frames)
        shutil.rmtree(parts)
    return list(read_extxyz(path, required=()))


def _owner_path(samples: Path) -> Path:
    return samples.with_suffix(".json")


def _refuse_orphaning_labels(cfg: LabelConfig, samples: Path, store: LabelStore, method: dict) -> None:
    """A store's labels are keyed by their frames' geometry: frames sampled anew (any change to the input, the
    samplers, the seed or the SMILES file's bytes, even a comment) keep a label only where they give the same
    geometry. When the same recipe (the same ``out``) already labelled frames sampled under other settings, that
    can be hours of labelling lost without a word, so it needs ``resample: true``. (Other recipes may share a
    store: their samples name another ``out`` in ``samples-<fingerprint>.json``, written on a recipe's first run.)"""
    from .store import structure_key

    folder = samples.parent
    if samples.exists() or cfg.resample:
        return
    for other in sorted(folder.glob("samples-*.extxyz")):
        try:
            owner = json.loads(_owner_path(other).read_text()).get("out")
        except (OSError, ValueError):
            continue  # sampled before owners were recorded: which recipe made it is unknown
        if owner != cfg.out:
            continue
        labelled = sum(structure_key(f, method) in store for f in read_extxyz(other, required=()))
        if labelled:
            raise ConfigError(f"the label store {folder} holds {labelled} labels of this recipe's frames in "
                              f"{other.name}, sampled under other settings than these ({samples.name}: the input, "
                              "samplers, seed or the SMILES file changed, comments included). New samples keep a "
                              "label only where they give the same geometry (the same molecule at the same place "
                              "in the list, the same seed and samplers). Restore the settings to go on labelling "
                              "those frames, or set resample: true to sample anew")


def _record_owner(cfg: LabelConfig, samples: Path) -> None:
    owner = _owner_path(samples)
    if not owner.exists():
        with atomic_path(owner) as tmp:
            Path(tmp).write_text(json.dumps({"out": cfg.out}) + "\n")


def run_label_job(cfg: LabelConfig, scheduler=None, starts: list[Structure] | None = None):
    """Sample (once; cached in the store folder), label what is missing, write the dataset. ``starts``: start
    structures to sample from instead of those ``cfg.input`` gives with ``cfg.seed``."""
    labeler = cfg.labeler.build()
    store = LabelStore(cfg.store)
    if starts is None:  # (given starts are a loop's exploration, sampled anew by design)
        _refuse_orphaning_labels(cfg, samples_path(cfg, cfg.store), store, labeler.provenance())
    frames = sampled_frames(cfg, cfg.store, starts, scheduler)
    if starts is None:
        _record_owner(cfg, samples_path(cfg, cfg.store))
    print(f"{len(frames)} frames to label with {labeler.provenance()['method']} "
          f"({len(store)} labels already in {cfg.store})", file=sys.stderr)
    dataset = label_structures(frames, labeler, store, workers=cfg.workers,
                               scheduler=scheduler if scheduler is not None else cfg.scheduler,
                               progress=cfg.progress, retry_failed=cfg.retry_failed, max_new=cfg.max_new_labels)
    failed = len(frames) - len(dataset)  # failed, or (max_new_labels) left for a later run
    out = Path(cfg.out)
    if out.suffix.lower() in (".h5", ".hdf5"):  # a large set: chunked HDF5 that training streams
        from ..data.hdf5 import write_hdf5

        write_hdf5(out, dataset, name=out.stem)  # (written beside it, then renamed: a kill keeps the old one)
    else:
        with atomic_path(out) as tmp:  # a kill while writing leaves the previous file, never a cut one
            write_extxyz(tmp, list(dataset))
    print(f"wrote {len(dataset)} labeled structures to {out}" + (f" ({failed} not labelled: failed (see "
          f"{store.failures_path}) or left for a later run)" if failed else ""), file=sys.stderr)
    return dataset
