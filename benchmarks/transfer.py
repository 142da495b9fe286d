"""A transferable model on molecules it never saw: zero-shot on rMD17 and few-shot fine-tuning (issue 31).

    python benchmarks/transfer.py --package drug-like=PATH [--package graph_mm=PATH2]     # zero-shot only
    python benchmarks/transfer.py --package drug-like=PATH --shots 10 50 200 --budget-min 10 [--replay FILE]

Zero-shot: each package on the test_01 frames of every rMD17 molecule (PBE/def2-SVP, 1000 each): force MAE,
energy MAE after removing the mean offset (an unseen molecule's absolute energy is a constant that per-element
references cannot know), and the raw energy MAE. A molecule with an element the package lacks is reported as
such, not skipped silently.

Few-shot (``--shots``): for each molecule of ``--fewshot`` and each N, N frames of its train_01 file (seeded)
fine-tune the first package (`train.init_from`, reference energies refitted) and train the same architecture from
scratch (``--arms`` picks either), each with the same wall-clock budget of training steps; both are tested on the
1000 test_01 frames. No frame of the molecule beyond the N is used: each arm keeps its last epoch's weights (a
cosine schedule to the end of the budget), and the N frames themselves are its "validation" log, so nothing is
selected on frames a user with N labels would not have. ``--replay FILE`` fits the fine-tuning on the N frames
(repeated ``--replay-repeat`` times) together with FILE's frames, at the same level of theory (the reference
energies are then refitted to both): the package's own training labels keep it from forgetting what it knew. A
recipe is chosen with ``--n-val M`` on a molecule that is not reported: the arms are then scored on M other train_01
frames of it, and test_01 is not read. ``--tune SETTING=JSON`` (repeatable) gives the fine-tuned arm further train
settings, e.g. ``--tune l2_to_start=0.1`` or ``--tune 'freeze=["terms.1.embedding.*"]'``; they are part of its key.

MD (``--md-ps``): each package runs Langevin MD at ``--md-temperature`` (300 K) from the first test_01 frame of
every molecule, ``--md-seeds`` copies of ``--md-ps`` ps, 0.5 fs, float32, with the stability protocol's failure rules
(`ffspace.bench.stability.survival`: a bond 0.5 Å off its start length, atoms closer than 0.6 Å, non-finite
values); each run checkpoints every ps, so a killed benchmark resumes it.

Every finished entry is written to ``--out``/results.json at once, keyed by the package's content (a package
retrained at the same path is evaluated again) and the settings: a rerun skips what is done.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

from ffspace.data import Dataset, read_dataset
from ffspace.evaluate import error_metrics, predict
from ffspace.potential import Potential
from ffspace.potential.package import read_metadata, versions
from ffspace.train import Trainer, TrainConfig, build_model_for_data, model_for_training

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rmd17"
MOLECULES = ["aspirin", "azobenzene", "benzene", "ethanol", "malonaldehyde", "naphthalene", "paracetamol",
             "salicylic", "toluene", "uracil"]


def offset_free_energy_mae(pred, data) -> float:
    """Energy MAE (meV) after removing the mean error: relative energies."""
    err = np.asarray(pred["energy"]) - np.array([s.energy for s in data])
    return float(np.abs(err - err.mean()).mean() * 1000)


def evaluate(package: Path, data, dtype: str = "float32") -> dict:
    pot = Potential.load(package, dtype=dtype)
    missing = sorted(set(data.elements) - set(pot.model.elements))
    if missing:
        return {"status": f"elements {missing} not in the model"}
    t0 = time.perf_counter()
    pred = predict(pot, data)
    m = error_metrics(pred, data)
    return {"status": "ok", "forces_mae_meV_A": m["forces_mae_meV_A"], "forces_rmse_meV_A": m["forces_rmse_meV_A"],
            "energy_mae_meV_offset_free": offset_free_energy_mae(pred, data), "energy_mae_meV": m["energy_mae_meV"],
            "n": len(data), "predict_s": time.perf_counter() - t0}


def _file_digest(path: Path) -> str:
    """A file's content (first 16 hex digits of SHA-256), read again only when the file changes."""
    stat = Path(path).stat()
    return _hash_file(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=None)
