"""Error metrics in meV, meV/Å and kcal/mol side by side, and batched prediction over a dataset."""

from __future__ import annotations

import numpy as np

from .. import units
from ..graph.batch import collate, graph_of


def predict(potential, graphs_or_structures, batch_size: int = 32, stress: bool = False) -> dict:
    """Energies (G,), forces (N_total, 3) and, if asked, stress for many structures, as float64 numpy.

    Accepts pre-computed `GraphData` (fast: no neighbor search) or `Structure` objects.
    """
    items = list(graphs_or_structures)
    if items and not hasattr(items[0], "i"):
        potential.check_elements(items)
        items = [graph_of(s, potential.cutoff) for s in items]
    energies, forces, stresses = [], [], []
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size], dtype=potential.dtype, device=potential.device,
                        labels=False)
        out = potential.compute(batch, forces=True, stress=stress)
        energies.append(out["energy"].double().cpu().numpy())
        forces.append(out["forces"].double().cpu().numpy())
        if stress:
            stresses.append(out["stress"].double().cpu().numpy())
    result = {"energy": np.concatenate(energies), "forces": np.concatenate(forces)}
    if stress:
        result["stress"] = np.concatenate(stresses)
    return result


def error_metrics(pred: dict, structures) -> dict:
    """MAE and RMSE of energies (total and per atom) and force components, in several units."""
    structures = list(structures)
    n_atoms = np.array([s.n_atoms for s in structures])
    out = {"n_structures": len(structures)}
    if all(s.energy is not None for s in structures):
        de = pred["energy"] - np.array([s.energy for s in structures])
        out.update({
            "energy_mae_meV": float(np.abs(de).mean() / units.meV),
            "energy_rmse_meV": float(np.sqrt((de**2).mean()) / units.meV),
            "energy_mae_meV_per_atom": float(np.abs(de / n_atoms).mean() / units.meV),
            "energy_mae_kcal_mol": float(np.abs(de).mean() / units.kcal_per_mol),
        })
    if all(s.forces is not None for s in structures):
        df = pred["forces"] - np.concatenate([s.forces for s in structures])
        out.update({
            "forces_mae_meV_A": float(np.abs(df).mean() / units.meV),
            "forces_rmse_meV_A": float(np.sqrt((df**2).mean()) / units.meV),
            "forces_mae_kcal_mol_A": float(np.abs(df).mean() / units.kcal_per_mol),
        })
    return out


def format_metrics(m: dict) -> str:
    parts = []
    if "energy_mae_meV" in m:
        parts.append(f"E MAE {m['energy_mae_meV']:.2f} meV ({m['energy_mae_kcal_mol']:.3f} kcal/mol), "
                     f"RMSE {m['energy_rmse_meV']:.2f} meV")
    if "forces_mae_meV_A" in m:
        parts.append(f"F MAE {m['forces_mae_meV_A']:.2f} meV/Å ({m['forces_mae_kcal_mol_A']:.3f} kcal/mol/Å), "
                     f"RMSE {m['forces_rmse_meV_A']:.2f} meV/Å")
    return "; ".join(parts)
