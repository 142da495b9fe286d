"""``ffspace active``: label a few frames, then repeat train committee → explore with MD → pick the frames it
does not know → label them, until the goal is reached or the label budget is spent. Goal "accuracy": every
explored frame below the lower threshold. Goal "stability": once the exploration has reached the hottest
temperature, every trajectory ran to its end (no broken bond, collapse, non-finite value or lost committee); the
frames where bonds broke are labeled first, then the last frame below ``select.upper`` of each trajectory the
committee lost. Each round's summary says, per temperature, which trajectories
ended, when and on which bond, and what was labeled; a frame the labeler fails on (SCF not converged) is recorded
in the store's failures and the round goes on with the others.

Everything lands in ``out``:

- ``store/``: every label (the crash-safe `LabelStore`: a kill loses only the calculations in flight);
- ``samples-<fingerprint>.extxyz``: the sampled start frames (written once per sampling setting);
- ``round_<k>/committee/member_<m>/``: the round's committee (each member resumes from its checkpoint);
- ``round_<k>/explored.json``: every recorded exploration frame with its deviation (written once);
- ``round_<k>/picked.extxyz`` and ``picked.json``: what was picked and why (written before labeling);
- ``round_<k>/summary.json``: the round's figures; its presence marks the round done, and a rerun skips it;
- ``final/committee/``: the committee trained on all labels; ``labels.extxyz``; ``rounds.json``.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..data.dataset import Dataset
from ..data.readers import read_dataset, read_extxyz
from ..data.structure import Structure
from ..data.writers import write_extxyz
from ..errors import ConfigError, DataError
from ..md.failure import describe_failure
from ..outputs import atomic_path, write_json
from ..reference.config import LabelConfig
from ..reference.job import sampled_frames, start_structures
from ..reference.runner import label_structures
from ..reference.store import LabelStore, structure_key
from ..units import meV
from .committee import Committee, train_committee
from .config import ActiveConfig
from .explore import explore, survival
from .selection import pick_counts, select


def _write_json(path: Path, value) -> None:
    write_json(path, value)  # (fsynced: a round's files are written once, and an empty one after a crash would lie)


def _write_frames(path: Path, frames: list[Structure]) -> None:
    with atomic_path(path) as tmp:
        write_extxyz(tmp, frames)


@contextmanager
def _exclusive(out: Path):
    """Hold ``out``'s lock for the run: a second `ffspace active` on the same folder would label the same picks
    and train the same members beside this one."""
    try:
        import fcntl
    except ImportError:  # (no fcntl: not Linux or macOS; run unlocked)
        yield
        return
    handle = open(out / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"{out} is in use by another `ffspace active` run (it holds {out / '.lock'}); wait for "
                          "it to end or stop it first") from None
    try:
        yield
    finally:
        handle.close()


def _log(msg: str) -> None:
    print(f"[active] {msg}", file=sys.stderr)


def initial_labels(cfg: ActiveConfig, starts, labeler, store: LabelStore) -> Dataset:
    """The first labels: a given labeled file, or frames sampled from the input (once) and labeled."""
    if cfg.initial_dataset:
        return read_dataset(cfg.initial_dataset, **cfg.initial_keys)
    job = LabelConfig(input=cfg.input, samplers=[cfg.initial], labeler=cfg.labeler, seed=cfg.seed,
                      progress=cfg.progress)
    return label_structures(sampled_frames(job, cfg.out, starts), labeler, store, workers=cfg.label_workers,
                            progress=cfg.progress)


def split_start_labels(initial: Dataset, cfg: ActiveConfig) -> tuple[Dataset, Dataset]:
    """The start labels → (train, validation): ``cfg.n_val`` frames for validation, chosen by ``cfg.seed``. One
    rule for the loop, its read-back and the benchmark's baselines, so all three start from the same split."""
    return initial.split([-1, cfg.n_val], seed=cfg.seed)


EDGE_KINDS = ("broken", "before_loss")  # picks on a path that MD really took into a failure


