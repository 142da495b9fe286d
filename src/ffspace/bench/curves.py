"""Energy along a path or a scan (a proton-transfer path, a dihedral scan): the shape a test-set MAE does not show.

A curve file holds frames in path order with reference energies (forces are not needed: acac's NEB path and
dihedral scan have none). A model is compared with the reference after removing the mean offset between them
(one constant per model and curve: only the shape counts, as in the BOTNet/MACE papers' acac figures), as the
RMSE and the largest deviation along the curve, and the barrier (highest minus lowest energy) of each.
"""

from __future__ import annotations

import numpy as np

from ..data.dataset import Dataset
from ..evaluate.plots import pyplot, save_figure
from ..units import meV


def curve_axis(frames: Dataset) -> tuple[list[float], str]:
    """The x of each frame: its ``dihedral_angle`` (degrees) when every frame has one, else its index on the path."""
    if all("dihedral_angle" in s.info for s in frames):
        return [float(s.info["dihedral_angle"]) for s in frames], "dihedral angle (°)"
    return [float(k) for k in range(len(frames))], "frame along the path"


def curve_errors(potential, frames: Dataset) -> dict:
    """The model's energies along ``frames`` against the reference: offset (eV, model − reference, removed),
    RMSE and largest |error| after it (meV), barriers of both (meV), and the curves themselves for the plot."""
    reference = np.array([s.energy for s in frames], dtype=float)
    predicted = np.asarray(potential.predict(list(frames))["energy"], dtype=float)
    diff = predicted - reference
    offset = float(diff.mean())
    shifted = diff - offset
    x, label = curve_axis(frames)
    return {"n": len(frames), "x": x, "x_label": label, "reference_eV": reference.tolist(),
            "predicted_eV": predicted.tolist(), "offset_eV": offset,
            "rmse_meV": float(np.sqrt(np.mean(shifted ** 2)) / meV), "max_abs_meV": float(np.abs(shifted).max() / meV),
            "reference_barrier_meV": float(np.ptp(reference) / meV),
            "predicted_barrier_meV": float(np.ptp(predicted) / meV)}


def curves_markdown(name: str, ds: dict, models: dict) -> list[str]:
    """One table per curve of dataset ``name``: every model's RMSE, largest error and barrier against the reference."""
    lines = []
    for curve, info in (ds.get("curve_sets") or {}).items():
        lines += ["", f"### {name}: energy along `{curve}` ({info['n']} frames, `{info['file']}`; mean offset removed)",
                  "", "| model | RMSE (meV) | max \\|error\\| (meV) | barrier (meV), reference "
                  f"{info['reference_barrier_meV']:.1f} |", "|---|---|---|---|"]
        for mname, m in models.items():
            c = (m.get("curves") or {}).get(curve)
            if c:
                lines.append(f"| {mname} | {c['rmse_meV']:.1f} | {c['max_abs_meV']:.1f} | "
                             f"{c['predicted_barrier_meV']:.1f} |")
    return lines


def curves_plot(name: str, ds: dict, models: dict, path) -> bool:
    """Reference (black) and every model (its mean offset removed) along each curve, energies relative to the
    reference's lowest point (meV)."""
    sets = ds.get("curve_sets") or {}
    rows = {n: m["curves"] for n, m in models.items() if m.get("curves")}
    if not sets or not rows:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 3.4), squeeze=False)
    for ax, curve in zip(axes[0], sets):
        first = next((r[curve] for r in rows.values() if curve in r), None)
        if first is None:
            continue
        ref = np.asarray(first["reference_eV"])
        low = ref.min()
        ax.plot(first["x"], (ref - low) / meV, color="black", lw=2, marker="o", ms=3, label="reference")
        for mname, r in rows.items():
            c = r.get(curve)
            if c:
                ax.plot(c["x"], (np.asarray(c["predicted_eV"]) - c["offset_eV"] - low) / meV, lw=1, marker=".",
                        label=f"{mname} ({c['rmse_meV']:.0f} meV)")
        ax.set_title(curve, fontsize=9)
        ax.set_xlabel(first["x_label"])
        ax.set_ylabel("energy (meV)")
        ax.legend(fontsize=6)
    save_figure(plt, fig, path, f"{name}: energy along paths and scans")
    return True
