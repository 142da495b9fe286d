"""Calibration of a committee's uncertainty: does its force deviation rank and size the real errors?

On a labeled held-out set, per atom: the predicted σ_i (eV/Å) against the actual error |F_i − F_i^ref|;
per structure: the largest σ_i against the RMS over atoms of |F_i − F_i^ref|. Reported: Spearman rank correlations (does a larger
deviation mean a larger error?), the scale factor that would make σ match the error on average
(RMS error / RMS σ: committees from one family are typically over-confident, factor > 1), and binned
means for the plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from .. import units


def calibration(committee, dataset, bins: int = 10) -> dict:
    """Calibration figures of ``committee`` on the labeled ``dataset`` (eV/Å in, meV/Å out)."""
    dataset.require_labels(energy=False, forces=True)
    pred = committee.predict(list(dataset))
    ref = np.concatenate([s.forces for s in dataset])
    atom_err = np.linalg.norm(pred["forces"] - ref, axis=1)
    atom_dev = pred["force_deviation"]
    cuts = np.cumsum([s.n_atoms for s in dataset])[:-1]
    frame_dev = pred["max_force_deviation"]
    # Per structure: the RMS over atoms of |ΔF_i| (a vector norm, like σ_i), so error and deviation compare.
    frame_rmse = np.array([np.sqrt((e ** 2).sum(1).mean()) for e in np.split(pred["forces"] - ref, cuts)])
    # Equal-count bins of the predicted deviation: mean deviation against RMS error in each.
    order = np.argsort(atom_dev)
    groups = [g for g in np.array_split(order, min(bins, len(order))) if len(g)]
    meV = 1 / units.meV
    return {
        "n_structures": len(dataset), "n_atoms": int(len(atom_dev)),
        "spearman_atoms": float(spearmanr(atom_dev, atom_err)[0]),
        "spearman_structures": float(spearmanr(frame_dev, frame_rmse)[0]) if len(dataset) > 2 else None,
        "scale_factor": float(np.sqrt((atom_err ** 2).mean()) / max(np.sqrt((atom_dev ** 2).mean()), 1e-30)),
        "force_mae_meV_A": float(np.abs(pred["forces"] - ref).mean() * meV),
        "mean_deviation_meV_A": float(atom_dev.mean() * meV),
        "binned": [{"deviation_meV_A": float(atom_dev[g].mean() * meV),
                    "error_rms_meV_A": float(np.sqrt((atom_err[g] ** 2).mean()) * meV), "n": int(len(g))}
                   for g in groups],
        "structures": {"max_deviation_meV_A": (frame_dev * meV).tolist(),
                       "force_error_rms_meV_A": (frame_rmse * meV).tolist()},
    }


def calibration_plot(result: dict, path, title: str = "committee calibration") -> Path:
    """Per-structure largest deviation against force RMSE (log-log), the per-atom binned means, and y = x."""
    from ..evaluate.plots import pyplot, save_figure

    plt = pyplot()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    frames = result["structures"]
    ax.scatter(frames["max_deviation_meV_A"], frames["force_error_rms_meV_A"], s=10, alpha=0.5,
               label=f"structures (Spearman {result['spearman_structures']:.2f})"
               if result["spearman_structures"] is not None else "structures")
    b = result["binned"]
    ax.plot([x["deviation_meV_A"] for x in b], [x["error_rms_meV_A"] for x in b], "o-", color="tab:red",
            label=f"atoms, binned (Spearman {result['spearman_atoms']:.2f})")
    lo = min(min(frames["max_deviation_meV_A"]), b[0]["deviation_meV_A"])
    hi = max(max(frames["force_error_rms_meV_A"]), b[-1]["error_rms_meV_A"])
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="error = deviation")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("committee force deviation (meV/Å)")
    ax.set_ylabel("actual force error |ΔF| (meV/Å)")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(plt, fig, path, title)