def split_new_labels(new: Dataset, n_before: int, val_every: int) -> tuple[Dataset, Dataset]:
    """New labels → (train, validation): every ``val_every``-th label of the run goes to validation, so
    validation follows the explored data instead of staying with the start frames. Deterministic in the
    labels' order, so a resumed run splits the same way. A pick at the edge (info ``pick_kind`` in
    `EDGE_KINDS`: where a bond broke, or the last frame before a trajectory was lost) stays in training: it is
    the frame the next committee most needs, and in validation no member would ever learn it (3BPA, stop 50:
    one such frame, put 9 eV too low by every member of the next round)."""
    to_val = [(n_before + i + 1) % val_every == 0 and s.info.get("pick_kind") not in EDGE_KINDS
              for i, s in enumerate(new)]
    return (Dataset([s for s, v in zip(new, to_val) if not v], name=new.name),
            Dataset([s for s, v in zip(new, to_val) if v], name=new.name))


def labels_before_round(cfg: ActiveConfig, k: int, starts, labeler) -> tuple[Dataset, Dataset]:
    """(train, validation): the labels round ``k`` of the finished rounds in ``cfg.out`` trained on, read back
    from the run's store: the start labels and every earlier round's picks, split by the loop's rules."""
    out, store = Path(cfg.out), LabelStore(Path(cfg.out) / "store")
    train, val = split_start_labels(initial_labels(cfg, starts, labeler, store), cfg)
    for j in range(k):
        folder = out / f"round_{j:02d}"
        if not (folder / "summary.json").exists():
            raise DataError(f"round {j} has not finished, so the labels before round {k} are not known",
                            file=str(folder))
        new_train, new_val = split_new_labels(_labeled_picks(folder, labeler, store, finished=True),
                                              len(train) + len(val), cfg.val_every)
        train, val = train + new_train, val + new_val
    return train, val


def _check_config(out: Path, cfg: ActiveConfig) -> None:
    """Record the config; say which sections changed since the run in ``out`` started (finished rounds keep
    the settings they ran with)."""
    path, now = out / "config.json", cfg.model_dump()
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and k != "progress")
        if changed:
            _log(f"config changed since this run started ({', '.join(changed)}): finished rounds are kept as they "
                 "ran; the rest uses the new settings")
    _write_json(path, now)


