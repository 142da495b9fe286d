"""Force error against cost on rMD17 aspirin and on water: the kept design-space bench run and the linear ACE runs.

    python benchmarks/pareto_linear_ace.py [--out docs/img/pareto_aspirin_linear_ace.png]
        [--water-out docs/img/pareto_water_linear_ace.png]

Reads benchmarks/results/bench_aspirin/report.json (every family and both peers, 2026-12-01, float32 molecule cost)
and benchmarks/results/linear_ace/aspirin_rmd17*.json (`benchmarks/rmd17.py --family ace`, 2026-12-03, eager
float32 cost by the same `model_cost`). The costs come from different runs on a shared 2-core machine, where the
same computation has measured 1.4x apart at different times: read the plot as orders of magnitude, not as the
same-run comparison the speed issue's acceptance asks for. The horizontal lines mark chemical accuracy (43 meV/Å);
the vertical ones OpenMM's cost on aspirin in the bench run and 10x it (the issue's target).

The purple points are the current default basis in one `ffspace bench` run (benchmarks/results/bench_md_cost_v2: call
and full MD step, with that run's OpenMM MD step as the purple line). The green points are full MD steps of linear ACE from benchmarks/results/linear_ace/md_cost.json
(`benchmarks/md_cost.py`: the fast path's C kernel and eager autograd, with OpenMM's MD step of the same run, drawn as
the green line). The water plot: linear ACE on the DeePMD water test set (force RMSE) against its cost on the
24 000-atom box, eager (water.json) and through the C kernel, as a call and as a full MD step (water_fast.json), with
OpenMM TIP3P/PME of each run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# runs whose command line does not say their basis (the family's defaults changed in between)
LABELS = {"aspirin_rmd17.json": "linear ACE, earlier default (5 298 weights)",
          "aspirin_rmd17_correlation2.json": "linear ACE correlation=2 (earlier default otherwise)",
          "aspirin_rmd17_lmax2_nrbf3-3.json": "linear ACE lmax=2 n_rbf_3=3 (earlier default otherwise)",
          "aspirin_rmd17_default_v2.json": "linear ACE, default (11 427 weights)",
          "aspirin_rmd17_superset_13k.json": "linear ACE, 13 299 weights"}


def points() -> tuple[list[tuple[str, float, float]], float]:
    """(label, µs per atom-step, force MAE meV/Å) per model, and OpenMM's µs per atom-step in the bench run."""
    report = json.loads((RESULTS / "bench_aspirin" / "report.json").read_text())
    aspirin = report["datasets"]["aspirin"]
    out = []
    for name, m in aspirin["models"].items():
        speed = (m.get("speed_molecule") or {}).get("float32", {})
        if m.get("status") == "ok" and speed.get("status") == "ok":
            out.append((name, speed["us_per_atom_step"], m["test"]["forces_mae_meV_A"]))
    for path in sorted((RESULTS / "linear_ace").glob("aspirin_rmd17*.json")):
        r = json.loads(path.read_text())
        settings = {k: v for k, v in r["model"].items() if k not in ("family", "cutoff")}
        label = "linear ACE" + (" " + " ".join(f"{k}={v}" for k, v in settings.items()) if settings else "")
        label = LABELS.get(path.name, label)
        out.append((label, r["inference_cost"]["us_per_atom_step"], r["test"]["forces_mae_meV_A"]))
    return out, aspirin["openmm_reference"]["us_per_atom_step"]


def md_points() -> tuple[list[tuple[str, float, float]], float] | None:
    """Full MD steps of linear ACE and OpenMM's (µs per atom-step) from md_cost.json, or None."""
    path = RESULTS / "linear_ace" / "md_cost.json"
    if not path.exists():
        return None
    r = json.loads(path.read_text())
    error, cost = r["test_metrics"]["forces_mae_meV_A"], r["us_per_atom_step"]
    openmm = min(cost["openmm_mm"], cost.get("openmm_mm_1_thread", cost["openmm_mm"]))
    return [("linear ACE MD step, C kernel", cost["ffspace_fast_nve"], error),
            ("linear ACE MD step, eager", cost["ffspace_eager_nve"], error)], openmm


def bench_md_points() -> tuple[list[tuple[str, float, float]], float] | None:
    """The acceptance run of the current default basis (`ffspace bench benchmarks/configs/bench_md_cost_aspirin.yaml`,
    kept in benchmarks/results/bench_md_cost_v2): linear ACE's call and full MD step, and OpenMM's MD step, one run."""
    path = RESULTS / "bench_md_cost_v2" / "report.json"
    if not path.exists():
        return None
    aspirin = json.loads(path.read_text())["datasets"]["aspirin"]
    m = aspirin["models"]["ace"]
    speed, error = m["speed_molecule"]["float32"], m["test"]["forces_mae_meV_A"]
    return [("linear ACE (default) call, bench run", speed["us_per_atom_step"], error),
            ("linear ACE (default) MD step, bench run", speed["md_us_per_atom_step"], error)], \
        aspirin["openmm_reference"]["us_per_atom_step"]


