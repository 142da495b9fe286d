"""Plots people would rather look at than read: parity plots and MD energy/temperature traces (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import units


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend unless one is already in use (plots are written, never
    shown)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, path, title: str = "") -> Path:
    """Write ``fig`` as a PNG (120 dpi) with an optional overall title, and close it."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parity_plot(pred: dict, structures, path, title: str = "") -> Path:
    """Predicted vs reference: energies per atom (relative to the mean, meV/atom) and force components (eV/Å)."""
    plt = pyplot()
    structures = list(structures)
    if not all(s.forces is not None and s.energy is not None for s in structures):
        return None  # parity needs both labels; metrics.json still has what exists
    n = np.array([s.n_atoms for s in structures])
    e_ref = np.array([s.energy for s in structures]) / n
    e_pred = pred["energy"] / n
    shift = e_ref.mean()
    f_ref = np.concatenate([s.forces for s in structures]).ravel()
    f_pred = pred["forces"].ravel()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, x, y, label, unit, scale in (
            (axes[0], e_ref - shift, e_pred - shift, "energy per atom (shifted)", "meV/atom", 1 / units.meV),
            (axes[1], f_ref, f_pred, "force components", "eV/Å", 1.0)):
        x, y = x * scale, y * scale
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], color="0.6", lw=1)
        ax.scatter(x, y, s=4, alpha=0.5)
        mae = np.abs(x - y).mean()
        ax.set_title(f"{label}: MAE {mae:.3g} {unit}")
        ax.set_xlabel(f"reference ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
    return save_figure(plt, fig, path, title)


def md_plot(thermo: dict, path, title: str = "") -> Path:
    """Potential, kinetic and total energy (eV, relative to the start) and temperature (K) against time (ps)."""
    plt = pyplot()
    t = thermo["time_fs"] / 1000.0
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    e0 = thermo["etot_eV"][0]
    for key, label in (("epot_eV", "potential"), ("ekin_eV", "kinetic"), ("etot_eV", "total")):
        ax1.plot(t, thermo[key] - (e0 if key != "ekin_eV" else 0.0), label=label, lw=1)
    ax1.set_ylabel("energy (eV; E_pot, E_tot relative to start)")
    ax1.legend(loc="upper right")
    ax2.plot(t, thermo["temperature_K"], lw=1, color="C3")
    ax2.set_ylabel("temperature (K)")
    ax2.set_xlabel("time (ps)")
    return save_figure(plt, fig, path, title)
