"""Force error against cost on rMD17 aspirin: the kept design-space bench run and the linear ACE runs, one plot.

    python benchmarks/pareto_linear_ace.py [--out docs/img/pareto_aspirin_linear_ace.png]

Reads benchmarks/results/bench_aspirin/report.json (every family and both peers, 2026-12-01, float32 molecule cost)
and benchmarks/results/linear_ace/aspirin_rmd17*.json (`benchmarks/rmd17.py --family ace`, 2026-12-03, eager
float32 cost by the same `model_cost`). The costs come from different runs on a shared 2-core machine, where the
same computation has measured 1.4x apart at different times: read the plot as orders of magnitude, not as the
same-run comparison the speed issue's acceptance asks for. The horizontal lines mark chemical accuracy (43 meV/Å);
the vertical ones OpenMM's cost on aspirin in the bench run and 10x it (the issue's target).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


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
        out.append((label, r["inference_cost"]["us_per_atom_step"], r["test"]["forces_mae_meV_A"]))
    return out, aspirin["openmm_reference"]["us_per_atom_step"]


def main(argv=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "pareto_aspirin_linear_ace.png")
    args = p.parse_args(argv)
    pts, openmm = points()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, cost, error in pts:
        ace = label.startswith("linear ACE")
        ax.scatter(cost, error, color="tab:red" if ace else "tab:blue", zorder=3)
        ax.annotate(label, (cost, error), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.axhline(43.0, color="grey", ls="--", lw=0.8)
    ax.axvline(openmm, color="black", lw=0.8)
    ax.axvline(10 * openmm, color="black", ls=":", lw=0.8)
    ax.text(openmm, 300, " OpenMM", fontsize=7, va="top")
    ax.text(10 * openmm, 300, " 10× OpenMM", fontsize=7, va="top")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("µs per atom-step (aspirin, float32, 2 threads)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title("rMD17 aspirin: bench run 2026-12-01 (blue), linear ACE runs 2026-12-03 (red)", fontsize=9)
    ax.grid(True, which="both", lw=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print("| model | µs per atom-step | F MAE (meV/Å) |\n|---|---|---|")
    for label, cost, error in sorted(pts, key=lambda t: t[1]):
        print(f"| {label} | {cost:.0f} | {error:.1f} |")
    print(f"| OpenMM (graph-learned MM exported; bench run) | {openmm:.1f} | – |\n\nplot: {args.out}")


if __name__ == "__main__":
    main()
