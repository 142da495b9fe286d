"""Active learning against random sampling: same start labels, same label budget, same training, same independent
600 K test set (issue 6).

    OMP_NUM_THREADS=2 python benchmarks/active_learning.py                       # aspirin, GFN2-xTB (hours)
    OMP_NUM_THREADS=2 python benchmarks/active_learning.py --config benchmarks/configs/active_small.yaml \\
        --n-test 40 --pool-per-temperature 30 --out runs/al_small                # the pipeline in minutes

1. Test set: GFN2-xTB Langevin MD from the loop's start structure at --test-temperature (600 K), its own seed,
   --n-test frames 20 steps apart, labeled with the config's labeler.
2. Active learning: `ffspace active` with the config (committee, exploration, selection, budget).
3. Random sampling: the same start labels, then at every label count of the active curve a committee trained
   exactly like the active one (same family, members, subsamples, epochs, warm start from the previous
   point) on frames drawn at random from GFN2-xTB MD: the conventional data set with the same number of
   labels. --baselines picks the MD pools: "explored" (the temperatures the loop explored: a strong baseline,
   handed the test's distribution through thousands of xTB MD force calls the loop does not make) and/or
   single temperatures such as 300 (MD at the start frames' temperature); "nm:explored" and "nm:300" draw
   from normal-mode sampling instead, the sampler that made the start frames (the cheap conventional data set
   of ANI-1: no MD at all). Only the choice of frames differs.
   --draws N repeats every baseline with N independent random orders of its pool: one draw's luck moves a
   curve by several per cent, and the table adds the mean over draws.
4. Force MAE of each committee's mean on the test set, the ratio random / active at every point, and the
   calibration of the final active committee on the test set (Spearman rank correlation of its force
   deviation with the actual error). Table to stdout, JSON and plots to --out.

Every step resumes after a kill: labels are in crash-safe stores, committees in checkpointed runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import sys
import time
from pathlib import Path

import numpy as np

from ffspace.active import Committee, calibration, calibration_plot, train_committee
from ffspace.active.config import load_active_config
from ffspace.active.loop import initial_labels, run_active, split_new_labels, split_start_labels
from ffspace.evaluate import error_metrics
from ffspace.evaluate.plots import pyplot, save_figure
from ffspace.reference.config import LabelConfig, SamplerConfig
from ffspace.data.readers import read_dataset, read_extxyz
from ffspace.reference.job import run_label_job, sampled_frames, samples_path, start_structures
from ffspace.reference.runner import label_structures
from ffspace.reference.store import LabelStore


def _mae(paths, test) -> float:
    return error_metrics(Committee.load(paths).predict(list(test)), test)["forces_mae_meV_A"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="benchmarks/configs/active_aspirin.yaml")
    p.add_argument("--out", type=Path, default=Path("runs/al_bench"))
    p.add_argument("--test-temperature", type=float, default=600.0)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--pool-per-temperature", type=int, default=250,
                   help="random-sampling pool frames per temperature, 20 MD steps apart (raised to 3x what the last "
                        "point draws, so the random picks are not the consecutive frames of a short trajectory; a "
                        "pool an earlier run made in --out is kept while it holds 2x the draw)")
    p.add_argument("--seed", type=int, default=12345, help="test set and pool MD (independent of the loop's seeds)")
    p.add_argument("--active-dir", default="active", help="folder of the loop's run under --out (several loop "
                   "variants can share one test set and one set of baselines)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides of the active-learning config, e.g. select.strategy=random")
    p.add_argument("--baselines", nargs="+", default=["explored"],
                   help="random-sampling pools: 'explored' (xTB MD at the temperatures the loop explored) and/or "
                        "temperatures in K (xTB MD at that temperature only); prefixed 'nm:' ('nm:explored', "
                        "'nm:300'): normal-mode sampling at those temperatures instead of MD")
    p.add_argument("--draws", type=int, default=1,
                   help="independent random orders of each pool, each its own curve (draw d > 0 in folders "
                        "'<baseline>_draw<d>'): how much of a ratio is the luck of one draw. The table adds the mean "
                        "over draws and its ratio")
    p.add_argument("--follow", action="store_true",
                   help="train only the baselines, point by point as the loop (the same command without --follow, "
                        "running in another process) finishes its rounds: the baselines then use the cores the "
                        "loop's MD leaves idle. The loop's process reads them back when it gets there")
    p.add_argument("--so-far", action="store_true",
                   help="train nothing: print the curve of what is on disk (every finished round's committee and every "
                        "trained baseline point, on the test set) and the calibration of the last round's committee; "
                        "for a run that is paused or still going")
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error(f"--draws must be at least 1, got {args.draws}")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    active_dir = out / args.active_dir
    cfg = load_active_config(args.config, [f"out={active_dir}", f"progress={sys.stderr.isatty()}", *args.set])

    starts = start_structures(LabelConfig(input=cfg.input, labeler=cfg.labeler, seed=cfg.seed))
    if args.follow:
        with _baseline_lock(out):
            _follow(args, cfg, active_dir, starts)
        return
    if args.so_far:
        _so_far(out, active_dir, args.baselines, cfg.committee.members, args.draws)
        return

    # 1. The independent test set: MD with its own seed from the loop's start structures. The conformer comes
    #    from the loop's seed: with the test's seed RDKit may embed another conformer, which neither the loop
    #    nor its start frames ever saw, while pools sampled from it would be handed the test's conformer.
    test_job = LabelConfig(input=cfg.input, labeler=cfg.labeler, seed=args.seed, progress=True,
                           samplers=[SamplerConfig(kind="md", n_frames=args.n_test, temperature=args.test_temperature,
                                                   interval=20)],
                           store=str(out / "test_store"), out=str(out / "test.extxyz"))
    test = run_label_job(test_job, starts=starts)  # a rerun reads the frames and labels back

    # 2. Active learning.
    active = run_active(cfg)
    rounds = active["rounds"]
    # Round k's committee learned every label made before round k (train and validation).
    points = [(r["labels_total"] - r["labeled"], active_dir / f"round_{r['round']:02d}" / "committee")
              for r in rounds]
    points.append((active["labels"], active_dir / "final" / "committee"))

    # 3. Random sampling from conventional xTB MD, each pool in one fixed random order. "explored": at the
    #    temperatures the loop explored (the strong baseline: it is handed the test's distribution through
    #    thousands of xTB MD force calls); a number: xTB MD at that temperature only (e.g. the start's 300 K).
    explored = sorted({t for r in rounds for t in r["temperatures_K"]})
    labeler, store = cfg.labeler.build(), LabelStore(active_dir / "store")
    initial = initial_labels(cfg, starts, labeler, store)  # the loop's start labels, read back (shared)
    curve = [{"labels": n, "active_mae_meV_A": _mae(sorted(Path(d).glob("member_*/model.safetensors")), test)}
             for n, d in points]
    baselines = {}
    with _baseline_lock(out):  # a --follow process may be training them now: wait for it, then read them back
        for spec, draw in [(spec, d) for spec in args.baselines for d in range(args.draws)]:
            baseline = _Baseline(spec, explored, cfg, args, starts, initial, labeler, points[-1][0] - len(initial),
                                 draw)
            baselines[baseline.name] = baseline.info
            for k, (n_labels, _) in enumerate(points):
                row = curve[k]
                row[f"{baseline.name}_mae_meV_A"] = _mae(baseline.train_point(k, n_labels), test)
                row[f"{baseline.name}_over_active"] = row[f"{baseline.name}_mae_meV_A"] / row["active_mae_meV_A"]
                print(f"{n_labels} labels: active {row['active_mae_meV_A']:.1f}, {baseline.name} "
                      f"{row[f'{baseline.name}_mae_meV_A']:.1f} meV/Å", file=sys.stderr)

    pools = _pools_of(list(baselines), args.draws)
    for row in curve:  # the mean over draws: the expected curve of random sampling, less one draw's luck
        for pool, names in pools.items():
            if len(names) > 1:
                row[f"{pool}_mean_mae_meV_A"] = float(np.mean([row[f"{n}_mae_meV_A"] for n in names]))
                row[f"{pool}_mean_over_active"] = row[f"{pool}_mean_mae_meV_A"] / row["active_mae_meV_A"]

    # 4. Calibration of the final active committee on the test set.
    final_paths = sorted((active_dir / "final" / "committee").glob("member_*/model.safetensors"))
    cal = calibration(Committee.load(final_paths), test)
    calibration_plot(cal, out / "calibration.png", f"final active committee on the {args.test_temperature:g} K test set")
    result = {"config": args.config, "test": {"temperature_K": args.test_temperature, "n": len(test)},
              "explored_temperatures_K": explored, "baselines": baselines, "curve": curve,
              "active_labels": active["labels"], "stop_reason": active["stop_reason"],
              "calibration": {k: v for k, v in cal.items() if k != "structures"},
              "command": "python benchmarks/active_learning.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    _plot(curve, {k: b["pool"] for k, b in baselines.items()}, out / "learning_curve.png", args.test_temperature)

    print(f"\nForce MAE on {len(test)} test frames at {args.test_temperature:g} K (GFN2-xTB MD, independent seed)")
    names = list(baselines) + [f"{pool}_mean" for pool, draws in pools.items() if len(draws) > 1]
    print("| labels | active learning (meV/Å) | " + " | ".join(f"{n} (meV/Å) | {n} / active" for n in names) + " |")
    print("|---|---|" + "---|---|" * len(names))
    for r in curve:
        print(f"| {r['labels']} | {r['active_mae_meV_A']:.1f} | " + " | ".join(
            f"{r[f'{n}_mae_meV_A']:.1f} | {r[f'{n}_over_active']:.2f}" for n in names) + " |")
    for n, b in baselines.items():
        print(f"{n}: pool of {b['pool_frames']} frames from {b['pool']} at {b['pool_temperatures_K']} K, "
              f"{b['pool_xtb_force_calls']} xTB force calls to make the pool (the active loop explores with its "
              "committee)")
    per_structure = "—" if cal["spearman_structures"] is None else f"{cal['spearman_structures']:.2f}"
    print(f"\nCalibration of the final active committee on the test set: Spearman {cal['spearman_atoms']:.2f} "
          f"(atoms), {per_structure} (structures); error / deviation scale {cal['scale_factor']:.2f}")
    print(f"stop: {active['stop_reason']}; results: {out / 'results.json'}")


def _so_far(out: Path, active_dir: Path, specs, members: int, draws: int = 1) -> None:
    """The curve of a paused or running benchmark, from the committees on disk (nothing is trained)."""
    test = read_dataset(out / "test.extxyz")
    names = [_baseline_name(_baseline_pool(spec, [])[2], d) for spec in specs for d in range(draws)]
    print(f"Force MAE on {len(test)} test frames (meV/Å), committees on disk in {out}")
    print("| labels | active learning | " + " | ".join(f"{n} | {n} / active" for n in names) + " |")
    print("|---|---|" + "---|---|" * len(names))
    k = 0
    while (active_dir / f"round_{k:02d}" / "summary.json").exists():
        summary = json.loads((active_dir / f"round_{k:02d}" / "summary.json").read_text())
        active = _mae(sorted((active_dir / f"round_{k:02d}" / "committee").glob("member_*/model.safetensors")), test)
        cells = []
        for n in names:
            point = out / n / f"point_{k:02d}"
            if len(list(point.glob("member_*/done"))) == members:
                mae = _mae(sorted(point.glob("member_*/model.safetensors")), test)
                cells.append(f"{mae:.1f} | {mae / active:.2f}")
            else:
                cells.append("— | —")
        print(f"| {summary['labels_total'] - summary['labeled']} | {active:.1f} | " + " | ".join(cells) + " |")
        k += 1
    if k:
        last = sorted((active_dir / f"round_{k - 1:02d}" / "committee").glob("member_*/model.safetensors"))
        cal = calibration(Committee.load(last), test)
        per_structure = "—" if cal["spearman_structures"] is None else f"{cal['spearman_structures']:.2f}"
        print(f"\nCalibration of round {k - 1}'s committee on the test set: Spearman {cal['spearman_atoms']:.2f} "
              f"(atoms), {per_structure} (structures); error / deviation scale {cal['scale_factor']:.2f}")


class _Baseline:
    """One random-sampling baseline: its pool (made once, in one fixed random order) and its committees, one
    per point of the active curve, trained exactly like the loop's (same family, members, subsamples,
    epochs, seeds, warm start from the previous point, train / validation rule)."""

    def __init__(self, spec, explored, cfg, args, starts, initial, labeler, needed: int, draw: int = 0):
        kind, temps, tag = _baseline_pool(spec, explored)
        out = args.out

        def make_pool_job(per_t):  # the pool's MD, per_t frames per temperature and start structure
            return LabelConfig(input=cfg.input, labeler=cfg.labeler, seed=args.seed + 1, progress=False,
                               samplers=[SamplerConfig(kind=kind, n_frames=per_t, temperature=t, interval=20)
                                         for t in temps])
        pool_dir = out / f"random_pool{tag}"
        per_t = _kept_pool(pool_dir, make_pool_job, starts, len(temps), needed, args.pool_per_temperature) \
            or max(args.pool_per_temperature, -(-3 * needed // len(temps)))
        pool_job = make_pool_job(per_t)
        self.pool = sampled_frames(pool_job, pool_dir, starts)
        # The pool's own reference cost: MD steps, or one finite-difference Hessian (6 calls per atom) per sampler.
        calls = sum(sc.equilibration_steps + sc.n_frames * sc.interval if kind == "md" else 6 * self.pool[0].n_atoms
                    for sc in pool_job.samplers)
        self.name = _baseline_name(tag, draw)
        self.info = {"pool": "xTB MD" if kind == "md" else "normal modes (xTB Hessian)", "pool_temperatures_K": temps,
                     "pool_frames": len(self.pool), "pool_xtb_force_calls": calls}
        # Draw 0 keeps the order of the benchmark's first version, so its committees are read back.
        order_seed = args.seed + 2 if draw == 0 else [args.seed + 2, draw]
        self.order = np.random.default_rng(order_seed).permutation(len(self.pool))
        self.store = LabelStore(out / f"random_store{tag}")
        self.cfg, self.out, self.labeler = cfg, out, labeler
        self.initial = initial
        self.train0, self.val = split_start_labels(initial, cfg)
        self.previous = None

    def train_point(self, k: int, n_labels: int) -> list[Path]:
        """Point k (points are trained in order: each starts from the previous one's committee)."""
        cfg, n_extra = self.cfg, n_labels - len(self.initial)
        if n_extra > len(self.pool):
            sys.exit(f"the random pool has {len(self.pool)} frames, {n_extra} needed: raise --pool-per-temperature")
        extra = label_structures([self.pool[i] for i in self.order[:n_extra]], self.labeler, self.store,
                                 progress=False) if n_extra else []
        extra_train, extra_val = split_new_labels(extra, len(self.initial), cfg.val_every) if n_extra else ([], [])
        train, val_k = self.train0 + extra_train, self.val + extra_val  # the loop's train / validation rule
        paths = train_committee(train, val_k, cfg.model, cfg.train_config(), self.out / self.name / f"point_{k:02d}",
                                members=cfg.committee.members, subsample=cfg.committee.subsample, seed=cfg.seed + k,
                                warm_start=self.previous if (self.previous and cfg.committee.warm_start) else None,
                                workers=cfg.committee.workers, warm_minutes=cfg.committee.warm_minutes,
                                warm_lr=cfg.committee.warm_lr, warm_keep=cfg.committee.warm_keep)
        self.previous = paths
        return paths


@contextlib.contextmanager
def _baseline_lock(out: Path):
    """One process at a time trains baselines in ``out`` (a --follow process and the loop's own run)."""
    with open(out / "baselines.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[benchmark] another process trains the baselines in {out}: waiting for it to finish",
                  file=sys.stderr)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _follow(args, cfg, active_dir: Path, starts, poll_s: float = 20.0) -> None:
    """Baselines in step with a loop running in another process: point k is trained once round k (which
    fixes how many labels it had) has finished. The pools are sized for the loop's label budget and the
    temperatures of its config, as the loop's run will size them if the loop spends its budget."""
    while not (active_dir / "round_00" / "summary.json").exists():  # the start labels are the loop's
        print(f"[follow] waiting for round 0 in {active_dir}", file=sys.stderr)
        time.sleep(poll_s)
    labeler = cfg.labeler.build()
    initial = initial_labels(cfg, starts, labeler, LabelStore(active_dir / "store"))
    explored = sorted(cfg.explore.temperatures)
    baselines = [_Baseline(spec, explored, cfg, args, starts, initial, labeler, cfg.max_labels - len(initial), d)
                 for spec in args.baselines for d in range(args.draws)]
    trained = 0
    while True:
        summaries = []
        while (active_dir / f"round_{len(summaries):02d}" / "summary.json").exists():
            summaries.append(json.loads((active_dir / f"round_{len(summaries):02d}" / "summary.json").read_text()))
        points = [r["labels_total"] - r["labeled"] for r in summaries]
        result = active_dir / "rounds.json"
        finished = result.exists() and len(json.loads(result.read_text())["rounds"]) == len(summaries)
        if finished:
            points.append(json.loads(result.read_text())["labels"])
        for k in range(trained, len(points)):
            for b in baselines:
                b.train_point(k, points[k])
            print(f"[follow] point {k} ({points[k]} labels) trained for {', '.join(b.name for b in baselines)}",
                  file=sys.stderr)
        trained = len(points)
        if finished:
            print("[follow] the loop has finished and every baseline point is trained; its run reads them back",
                  file=sys.stderr)
            return
        time.sleep(poll_s)


def _kept_pool(folder: Path, make_pool_job, starts, n_temperatures: int, needed: int, minimum: int) -> int | None:
    """Frames per temperature of the largest pool an earlier run made in ``folder`` with these settings that
    still holds 2x the draw (and ``minimum`` per temperature), or None: then a new pool is made, 3x the draw.
    A pool the size of the draw hands over every frame of a short trajectory (frames 10 fs apart), a weaker
    baseline than random sampling; keeping a large enough pool lets a raised label budget extend the curve
    instead of redrawing every point. A file counts only if its name is the fingerprint of these settings."""
    kept = []
    for path in folder.glob("samples-*.extxyz"):
        n = len(read_extxyz(path, required=()))
        per_t, rest = divmod(n, n_temperatures * len(starts))
        if rest or per_t < minimum or n < 2 * needed:
            continue
        if samples_path(make_pool_job(per_t), folder, starts) == path:
            kept.append(per_t)
    return max(kept, default=None)


def _baseline_pool(spec: str, explored: list[float]) -> tuple[str, list[float], str]:
    """A --baselines entry → (sampler kind, temperatures, name suffix): "explored" → xTB MD at the loop's
    temperatures (suffix "", the original baseline's folders), "300" → "_300K", "nm:explored" → "_nm",
    "nm:300" → "_nm_300K"."""
    kind, _, rest = spec.rpartition(":")
    if kind not in ("", "nm"):
        sys.exit(f"--baselines {spec!r}: the prefix must be 'nm:' (normal modes) or none (xTB MD)")
    try:
        temps = explored if rest == "explored" else [float(rest)]
    except ValueError:
        sys.exit(f"--baselines {spec!r}: expected 'explored' or a temperature in K after the optional 'nm:'")
    tag = ("_nm" if kind else "") + ("" if rest == "explored" else f"_{temps[0]:g}K")
    return ("normal_modes" if kind else "md"), temps, tag


def _baseline_name(tag: str, draw: int) -> str:
    """Folder and column name of one draw of a baseline: "random<tag>", then "random<tag>_draw<d>"."""
    return f"random{tag}" + (f"_draw{draw}" if draw else "")


def _pools_of(names: list[str], draws: int) -> dict[str, list[str]]:
    """Baseline names grouped by pool: {"random_300K": ["random_300K", "random_300K_draw1", ...]}."""
    return {n: [n] + [f"{n}_draw{d}" for d in range(1, draws)] for n in names if "_draw" not in n}


def _plot(curve, pools: dict, path: Path, temperature: float) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    n = [r["labels"] for r in curve]
    ax.plot(n, [r["active_mae_meV_A"] for r in curve], "o-", label="active learning")
    for name in pools:
        ax.plot(n, [r[f"{name}_mae_meV_A"] for r in curve], "s--", label=f"{name} ({pools[name]} pool)")
    ax.set_xlabel("labels (GFN2-xTB calculations)")
    ax.set_ylabel(f"force MAE at {temperature:g} K (meV/Å)")
    ax.set_yscale("log")
    ax.legend()
    save_figure(plt, fig, path)


if __name__ == "__main__":
    main()
