"""Issue 30, acceptance 2, by the rule fixed before the runs: our model's energy and force RMSE on the hot 3BPA test
sets against mace-torch's best recipe, on the mean over seeds and within each run, with paired bootstrap intervals.

The rule (benchmarks/configs/bench_3bpa_acc2_148_seed0.yaml): each recipe's figure is the mean of its seeds' RMSEs;
mace-torch's best is its recipe with the lower mean validation force RMSE (the training's best epoch, as kept in
``train/summary.json``: validation frames only, never the hot sets); the acceptance holds when all four ratios (600 K
and 1200 K, energy and forces) are <= 0.7 on the means and within each run alone.

Each run folder is a finished ``ffspace bench`` output (``report.json``, ``config.yaml``, the packages). Without
``--bootstrap`` only the reports are read. With it, every package is evaluated again on the hot sets (rebuilt as the
bench built them: the set minus frames in the training or validation split) and the frames are resampled, the same
draw for every model and run, giving a 95 % interval for each ratio: with ~42 frames a set, an RMSE ratio is
uncertain by several per cent, which the bare figure does not say.

    python benchmarks/acc2_ratios.py runs/bench_3bpa_acc2_148_seed0 runs/bench_3bpa_acc2_148_seed1 \\
        --ours mace_mm_morse_64_xtb --peer mace_torch_xtb --peer mace_torch_al --bootstrap 2000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from ffspace import units
from ffspace.bench import load_bench_config
from ffspace.bench.runner import _read_set, _train_config, _without, splits
from ffspace.potential import Potential

QUANTITIES = (("energy_rmse_meV", "E RMSE (meV)"), ("forces_rmse_meV_A", "F RMSE (meV/Å)"))
LIMIT = 0.7


def _validation_f_rmse(run: Path, dataset: str, model: str) -> float:
    path = run / dataset / model / "train" / "summary.json"
    try:
        summary = json.loads(path.read_text())
        return float((summary.get("kept") or summary["best"])["val_forces_rmse_meV_A"])  # the packaged epoch
    except (OSError, KeyError, ValueError) as exc:
        raise SystemExit(f"{path}: no validation force RMSE of the kept training ({type(exc).__name__}: {exc})")


def _train_seed(run: Path, model: str) -> int:
    """The training seed of ``model`` in the bench run ``run`` (its kept training's config)."""
    path = next(run.glob(f"*/{model}/train/config.yaml"), None)
    try:
        return int(yaml.safe_load(path.read_text())["train"]["seed"])
    except (AttributeError, OSError, KeyError, TypeError, ValueError) as exc:
        raise SystemExit(f"{run}: no training seed of {model!r} in */{model}/train/config.yaml ({exc})")


def _report(run: Path) -> dict:
    path = run / "report.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (is {run} a finished `ffspace bench` run?)")
    return json.loads(path.read_text())