def _hash_file(path: str, mtime_ns: int, size: int) -> str:  # (mtime and size: the cache's key, not read)
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _digest(package: Path) -> str:
    """The package's content: results are kept per content, not per path."""
    from ffspace.potential.package import resolve_package_path

    return _file_digest(resolve_package_path(package))


def scratch_config(package: Path) -> dict:
    """The learned term's family and settings of a package: the same architecture, fresh weights."""
    terms = read_metadata(package)["model"].get("terms", [])
    learned = [t for t in terms if t.get("family") not in ("reference", "zbl", "mm", "sum", "d4")]
    if not learned:
        raise SystemExit(f"{package}: no learned term to train from scratch")
    cfg = {k: v for k, v in learned[0].items() if k not in ("elements", "energy_scale", "avg_neighbors")}
    if any(t.get("family") == "zbl" for t in terms):
        cfg["zbl"] = True
    return cfg


def few_shot_sets(molecule: str, n: int, seed: int, data: Path, n_val: int = 0):
    """The N training frames (seeded, from train_01) and the frames to score on: all of test_01, or with ``n_val``
    that many other train_01 frames (a validation set for choosing a recipe, so that test_01 is never looked at)."""
    pool = read_dataset(data / f"rmd17_{molecule}_train_01.npz")
    if n_val:
        train, val, _ = pool.split([n, n_val, -1], seed=seed)
        return train, val
    train, _ = pool.split([n, -1], seed=seed)
    return train, read_dataset(data / f"rmd17_{molecule}_test_01.npz")


def few_shot_arm(arm: str, package: Path, train, score_on, budget_min: float, run: Path, seed: int, lr: float,
                 replay=None, replay_repeat: int = 1, tune: dict | None = None, val_every: int = 1) -> dict:
    """One arm of the few-shot comparison: "fine-tuned" starts from the package (reference energies refitted),
    "scratch" trains its architecture from fresh weights; both with the same wall-clock budget. With ``replay`` (a
    dataset at the same level of theory, e.g. the package's own training labels), the fine-tuning fits the N frames,
    repeated ``replay_repeat`` times, together with it: the replayed frames hold the weights near what they knew.
    ``tune``: further `TrainConfig` settings of the fine-tuned arm (e.g. ``l2_to_start``, ``lr_scale``).
    ``val_every``: epochs between the per-epoch log's validations and the checkpoint writes (both arms): with a few
    frames an epoch is a few steps, and validating and writing every epoch adds about a third to the wall time."""
    fit_on = train
    if replay is not None:
        fit_on = Dataset(list(train) * replay_repeat, train.name) + replay
    common = dict(epochs=1_000_000, batch_size=min(8, len(fit_on)), schedule="cosine", warmup_epochs=1,
                  early_stop_patience=1_000_000, max_time_min=budget_min, seed=seed, progress=sys.stderr.isatty(),
                  keep="last", val_every=val_every)
    if arm == "fine-tuned":
        tc = TrainConfig(**{**common, **(tune or {})}, lr=lr, init_from=str(package))
        model = model_for_training({}, fit_on, tc)
    else:
        tc = TrainConfig(**common, lr=lr)
        model = build_model_for_data(scratch_config(package), fit_on, seed=seed)
    t0 = time.perf_counter()
    summary = Trainer(model, fit_on, train, tc, run_dir=run, overwrite=True).fit()
    wall_s = time.perf_counter() - t0  # the whole fit: steps, validations and writes (the budget counts the steps)
    return {**evaluate(run / "model.safetensors", score_on), "epochs": summary["epochs"], "train_s": summary["time_s"],
            "wall_s": wall_s}


