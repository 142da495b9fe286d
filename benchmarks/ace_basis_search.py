"""Which linear ACE basis, and which regulariser, fits rMD17 aspirin best: many bases from one set of normal equations.

    python benchmarks/ace_basis_search.py runs/ace_superset            # after:
    python benchmarks/rmd17.py --family ace --model n_rbf=10 degree=12 n_rbf_3=6 lmax_3=3 degree_3=8 \\
        --run-dir runs/ace_superset                                       # the superset's normal equations (~15 min)

Every smaller basis of the same family (fewer radial functions, lower degrees or lmax, on the same cutoff) is a
subset of a larger one's features: its normal equations are rows and columns of the larger one's. So one fit of a
superset gives the normal equations of every sub-basis, and each candidate then costs a Cholesky solve per ridge
strength. Selection follows the fit's own rule (lowest validation loss, the trainer's w_E (ΔE/N)² + w_F ΔF² on the
50 validation frames); the 1000 test frames are evaluated only for the selected setting of each candidate. The
regulariser is λ·G_ff·(1 + degree_f)^p per feature f (G the normal matrix, degree_f the feature's total polynomial
degree: Σn + Σl): p = 0 is the fit's own ridge, p > 0 penalises rough, high-degree features more (the smoothness
priors of the linear ACE papers). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ffspace.data import read_dataset
from ffspace.evaluate import error_metrics, predict
from ffspace.potential import Potential
from ffspace.train import build_model_for_data
from ffspace.train.least_squares import symmetric

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = [  # settings on top of EARLIER_DEFAULT (the family's defaults before this search); that basis first
    {},
    {"n_rbf_3": 5, "degree_3": 7},
    {"n_rbf_3": 6, "degree_3": 7},
    {"n_rbf_3": 4, "lmax_3": 3, "degree_3": 7},
    {"n_rbf_3": 5, "degree_3": 8},
    {"n_rbf_3": 5, "lmax_3": 3, "degree_3": 8},
    {"n_rbf_3": 6, "lmax_3": 3, "degree_3": 8},
    {"n_rbf": 10, "degree": 12},
    {"n_rbf": 10, "degree": 12, "n_rbf_3": 5, "degree_3": 8},
    {"n_rbf": 10, "degree": 12, "n_rbf_3": 6, "lmax_3": 3, "degree_3": 8},
]


# the family's defaults before this search chose larger ones (2026-12-03): the candidates' common starting point
EARLIER_DEFAULT = {"n_rbf": 8, "lmax": 3, "degree": 10, "n_rbf_3": 4, "lmax_3": 2, "degree_3": 6}


def feature_keys(term) -> list[tuple]:
    """What each feature of a LinearACE term is, independent of how many radial functions the basis has: channels as
    (element, n), couplings as (l1, l2, l3); with its total degree last."""
    k2 = [(k // term.n_rbf, k % term.n_rbf) for k in range(term.k2)]
    k3 = [(k // term.n_rbf_3, k % term.n_rbf_3) for k in range(term.k3)]
    keys = [("1", 0)] + [("A", c, c[1]) for c in k2]
    for l in range(len(term.pairs)):
        a, b = getattr(term, f"pairs_{l}")
        keys += [("P", l, k2[x], k2[y], k2[x][1] + k2[y][1] + 2 * l) for x, y in zip(a.tolist(), b.tolist())]
    if term.n_triples:
        p_of, ka, kb, kc = (t.tolist() for t in term.triples)
        for p, ls in enumerate(term.couplings):
            keys += [("T", ls, k3[a], k3[b], k3[c], k3[a][1] + k3[b][1] + k3[c][1] + sum(ls))
                     for q, a, b, c in zip(p_of, ka, kb, kc) if q == p]
    assert len(keys) == term.n_features
    return keys


def _ace(model):
    return next(t for t in model.terms if getattr(t, "linear", False))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="the superset's run folder (config.yaml and checkpoint.pt)")
    p.add_argument("--powers", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    p.add_argument("--ridges", type=float, nargs="+", default=[10.0 ** k for k in range(-12, -3)])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "rmd17")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    state = torch.load(args.run_dir / "checkpoint.pt", weights_only=True, map_location="cpu")
    if state["done"] != config["data"]["n_train"]:
        sys.exit(f"{args.run_dir}: the normal equations hold {state['done']} of {config['data']['n_train']} structures")
    gram, rhs = symmetric(state["gram"]), state["rhs"]
    del state
    ace_cfg = next(t for t in config["model"]["terms"] if t["family"] == "ace")
    base = {k: ace_cfg[k] for k in ("cutoff", "n_rbf", "lmax", "degree", "correlation", "n_rbf_3", "lmax_3",
                                    "degree_3")}
    train_val = read_dataset(Path(config["data"]["train_source"]))
    train_set, val_set = train_val.split([config["data"]["n_train"], config["data"]["n_val"]], seed=config["train"]["seed"])
    test_set = read_dataset(args.data / "rmd17_aspirin_test_01.npz")
    w_e, w_f = config["train"]["energy_weight"], config["train"]["forces_weight"]
    val_energy = np.array([s.energy for s in val_set])
    val_atoms = np.array([s.n_atoms for s in val_set])
    val_forces = np.concatenate([s.forces for s in val_set])
    superset = build_model_for_data({"family": "ace", **base}, train_set, seed=0)
    index = {k: q for q, k in enumerate(feature_keys(_ace(superset)))}
    n_super, n_el = _ace(superset).n_features, len(_ace(superset).elements)
    rows = []
    print("| basis | weights | p | ridge | val F MAE | test E MAE (meV) | test F MAE (meV/Å) | F RMSE | solve (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cand in CANDIDATES:
        settings = {**base, **EARLIER_DEFAULT, **cand}
        model = build_model_for_data({"family": "ace", **settings}, train_set, seed=0)
        term = _ace(model)
        keys = feature_keys(term)
        try:
            cols = [index[k] for k in keys]
        except KeyError as exc:
            print(f"| {cand} | not a subset of the superset ({exc}) |")
            continue
        full_cols = torch.tensor([e * n_super + c for e in range(n_el) for c in cols])
        degree = torch.tensor([k[-1] for k in keys] * n_el, dtype=torch.float64)
        g, r = gram[full_cols][:, full_cols], rhs[full_cols]
        diag = g.diagonal().clone()
        diag[diag <= 0] = 1.0
        best = None
        t0 = time.perf_counter()
        for power in args.powers:
            shape = diag * (1.0 + degree) ** power
            shape = shape / shape.mean() * diag.mean()  # the same overall strength scale as p = 0
            for lam in args.ridges:
                factor, info = torch.linalg.cholesky_ex(g + torch.diag(lam * shape))
                if int(info):
                    continue
                w = torch.cholesky_solve(r[:, None], factor)[:, 0]
                with torch.no_grad():
                    term.weights.copy_(w.reshape(term.weights.shape).to(term.weights))
                pred = predict(Potential(model, dtype=torch.float32), val_set)
                de = (pred["energy"] - val_energy) / val_atoms
                df = pred["forces"] - val_forces
                loss = w_e * float((de ** 2).mean()) + w_f * float((df ** 2).mean())  # the trainer's, in eV
                if best is None or loss < best[0]:
                    best = (loss, power, lam, w, 1e3 * float(np.abs(df).mean()))
        solve_s = time.perf_counter() - t0
        _, power, lam, w, val_f = best
        with torch.no_grad():
            term.weights.copy_(w.reshape(term.weights.shape).to(term.weights))
        test = error_metrics(predict(Potential(model, dtype=torch.float32), test_set), test_set)
        row = {"basis": cand or "earlier default", "weights": term.weights.numel(), "power": power, "ridge": lam,
               "val_forces_mae": val_f, "test": test, "solve_s": solve_s}
        rows.append(row)
        print(f"| {cand or 'earlier default'} | {term.weights.numel()} | {power:g} | {lam:.0e} | {val_f:.1f} | "
              f"{test['energy_mae_meV']:.1f} | {test['forces_mae_meV_A']:.1f} | {test['forces_rmse_meV_A']:.1f} | "
              f"{solve_s:.0f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