def _per_frame(pot: Potential, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame energy error (eV), summed squared force-component error (eV²/Å²) and component count."""
    structures = list(data)
    pred = pot.predict(structures, 32)
    de = pred["energy"] - np.array([s.energy for s in structures])
    cuts = np.cumsum([s.n_atoms for s in structures])[:-1]
    sq = [((f - s.forces) ** 2).sum() for f, s in zip(np.split(np.asarray(pred["forces"]), cuts), structures)]
    return de, np.array(sq), np.array([3 * s.n_atoms for s in structures])


def _rmses(de, sq, n, idx) -> dict:
    return {"energy_rmse_meV": np.sqrt((de[..., idx] ** 2).mean(-1)) / units.meV,
            "forces_rmse_meV_A": np.sqrt(sq[..., idx].sum(-1) / n[..., idx].sum(-1)) * 1000}


def _frames(runs: list[Path], ours: str, peer: str, sets: list[str]) -> dict:
    """{set: {model: [(de, sq, n) per run]}} from each run's packages, on the hot sets as its bench built them."""
    out = {s: {ours: [], peer: []} for s in sets}
    digests = {}
    for run in runs:
        cfg = load_bench_config(run / "config.yaml")
        ds = cfg.datasets[0]
        train, val, _ = splits(ds)
        for s in sets:
            data, _ = _without(_read_set(ds, ds.extrapolation[s]), [train, val])
            digest = [(x.numbers.tobytes(), np.round(x.positions, 6).tobytes()) for x in data]
            if digests.setdefault(s, digest) != digest:
                raise SystemExit(f"{run}: its {s!r} frames differ from the first run's: a paired bootstrap needs the "
                                 "same frames in every run")
            for model in (ours, peer):
                m = next(x for x in cfg.models if x.name == model)
                pot = Potential.load(run / ds.name / model / "train" / "model.safetensors",
                                     dtype=_train_config(cfg, m).dtype, device="cpu")
                out[s][model].append(_per_frame(pot, data))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished bench run folders, one per seed")
    ap.add_argument("--ours", required=True, help="our model's name in the runs")
    ap.add_argument("--peer", action="append", required=True, help="a mace-torch recipe's name (repeatable)")
    ap.add_argument("--bootstrap", type=int, default=0, help="resamples of the hot frames (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    if len({r.resolve() for r in args.runs}) != len(args.runs):
        raise SystemExit("a run folder is given twice: each seed's run counts once")
    reports = [_report(r) for r in args.runs]
    dataset = next(iter(reports[0]["datasets"]))
    sets = list(reports[0]["datasets"][dataset]["extrapolation_sets"])
    for run, rep in zip(args.runs, reports):
        if list(rep["datasets"][dataset]["extrapolation_sets"]) != sets:
            raise SystemExit(f"{run}: its hot sets are not the first run's ({sets})")
    models = [args.ours, *args.peer]
    per_run = {}
    for run, rep in zip(args.runs, reports):
        ms = rep["datasets"][dataset]["models"]
        for name in models:
            if name not in ms or ms[name].get("status", "ok") != "ok":
                raise SystemExit(f"{run}: model {name!r} is missing or failed in report.json")
            row = {"val_F_rmse": _validation_f_rmse(run, dataset, name)}
            for s in sets:
                for q, _ in QUANTITIES:
                    row[(s, q)] = ms[name]["extrapolation"][s][q]
            per_run.setdefault(name, []).append(row)
    for name in models:  # the runs must be different seeds of the same recipes, not copies of one run
        seeds = [_train_seed(run, name) for run in args.runs]
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"model {name!r} was trained with the same seed in several runs ({seeds})")
    mean = {name: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} for name, rows in per_run.items()}
    peer = min(args.peer, key=lambda p: mean[p]["val_F_rmse"])

    cols = [(s, q, f"{s} {label}") for s in sets for q, label in QUANTITIES]
    print(f"# {dataset}: {len(args.runs)} run(s): " + ", ".join(str(r) for r in args.runs))
    print("| model | run | validation F RMSE (meV/Å) | " + " | ".join(c[2] for c in cols) + " |")
    print("|---|---|---|" + "---|" * len(cols))
    for name in models:
        for i, row in enumerate(per_run[name]):
            print(f"| {name} | {i} | {row['val_F_rmse']:.1f} | " + " | ".join(f"{row[(s, q)]:.1f}" for s, q, _ in cols)
                  + " |")
        m = mean[name]
        print(f"| {name} | mean | {m['val_F_rmse']:.1f} | " + " | ".join(f"{m[(s, q)]:.1f}" for s, q, _ in cols) + " |")
    val = ", ".join(f"{p} {mean[p]['val_F_rmse']:.1f}" for p in args.peer)
    print(f"\nmace-torch's best by mean validation force RMSE: {peer} ({val} meV/Å)")

    ratios = {"mean": {(s, q): mean[args.ours][(s, q)] / mean[peer][(s, q)] for s, q, _ in cols}}
    for i in range(len(args.runs)):
        ratios[f"run {i}"] = {(s, q): per_run[args.ours][i][(s, q)] / per_run[peer][i][(s, q)] for s, q, _ in cols}
    intervals = {}
    if args.bootstrap:
        frames = _frames(args.runs, args.ours, peer, sets)
        rng = np.random.default_rng(args.seed)
        for s in sets:
            n_frames = len(frames[s][args.ours][0][0])
            idx = rng.integers(0, n_frames, size=(args.bootstrap, n_frames))
            stacked = {m: [np.stack(x) for x in zip(*frames[s][m])] for m in (args.ours, peer)}  # (runs, frames)
            for i, run in enumerate(args.runs):  # the recomputed figures must be the report's
                for m in (args.ours, peer):
                    full = _rmses(*(x[i] for x in stacked[m]), np.arange(n_frames))
                    for q, _ in QUANTITIES:
                        if not np.isclose(full[q], per_run[m][i][(s, q)], rtol=1e-4):
                            raise SystemExit(f"{run}: {m} {s} {q} evaluated again is {full[q]:.4f}, the report says "
                                             f"{per_run[m][i][(s, q)]:.4f}: the packages are not the report's")
            boot = {m: [_rmses(*(x[i] for x in stacked[m]), idx)
                        for i in range(len(args.runs))] for m in (args.ours, peer)}
            for q, _ in QUANTITIES:
                ours_q = np.array([b[q] for b in boot[args.ours]])  # (runs, resamples)
                peer_q = np.array([b[q] for b in boot[peer]])
                draws = {"mean": ours_q.mean(0) / peer_q.mean(0),
                         **{f"run {i}": ours_q[i] / peer_q[i] for i in range(len(args.runs))}}
                for key, d in draws.items():
                    intervals[(key, s, q)] = np.percentile(d, [2.5, 97.5])

    print(f"\nRatios ours / {peer} (acceptance: every one <= {LIMIT})" + (
        f"; 95 % paired bootstrap interval over the hot frames, {args.bootstrap} resamples" if intervals else ""))
    print("| | " + " | ".join(c[2] for c in cols) + " | all <= 0.7 |")
    print("|---|" + "---|" * (len(cols) + 1))
    verdict = True
    for key, r in ratios.items():
        cells = []
        for s, q, _ in cols:
            ci = intervals.get((key, s, q))
            cells.append(f"{r[(s, q)]:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci is not None else ""))
        ok = all(v <= LIMIT for v in r.values())
        verdict &= ok
        print(f"| {key} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    if len(args.runs) < 2:  # the rule is decided on two seeds; one run only says how that run went
        print(f"\nOne run only: the rule needs both seeds (this run's ratios {'all' if verdict else 'not all'} "
              f"<= {LIMIT}): INCOMPLETE")
    else:
        print(f"\nAcceptance 2 by the rule: {'MET' if verdict else 'NOT MET'}")


if __name__ == "__main__":
    main()