def md_survival(package: Path, molecule: str, data: Path, time_ps: float, temperature: float, seeds: int,
                checkpoint: Path) -> dict:
    """`stability.survival` of the package on the molecule's first test_01 frame (see the module's docstring). The
    ``checkpoint`` file is left for the caller to remove once the result is saved."""
    from ffspace.bench import stability

    frames = read_dataset(data / f"rmd17_{molecule}_test_01.npz")
    start = frames[0]
    pot = Potential.load(package, dtype="float32")
    missing = sorted(set(frames.elements) - set(pot.model.elements))
    if missing:
        return {"status": f"elements {missing} not in the model"}
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # (the settings the results are keyed by, spelled out: a change of survival's defaults cannot reuse them)
    r = stability.survival(pot, start, temperature, seeds=seeds, time_ps=time_ps, timestep_fs=0.5, friction=0.01,
                           seed=0, progress=sys.stderr.isatty(), checkpoint=checkpoint, remove_checkpoint=False)
    return {"status": "ok", **{k: r[k] for k in ("survived", "seeds", "time_ps", "failure_ps", "failure")},
            "wall_s": time.perf_counter() - t0}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", action="append", required=True, help="NAME=PATH of a model package (repeatable)")
    p.add_argument("--molecules", nargs="*", default=MOLECULES, help="zero-shot and MD molecules (none: skip both)")
    p.add_argument("--n-test", type=int, default=1000, help="test_01 frames per molecule (1000: all)")
    p.add_argument("--shots", type=int, nargs="*", default=[], help="few-shot training set sizes, e.g. 10 50 200")
    p.add_argument("--fewshot", nargs="+", default=["aspirin", "paracetamol"])
    p.add_argument("--budget-min", type=float, default=10.0, help="wall-clock budget of each few-shot training")
    # The learning rates were chosen on salicylic acid (50 frames, scored on 200 other train_01 frames, --n-val),
    # a molecule the few-shot table does not report: docs/benchmarks.md, "Few-shot fine-tuning".
    p.add_argument("--lr-tune", type=float, default=1e-2)
    p.add_argument("--lr-scratch", type=float, default=5e-3)
    p.add_argument("--replay", type=Path, default=None,
                   help="frames at the package's level of theory fitted beside the N (e.g. its own training labels)")
    p.add_argument("--replay-repeat", type=int, default=5, help="times the N frames are repeated beside --replay")
    p.add_argument("--n-val", type=int, default=0,
                   help="score few-shot runs on this many other train_01 frames instead of test_01 (choosing a recipe)")
    p.add_argument("--tune", action="append", default=[], metavar="SETTING=JSON",
                   help="a further train setting of the fine-tuned arm, e.g. l2_to_start=1 (repeatable)")
    p.add_argument("--val-every", type=int, default=1,
                   help="epochs between validations and checkpoint writes of the few-shot trainings (train.val_every)")
    p.add_argument("--arms", nargs="+", default=["fine-tuned", "scratch"], choices=["fine-tuned", "scratch"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--md-ps", type=float, default=0.0, help="ps of MD per molecule and package (0: no MD)")
    p.add_argument("--md-temperature", type=float, default=300.0, help="K")
    p.add_argument("--md-seeds", type=int, default=1, help="copies per molecule, each its own velocities and noise")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("runs/transfer"))
    args = p.parse_args(argv)
    if args.val_every < 1:
        raise SystemExit("--val-every must be at least 1")
    if not args.data.is_dir():
        raise SystemExit(f"rMD17 not found at {args.data} (../shared/data/rmd17)")
    packages = dict(item.split("=", 1) for item in args.package)
    args.tune = parse_tune(args.tune)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["versions"] = versions()

    def save():
        path.write_text(json.dumps(results, indent=1))

    zero = results.setdefault("zero_shot", {})
    digests = {name: _digest(Path(package)) for name, package in packages.items()}
    for name, package in packages.items():
        for molecule in args.molecules:
            key = f"{name}/{molecule}/{args.n_test}/{digests[name]}"
            if key not in zero:
                test = read_dataset(args.data / f"rmd17_{molecule}_test_01.npz")[:args.n_test]
                zero[key] = evaluate(Path(package), test)
                save()
            print(f"[transfer] zero-shot {name} on {molecule}: {zero[key]}", file=sys.stderr)
    md = results.setdefault("md", {})
    for name, package in packages.items():
        for molecule in args.molecules if args.md_ps > 0 else []:
            key = f"{name}/{molecule}/{args.md_ps:g}ps/{args.md_temperature:g}K/{args.md_seeds}/{digests[name]}"
            if key not in md:
                checkpoint = args.out / "md" / name / digests[name] / f"{molecule}_{args.md_temperature:g}K.partial.npz"
                md[key] = md_survival(Path(package), molecule, args.data, args.md_ps, args.md_temperature,
                                      args.md_seeds, checkpoint)
                save()
                checkpoint.unlink(missing_ok=True)  # after the save: a kill between the two loses no MD
            print(f"[transfer] MD {name} on {molecule}: {md[key]}", file=sys.stderr)
    few = results.setdefault("few_shot", {})
    first = Path(next(iter(packages.values())))
    for molecule in args.fewshot if args.shots else []:  # before any training: a pool too small is an error now
        pool = len(read_dataset(args.data / f"rmd17_{molecule}_train_01.npz"))
        if max(args.shots) + args.n_val > pool:
            raise SystemExit(f"{molecule}: {max(args.shots)} training + {args.n_val} validation frames exceed the "
                             f"{pool} of rmd17_{molecule}_train_01.npz")
    replay = read_dataset(args.replay) if args.replay and "fine-tuned" in args.arms else None
    for molecule in args.fewshot:
        for n in args.shots:
            missing = [arm for arm in args.arms if few_shot_key(args, digests, molecule, n, arm) not in few]
            train, score_on = few_shot_sets(molecule, n, args.seed, args.data, args.n_val) if missing else (None, None)
            for arm in missing:  # (both arms on the same frames, read once)
                key = few_shot_key(args, digests, molecule, n, arm)
                lr = args.lr_tune if arm == "fine-tuned" else args.lr_scratch
                run = args.out / "few_shot" / run_folder(key)
                few[key] = few_shot_arm(arm, first, train, score_on, args.budget_min, run, args.seed, lr,
                                        replay if arm == "fine-tuned" else None, args.replay_repeat, args.tune,
                                        args.val_every)
                save()
                print(f"[transfer] {molecule} {n} frames, {arm}: F MAE {few[key]['forces_mae_meV_A']:.1f} meV/Å",
                      file=sys.stderr)
    print(report(results, packages, args, digests))


def few_shot_key(args, digests, molecule: str, n: int, arm: str) -> str:
    """An arm's result is kept under every setting it depends on: the scratch arm does not depend on the
    fine-tuning's learning rate or replay set, so it is reused when only those change."""
    key = f"{molecule}/{n}/{args.budget_min:g}min/seed{args.seed}/{'val' + str(args.n_val) if args.n_val else 'test'}"
    if args.val_every != 1:  # (1: the keys made before the option)
        key += f"/every{args.val_every}"
    if arm == "scratch":
        return f"{key}/scratch/lr{args.lr_scratch:g}/{digests[next(iter(digests))]}"
    replay = (f"replay{_file_digest(args.replay)}x{args.replay_repeat}" if args.replay else "noreplay")
    tune = f"/tune{json.dumps(args.tune, sort_keys=True)}" if args.tune else ""  # (none: the keys made before it)
    return f"{key}/fine-tuned/lr{args.lr_tune:g}/{replay}{tune}/{digests[next(iter(digests))]}"


def run_folder(key: str) -> str:
    """An arm's training folder: its key, with characters a --tune setting brings (quotes, braces, *) replaced and
    its hash appended, so that two settings never share a folder."""
    import hashlib
    import re

    name = key.replace("/", "_")
    if re.fullmatch(r"[\w.=-]+", name):
        return name  # (the folders made before --tune existed)
    return re.sub(r"[^\w.=-]+", "_", name)[:120] + "_" + hashlib.sha256(key.encode()).hexdigest()[:8]


def parse_tune(items: list[str]) -> dict:
    """``--tune SETTING=JSON`` items as train settings, checked by `TrainConfig` before any training starts."""
    tune, shared = {}, {"lr", "init_from", "epochs", "max_time_min", "seed", "keep", "device", "workers",
                        "early_stop_patience", "progress", "val_every"}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--tune {item!r}: expected SETTING=JSON, e.g. l2_to_start=1")
        if name in shared:  # (the budget, seed and kept epoch are what both arms share; lr: --lr-tune)
            raise SystemExit(f"--tune {name}: set by transfer.py for both arms or by its own option, not here")
        try:
            tune[name] = json.loads(value)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--tune {item!r}: the value is not JSON ({e})") from None
    try:
        checked = TrainConfig(**tune)
    except Exception as e:
        raise SystemExit(f"--tune: {e}") from None
    return {name: checked.model_dump()[name] for name in tune}  # (as validated: l2_to_start=1 and =1.0 are one key)


def report(results, packages, args, digests) -> str:
    lines = []
    if args.molecules:
        header = " | ".join(f"{n}: F MAE (meV/Å) / E MAE offset-free (meV)" for n in packages)
        lines += ["## Zero-shot on rMD17 (test_01)", "", f"| molecule | {header} |", "|---|" + "---|" * len(packages)]
        means = {n: [] for n in packages}
        for molecule in args.molecules:
            cells = []
            for name in packages:
                r = results["zero_shot"][f"{name}/{molecule}/{args.n_test}/{digests[name]}"]
                if r["status"] == "ok":
                    cells.append(f"{r['forces_mae_meV_A']:.1f} / {r['energy_mae_meV_offset_free']:.1f}")
                    means[name].append(r["forces_mae_meV_A"])
                else:
                    cells.append(r["status"])
            lines.append(f"| {molecule} | " + " | ".join(cells) + " |")
        mean_cells = " | ".join(f"**{np.mean(v):.1f}**" if v else "–" for v in means.values())
        lines.append(f"| **mean** | {mean_cells} |")
    if args.md_ps > 0 and args.molecules:
        from ffspace.bench import stability

        lines += ["", f"## Langevin MD from the first test frame: {args.md_seeds} × {args.md_ps:g} ps at "
                  f"{args.md_temperature:g} K", "", "| molecule | " + " | ".join(packages) + " |",
                  "|---|" + "---|" * len(packages)]
        for molecule in args.molecules:
            cells = []
            for name in packages:
                r = results["md"][f"{name}/{molecule}/{args.md_ps:g}ps/{args.md_temperature:g}K/{args.md_seeds}/"
                                  f"{digests[name]}"]
                if r["status"] != "ok":
                    cells.append(r["status"])
                    continue
                cells.append(stability.verdict(r))
            lines.append(f"| {molecule} | " + " | ".join(cells) + " |")
    if results.get("few_shot"):
        scored = f"{args.n_val} other train_01 frames (validation)" if args.n_val else "test_01"
        lines += ["", f"## Few-shot (force MAE on {scored}, meV/Å)", "",
                  "| molecule | frames | budget (training steps) | fine-tuned | scratch | ratio | wall time, fine-tuned "
                  "/ scratch (min) |", "|---|---|---|---|---|---|---|"]
        for molecule in args.fewshot:
            for n in args.shots:
                arms = [results["few_shot"].get(few_shot_key(args, digests, molecule, n, arm))
                        for arm in ("fine-tuned", "scratch")]
                cells = [f"{r['forces_mae_meV_A']:.1f}" if r else "not run" for r in arms]
                ratio = (f"{arms[1]['forces_mae_meV_A'] / arms[0]['forces_mae_meV_A']:.2f}×" if all(arms) else "–")
                walls = " / ".join(f"{r['wall_s'] / 60:.1f}" if r and "wall_s" in r else "not kept" for r in arms)
                lines.append(f"| {molecule} | {n} | {args.budget_min:g} min | {cells[0]} | {cells[1]} | {ratio} | "
                             f"{walls} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