def water_points() -> tuple[list[tuple[str, float, float]], list[float]]:
    """(label, µs per atom-step on 24 000 atoms, test force RMSE) and OpenMM's µs per atom-step of each run."""
    out, openmm = [], []
    for name, rows in (("water.json", [("eager call", "us_per_atom_step")]),
                       ("water_fast.json", [("C kernel call", "us_per_atom_step"), ("C kernel MD step", "md")])):
        path = RESULTS / "linear_ace" / name
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        rmse, cost = r["test_data_3"]["forces_rmse_meV_A"], r["ace_cost"]
        for label, key in rows:
            us = cost["md_ms_per_step"] * 1e3 / cost["n_atoms"] if key == "md" else cost[key]
            out.append((f"linear ACE, {label}", us, rmse))
        openmm.append(r["openmm_tip3p_pme"]["us_per_atom_step"])
    return out, openmm


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "pareto_aspirin_linear_ace.png")
    p.add_argument("--water-out", type=Path, default=ROOT / "docs" / "img" / "pareto_water_linear_ace.png")
    args = p.parse_args(argv)
    pts, openmm = points()
    md = md_points()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, cost, error in pts:
        ace = label.startswith("linear ACE")
        ax.scatter(cost, error, color="tab:red" if ace else "tab:blue", zorder=3)
        ax.annotate(label, (cost, error), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if md:
        for label, cost, error in md[0]:
            ax.scatter(cost, error, color="tab:green", marker="s", zorder=3)
            ax.annotate(label, (cost, error), textcoords="offset points", xytext=(4, -9), fontsize=7, color="tab:green")
        ax.axvline(md[1], color="tab:green", lw=0.8)
        ax.text(md[1], 200, " OpenMM MD step\n (md_cost run)", fontsize=7, va="top", color="tab:green")
    bench = bench_md_points()
    if bench:
        for (label, cost, error), dy in zip(bench[0], (-22, -12)):
            ax.scatter(cost, error, color="tab:purple", marker="D", zorder=3)
            ax.annotate(label, (cost, error), textcoords="offset points", xytext=(-4, dy), fontsize=7,
                        color="tab:purple", ha="right")
        ax.axvline(bench[1], color="tab:purple", lw=0.8)
        ax.text(bench[1], 120, " OpenMM MD step\n (bench run)", fontsize=7, va="top", color="tab:purple")
    ax.axhline(43.0, color="grey", ls="--", lw=0.8)
    ax.axvline(openmm, color="black", lw=0.8)
    ax.axvline(10 * openmm, color="black", ls=":", lw=0.8)
    ax.text(openmm, 300, " OpenMM", fontsize=7, va="top")
    ax.text(10 * openmm, 300, " 10× OpenMM", fontsize=7, va="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("µs per atom-step (aspirin, float32, 2 threads)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title("rMD17 aspirin: bench run 2026-12-01 (blue), linear ACE 2026-12-03 (red: calls, green: MD steps;\n"
                 "purple: the default basis in one bench run with its OpenMM)", fontsize=9)
    ax.grid(True, which="both", lw=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("| model | µs per atom-step | F MAE (meV/Å) |\n|---|---|---|")
    for label, cost, error in sorted(pts, key=lambda t: t[1]):
        print(f"| {label} | {cost:.0f} | {error:.1f} |")
    print(f"| OpenMM (graph-learned MM exported; bench run) | {openmm:.1f} | – |")
    if md:
        for label, cost, error in md[0]:
            print(f"| {label} (md_cost run) | {cost:.0f} | {error:.1f} |")
        print(f"| OpenMM MD step (md_cost run) | {md[1]:.1f} | – |")
    if bench:
        for label, cost, error in bench[0]:
            print(f"| {label} | {cost:.1f} | {error:.1f} |")
        print(f"| OpenMM MD step (bench run) | {bench[1]:.1f} | – |")
    print(f"\nplot: {args.out}")
    water, water_openmm = water_points()
    if water:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for label, cost, error in water:
            ax.scatter(cost, error, color="tab:red", zorder=3)
            ax.annotate(label, (cost, error), textcoords="offset points", xytext=(4, 3), fontsize=7)
        for us in water_openmm:
            ax.axvline(us, color="black", lw=0.8)
            ax.axvline(20 * us, color="black", ls=":", lw=0.6)
        ax.axhline(80.0, color="grey", ls="--", lw=0.8)
        ax.text(water_openmm[0], 110, " OpenMM TIP3P/PME", fontsize=7)
        ax.text(20 * water_openmm[0], 110, " 20×", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("µs per atom-step (24 000-atom water box, float32, 2 threads)")
        ax.set_ylabel("test force RMSE (meV/Å, DeePMD water data_3)")
        ax.set_ylim(0, 120)
        ax.set_title("Water: linear ACE against OpenMM TIP3P/PME (lines: each run's OpenMM, 20× it)", fontsize=9)
        ax.grid(True, which="both", lw=0.3)
        fig.tight_layout()
        fig.savefig(args.water_out, dpi=120)
        print("\n| water model | µs per atom-step | F RMSE (meV/Å) |\n|---|---|---|")
        for label, cost, error in water:
            print(f"| {label} | {cost:.1f} | {error:.1f} |")
        print(f"| OpenMM TIP3P/PME MD step (each run) | {', '.join(f'{u:.2f}' for u in water_openmm)} | – |")
        print(f"\nplot: {args.water_out}")


if __name__ == "__main__":
    main()
