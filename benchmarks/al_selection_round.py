"""How much does the selection rule matter? One active-learning round replayed with several rules (issue 6).

From the state of a finished round k of an `ffspace active` run (its labels before round k, its committee, the
frames its exploration recorded), every rule picks --n frames; they are labeled, a model is trained on the
labels before round k plus the picks (warm start from the round's member 0, the loop's training settings) and
tested. Only the picked frames differ between rules, so the test MAEs say how much one round's choice of frames
is worth:

    OMP_NUM_THREADS=1 python benchmarks/al_selection_round.py --run runs/al_bench/active_diverse --round 10 \\
        --n 64 --test runs/al_bench/test.extxyz --pool runs/al_bench/random_pool --seeds 0 1

Rules (all on the round's explored frames, at most --per-trajectory per trajectory, 5 recorded frames apart):
  highest   largest atomic force deviation first (the loop's "highest");
  mean      largest mean atomic force deviation first (ranks a structure's mean error better: see the table);
  diverse   deviation × descriptor distance to the nearest labeled frame (the loop's "diverse");
  weighted  at random with probability ∝ deviation² (the loop's "weighted": where MD goes × the error expected);
  explored  at random among the explored frames (uncertainty ignored, exploration kept);
  pool      at random from a conventional xTB MD pool (--pool: the samples file of the benchmark's random pool);
  none      no new frame: the same training on the labels before round k alone (what the epochs alone give);
  oracle    largest actual atomic force error of the round's committee first: every explored frame is labeled to
            know it. No loop can do this (it would label everything); it is what a perfect uncertainty would pick,
            the ceiling of every rule that ranks the explored frames;
  oracle_mean  the same by the actual mean atomic force error.

Prints, per rule: the picks' temperatures and the round's committee error on the picks (how hard they were; for
the random rules, seed 0's draw), and the test force MAE of each trained model (meV/Å). Labels go to --out's
store, models to --out.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from ffspace.active import Committee, train_committee
from ffspace.active.config import load_active_config
from ffspace.active.loop import labels_before_round, split_new_labels
from ffspace.active.selection import select
from ffspace.data.dataset import Dataset
from ffspace.data.readers import read_dataset, read_extxyz
from ffspace.evaluate import error_metrics
from ffspace.evaluate.metrics import predict
from ffspace.potential.package import load_package
from ffspace.potential.potential import Potential
from ffspace.reference.config import LabelConfig
from ffspace.reference.job import start_structures
from ffspace.reference.runner import label_structures
from ffspace.reference.store import LabelStore, structure_key

RULES = ("highest", "mean", "diverse", "weighted", "explored", "pool", "none", "oracle", "oracle_mean")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the `ffspace active` run folder (its config.json is read)")
    p.add_argument("--round", type=int, required=True, help="a finished round: its committee and explored frames")
    p.add_argument("--n", type=int, default=64, help="frames each rule picks")
    p.add_argument("--test", type=Path, required=True, help="labeled test set (extxyz)")
    p.add_argument("--pool", type=Path, help="folder with the conventional MD pool's samples-*.extxyz (rule 'pool')")
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (and random-rule draws)")
    p.add_argument("--per-trajectory", type=int, default=8)
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=200")
    p.add_argument("--out", type=Path, default=Path("runs/al_selection_round"))
    args = p.parse_args(argv)
    if "pool" in args.rules and args.pool is None:
        p.error("rule 'pool' needs --pool")

    run, k = args.run, args.round
    cfg = load_active_config(run / "config.json", [f"out={run}", "progress=false", *args.set])
    starts = start_structures(LabelConfig(input=cfg.input, labeler=cfg.labeler, seed=cfg.seed))
    labeler = cfg.labeler.build()
    train, val = labels_before_round(cfg, k, starts, labeler)
    paths = sorted((run / f"round_{k:02d}" / "committee").glob("member_*/model.safetensors"))
    committee = Committee.load(paths)
    test = read_dataset(args.test)

    # The round's explored frames, each with its largest and mean atomic force deviation under the round's committee.
    records = [r for r in json.loads((run / f"round_{k:02d}" / "explored.json").read_text()) if r["stopped"] is None]
    frames = [starts[r["start"]].copy(positions=np.array(r["positions"]), energy=None, forces=None, stress=None)
              for r in records]
    dev = np.split(committee.predict(frames)["force_deviation"], np.cumsum([f.n_atoms for f in frames])[:-1])
    for r, f, d in zip(records, frames, dev):
        r.update(positions=f.positions, numbers=f.numbers, max_dev=float(d.max()), mean_dev=float(d.mean()))
    _print_ranking(committee, test)

    store = LabelStore(args.out / "store")
    pool = _read_pool(args.pool) if args.pool else []
    if {"oracle", "oracle_mean"} & set(args.rules):
        _add_actual_errors(records, frames, committee, labeler, store)
    print(f"\nRound {k} of {run}: {len(train) + len(val)} labels before it, {len(records)} explored frames; "
          f"each rule adds {args.n}; test: {len(test)} frames of {args.test}")
    print("| rule | picks' temperatures (K) | committee error on the picks (meV/Å) | "
          + " | ".join(f"test MAE, seed {s}" for s in args.seeds) + " | mean |")
    print("|---|---|---|" + "---|" * (len(args.seeds) + 1))
    for rule in args.rules:
        maes, picks_mae, temps = [], None, "—"
        for seed in args.seeds:
            picked = _pick(rule, records, starts, pool, args, cfg, seed, list(train) + list(val))
            labeled = label_structures(picked, labeler, store, progress=False) if picked else Dataset([], name=rule)
            if len(labeled) != len(picked):
                raise SystemExit(f"{len(picked) - len(labeled)} of rule {rule}'s picks failed to label (see {store})")
            if picks_mae is None and len(labeled):  # seed 0's draw
                ref = np.concatenate([s.forces for s in labeled])
                picks_mae = float(np.abs(committee.predict(list(labeled))["forces"] - ref).mean() * 1000)
                temps = dict(Counter(int(s.info["temperature_K"]) for s in picked)) if rule != "pool" else "MD pool"
            new_train, new_val = split_new_labels(labeled, len(train) + len(val), cfg.val_every)  # the loop's rule
            model = train_committee(train + new_train, val + new_val, cfg.model, cfg.train_config(),
                                    args.out / f"round_{k:02d}_n{args.n}" / f"{rule}_seed{seed}",
                                    members=1, subsample=1.0, seed=seed, warm_start=[paths[0]],
                                    warm_minutes=cfg.committee.warm_minutes, warm_lr=cfg.committee.warm_lr,
                                    warm_keep=cfg.committee.warm_keep)[0]
            pred = predict(Potential(load_package(model)[0]), list(test))
            maes.append(error_metrics(pred, test)["forces_mae_meV_A"])
        hardness = "—" if picks_mae is None else f"{picks_mae:.1f}"
        print(f"| {rule} | {temps} | {hardness} | " + " | ".join(f"{m:.1f}" for m in maes)
              + f" | {np.mean(maes):.1f} |", flush=True)


def _read_pool(folder: Path):
    files = sorted(folder.glob("samples-*.extxyz"))
    if len(files) != 1:
        raise SystemExit(f"--pool {folder}: expected one samples-*.extxyz (the benchmark's random pool), "
                         f"found {len(files)}")
    return list(read_extxyz(files[0], required=()))


def _pick(rule, records, starts, pool, args, cfg, seed, labeled):
    """--n frames by ``rule``, as unlabeled structures with their exploration info."""
    if rule == "none":
        return []
    if rule == "pool":
        return [pool[i] for i in np.random.default_rng([seed, 1]).choice(len(pool), args.n, replace=False)]
    key = {"mean": "mean_dev", "oracle": "max_err", "oracle_mean": "mean_err"}.get(rule, "max_dev")
    strategy = {"diverse": "diverse", "weighted": "weighted", "explored": "random"}.get(rule, "highest")
    # lower = 0: every explored frame is a candidate (the random rule then ignores uncertainty altogether). The
    # oracles skip the few frames that failed to label (no actual error).
    candidates = [{**r, "deviation_eV_A": r[key]} for r in records if r.get(key) is not None]
    picked, _ = select(candidates, 0.0, np.inf, args.n, args.per_trajectory,
                       cfg.select.min_separation, cfg.explore.record_every, strategy, seed=seed, labeled=labeled)
    if len(picked) < args.n:
        raise SystemExit(f"rule {rule} found only {len(picked)} frames: lower --n or raise --per-trajectory")
    return [starts[r["start"]].copy(positions=r["positions"], energy=None, forces=None, stress=None,
                                    info={"temperature_K": r["temperature_K"], "trajectory": r["trajectory"],
                                          "step": r["step"]}) for r in picked]


def _add_actual_errors(records, frames, committee, labeler, store):
    """Label every explored frame and record the committee's actual largest and mean atomic force error on it
    (``max_err``, ``mean_err``, eV/Å; None where the label failed)."""
    label_structures(frames, labeler, store, progress=True)
    method = labeler.provenance()
    keys = [structure_key(f, method) for f in frames]
    done = [store.get(k) if k in store else None for k in keys]
    ok = [s for s in done if s is not None]
    pred = committee.predict(ok)["forces"]
    err = np.split(np.linalg.norm(pred - np.concatenate([s.forces for s in ok]), axis=1),
                   np.cumsum([s.n_atoms for s in ok])[:-1])
    it = iter(err)
    for r, s in zip(records, done):
        e = next(it) if s is not None else None
        r.update(max_err=None if e is None else float(e.max()), mean_err=None if e is None else float(e.mean()))
    print(f"{len(ok)} of {len(frames)} explored frames labeled for the oracle rules; the committee's actual error on "
          f"them: mean atomic {np.mean([e.mean() for e in err]) * 1000:.1f} meV/Å")


def _print_ranking(committee, test):
    """Which per-structure deviation ranks a structure's force MAE: the largest atomic one or the mean?"""
    pred = committee.predict(list(test))
    ref = np.concatenate([s.forces for s in test])
    cuts = np.cumsum([s.n_atoms for s in test])[:-1]
    err = [e.mean() for e in np.split(np.abs(pred["forces"] - ref), cuts)]
    dev = np.split(pred["force_deviation"], cuts)
    print(f"Round committee on the test set: Spearman of a structure's force MAE with its largest atomic deviation "
          f"{spearmanr([d.max() for d in dev], err)[0]:.2f}, with its mean atomic deviation "
          f"{spearmanr([d.mean() for d in dev], err)[0]:.2f}")


if __name__ == "__main__":
    main()