def run_active(cfg: ActiveConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        return _run_active(cfg, out)


def _run_active(cfg: ActiveConfig, out: Path) -> dict:
    _check_config(out, cfg)
    labeler = cfg.labeler.build()
    store = LabelStore(out / "store")
    starts = _with_labeler_charge(start_structures(LabelConfig(input=cfg.input, labeler=cfg.labeler, seed=cfg.seed)),
                                  cfg.labeler.charge)
    initial = initial_labels(cfg, starts, labeler, store)
    if len(initial) <= cfg.n_val:
        raise DataError(f"{len(initial)} initial labels leave none for training after n_val = {cfg.n_val}",
                        file=cfg.initial_dataset or str(out))
    train_set, val_set = split_start_labels(initial, cfg)
    train_cfg = cfg.train_config()
    summaries, stop_reason = [], f"max_rounds ({cfg.max_rounds}) reached"
    previous = _start_packages(cfg)
    for k in range(cfg.max_rounds):
        folder = out / f"round_{k:02d}"
        folder.mkdir(exist_ok=True)
        done = folder / "summary.json"
        n_labels = len(train_set) + len(val_set)
        if done.exists():  # a finished round: read back what it added, train nothing, label nothing
            summary = json.loads(done.read_text())
            new = _labeled_picks(folder, labeler, store, finished=True)
        else:
            summary, new, paths = _round(cfg, k, folder, starts, train_set, val_set, train_cfg, labeler, store,
                                         previous, n_labels)
            _write_json(done, summary)
            _log(f"round {k}: {summary['explored']['recorded']} frames explored, {summary['explored']['candidates']} "
                 f"candidates, {summary['labeled']} labeled (total {summary['labels_total']})")
            for t, m in summary.get("md", {}).items():
                broke = "; ".join(describe_failure(f) for f in m["failures"][:4])
                _log(f"  {t} K: {m['survived']}/{m['runs']} trajectories ran to the end" + (f" ({broke}"
                     + (", …" if len(m["failures"]) > 4 else "") + ")" if broke else ""))
        new_train, new_val = split_new_labels(new, n_labels, cfg.val_every)
        train_set, val_set = train_set + new_train, val_set + new_val
        previous = [folder / "committee" / f"member_{m}" / "model.safetensors" for m in range(cfg.committee.members)]
        summaries.append(summary)
        stop = summary.get("stop")
        if stop and stop.startswith("label budget") and summary["labels_total"] < cfg.max_labels:
            stop = None  # the budget was raised since: go on
        if stop:
            stop_reason = stop
            break
    # The final committee learns the last round's labels too (retrained when the labels changed).
    final_paths = train_committee(train_set, val_set, cfg.model, train_cfg, out / "final" / "committee",
                                  members=cfg.committee.members, subsample=cfg.committee.subsample, seed=cfg.seed,
                                  warm_start=previous if cfg.committee.warm_start else None,
                                  workers=cfg.committee.workers, warm_minutes=cfg.committee.warm_minutes,
                                  warm_lr=cfg.committee.warm_lr, warm_keep=cfg.committee.warm_keep)
    _write_frames(out / "labels.extxyz", list(train_set) + list(val_set))
    result = {"rounds": summaries, "stop_reason": stop_reason, "labels": len(train_set) + len(val_set),
              "train_labels": len(train_set), "val_labels": len(val_set),
              "final_committee": [str(p) for p in final_paths]}
    _write_json(out / "rounds.json", result)
    _log(f"done ({stop_reason}): {result['labels']} labels; final committee in {out / 'final' / 'committee'}")
    return result


def _with_labeler_charge(starts, charge: int) -> list:
    """The starts at the labeler's total charge, where they name none: every label carries it (what the committee
    learns and records), so exploration must run them at it (a charge-aware model reads it; a charge-blind one
    refuses a charge it never saw)."""
    if charge:
        for s in starts:
            s.info.setdefault("charge", float(charge))
    return starts


def _start_packages(cfg) -> list[Path] | None:
    """What round 0's members start from: ``committee.init_from`` for each of them, or nothing (fresh models)."""
    if cfg.committee.init_from is None:
        return None
    package = Path(cfg.committee.init_from)
    if not package.is_file():
        raise ConfigError(f"committee.init_from: no model package at {package}")
    return [package] * cfg.committee.members


def _round(cfg, k, folder, starts, train_set, val_set, train_cfg, labeler, store, previous, n_labels):
    paths = train_committee(train_set, val_set, cfg.model, train_cfg, folder / "committee",
                            members=cfg.committee.members, subsample=cfg.committee.subsample, seed=cfg.seed + k,
                            warm_start=previous if (previous and (cfg.committee.warm_start or k == 0)) else None,
                            workers=cfg.committee.workers, warm_minutes=cfg.committee.warm_minutes,
                            warm_lr=cfg.committee.warm_lr, warm_keep=cfg.committee.warm_keep)
    committee = Committee.load(paths)
    temperatures = cfg.explore.temperatures[:k + 1] if cfg.explore.ramp else cfg.explore.temperatures
    explored_path = folder / "explored.json"
    if explored_path.exists():
        records = json.loads(explored_path.read_text())
        for r in records:
            r["positions"] = np.array(r["positions"])
    else:
        e = cfg.explore
        records = explore(committee, starts, temperatures, e.seeds, e.steps, e.timestep_fs, e.friction, e.record_every,
                          cfg.select.upper, e.min_distance_factor, seed=cfg.seed * 1000 + k, progress=cfg.progress,
                          bond_tolerance=e.bond_tolerance)
        _write_json(explored_path, [{**r, "positions": r["positions"].tolist()} for r in records])
    picks_path = folder / "picked.extxyz"
    sel = cfg.select
    budget = cfg.max_labels - n_labels
    picked, stats = select([{**r, "numbers": starts[r["start"]].numbers} for r in records], sel.lower, sel.upper,
                           min(sel.per_round, max(budget, 0)), sel.per_trajectory, sel.min_separation,
                           cfg.explore.record_every, sel.strategy, seed=cfg.seed * 1000 + k,
                           labeled=list(train_set) + list(val_set), broken_first=cfg.goal == "stability")
    if not picks_path.exists():
        frames = [starts[r["start"]].copy(positions=r["positions"], energy=None, forces=None, stress=None,
                                          info={"round": k, "trajectory": r["trajectory"], "step": r["step"],
                                                "temperature_K": r["temperature_K"],
                                                "committee_deviation_eV_A": r["deviation_eV_A"],
                                                **({"explored_stopped": r["stopped"]} if r["stopped"] else {})})
                  for r in picked]
        _write_json(folder / "picked.json", [{key: v for key, v in r.items() if key not in ("positions", "numbers")}
                                             for r in picked])
        _write_frames(picks_path, frames)
    else:  # resumed: the picks are the ones written (and being labelled), even if the selection rule changed since
        picked = json.loads((folder / "picked.json").read_text())
        stats = {**stats, **pick_counts(picked)}
    new = _labeled_picks(folder, labeler, store, workers=cfg.label_workers)
    md = survival(records)
    summary = {"round": k, "temperatures_K": temperatures, "train_labels": len(train_set), "explored": stats,
               "md": md, "labeled": len(new), "labels_total": n_labels + len(new),
               "labeled_at_K": {f"{t:g}": sum(r["temperature_K"] == t for r in picked) for t in temperatures},
               "thresholds_eV_A": {"lower": sel.lower, "upper": sel.upper}}
    if len(new) < len(picked):
        summary["label_failures"] = len(picked) - len(new)  # recorded in the store's failures file
    if len(new):  # how wrong the committee was where it was unsure: the error it is about to learn away
        pred = committee.predict(list(new))
        ref = np.concatenate([s.forces for s in new])
        summary["committee_on_picks"] = {"force_mae_meV_A": float(np.abs(pred["forces"] - ref).mean() / meV),
                                         "mean_max_deviation_meV_A": float(pred["max_force_deviation"].mean() / meV)}
    hottest = all(t in temperatures for t in cfg.explore.temperatures)
    if cfg.goal == "stability" and hottest and md and all(m["survived"] == m["runs"] for m in md.values()):
        summary["stop"] = (f"stable: every exploration trajectory of round {k} ran {cfg.explore.steps} steps at "
                           f"{'/'.join(md)} K")
    elif cfg.goal == "accuracy" and stats["recorded"] and stats["known"] == stats["recorded"]:
        summary["stop"] = f"converged: every explored frame of round {k} below {sel.lower} eV/Å"
    elif n_labels + len(new) >= cfg.max_labels:
        summary["stop"] = f"label budget ({cfg.max_labels}) spent"
    elif not picked and (cfg.goal == "accuracy" or hottest):
        summary["stop"] = f"round {k} found nothing to label"
    return summary, new, paths


def _labeled_picks(folder: Path, labeler, store: LabelStore, workers: int = 1, finished: bool = False) -> Dataset:
    """The round's picks with their labels (computed now where the store lacks them). A ``finished`` round's are
    read back only: a pick the store lacks means the labeler changed since (settings or program version, which
    its labels' keys hold), and relabelling a whole finished round one frame after another would take hours."""
    path, listed = folder / "picked.extxyz", folder / "picked.json"
    if not path.exists() or path.stat().st_size == 0:  # an empty file: the round decided to pick nothing
        if listed.exists() and json.loads(listed.read_text() or "[]"):
            raise DataError(f"{path} is empty but {listed} lists picks: the file was lost (a crash while it was "
                            "written?); remove the round folder to redo the round", file=str(path))
        return Dataset([], name=str(path))
    frames = list(read_extxyz(path, required=()))
    if finished:
        method = labeler.provenance()
        missing = [i for i, s in enumerate(frames)
                   if (key := structure_key(s, method)) not in store and key not in store.failures]
        if missing:
            raise DataError(f"picks {missing[:10]}{' …' if len(missing) > 10 else ''} of this finished round are not "
                            f"in {store.folder} under the labeler {method}: was it labelled with other settings or "
                            "another program version? Use those again, or start a new run", file=str(path))
    try:
        # one frame per task: a DFT label takes minutes, and a killed run loses only the frames in flight
        labeled = label_structures(frames, labeler, store, workers=workers, progress=False, chunk=1)
    except DataError:  # every pick failed to label (recorded in the store's failures)
        return Dataset([], name=str(path))
    kinds = {(p.get("trajectory"), p.get("step")): p.get("kind")
             for p in json.loads((folder / "picked.json").read_text())} if (folder / "picked.json").exists() else {}
    for s in labeled:  # what kind of pick each label is (picked.json, written with the picks), for the split
        kind = kinds.get((s.info.get("trajectory"), s.info.get("step")))
        if kind:
            s.info["pick_kind"] = kind
    return labeled
