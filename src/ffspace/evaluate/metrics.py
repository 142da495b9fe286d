"""Error metrics in meV, meV/Å and kcal/mol side by side, and batched prediction over a dataset."""

from __future__ import annotations

import numpy as np

from .. import units


def predict(potential, graphs_or_structures, batch_size: int = 32, stress: bool = False) -> dict:
    """Batched prediction over many structures (see `Potential.predict`)."""
    return potential.predict(graphs_or_structures, batch_size, stress)


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
    have = [k for k, s in enumerate(structures) if s.info.get("dipole") is not None]
    if "dipole" in pred and have:
        dd = pred["dipole"][have] - np.stack([structures[k].info["dipole"] for k in have])
        out.update({
            "dipole_mae_D": float(np.abs(dd).mean() / units.DEBYE_E_A),
            "dipole_rmse_D": float(np.sqrt((dd**2).mean()) / units.DEBYE_E_A),
            "dipole_mae_e_A": float(np.abs(dd).mean()),
        })
    return out


def energy_offset_metrics(pred: dict, structures) -> dict:
    """The mean signed energy error (prediction − reference, meV) and the energy MAE and RMSE with it removed: a
    test set labelled by another program or basis than the training data (3BPA's hot sets: ffspace's PySCF against
    the dataset's ORCA) differs from it by a near-constant offset that says nothing about the model."""
    structures = list(structures)
    if not structures or any(s.energy is None for s in structures):
        return {}
    de = pred["energy"] - np.array([s.energy for s in structures])
    centred = de - de.mean()
    return {"energy_mean_error_meV": float(de.mean() / units.meV),
            "energy_mae_offset_removed_meV": float(np.abs(centred).mean() / units.meV),
            "energy_rmse_offset_removed_meV": float(np.sqrt((centred**2).mean()) / units.meV)}


def per_element_force_errors(pred: dict, structures) -> dict:
    """Force MAE and RMSE per element (meV/Å), keyed by chemical symbol, with the number of atoms."""
    from ase.data import chemical_symbols

    structures = list(structures)
    if not all(s.forces is not None for s in structures):
        return {}
    numbers = np.concatenate([s.numbers for s in structures])
    df = pred["forces"] - np.concatenate([s.forces for s in structures])
    out = {}
    for z in np.unique(numbers):
        d = df[numbers == z]
        out[chemical_symbols[int(z)]] = {"forces_mae_meV_A": float(np.abs(d).mean() / units.meV),
                                         "forces_rmse_meV_A": float(np.sqrt((d**2).mean()) / units.meV),
                                         "n_atoms": int(len(d))}
    return out


def _described(m: dict):
    """(quantity, MAE text, RMSE text) for each label the metrics cover, units side by side."""
    if "energy_mae_meV" in m:
        yield ("energy", f"{m['energy_mae_meV']:.2f} meV ({m['energy_mae_kcal_mol']:.3f} kcal/mol)",
               f"{m['energy_rmse_meV']:.2f} meV")
    if "forces_mae_meV_A" in m:
        yield ("forces", f"{m['forces_mae_meV_A']:.2f} meV/Å ({m['forces_mae_kcal_mol_A']:.3f} kcal/mol/Å)",
               f"{m['forces_rmse_meV_A']:.2f} meV/Å")
    if "dipole_mae_D" in m:
        yield ("dipole", f"{m['dipole_mae_D']:.4f} D ({m['dipole_mae_e_A']:.5f} e·Å)", f"{m['dipole_rmse_D']:.4f} D")


def format_metrics(m: dict) -> str:
    """One line: ``E MAE ... ; F MAE ...``."""
    symbol = {"energy": "E", "forces": "F", "dipole": "μ"}
    return "; ".join(f"{symbol[q]} MAE {mae}, RMSE {rmse}" for q, mae, rmse in _described(m))


def metrics_table(m: dict) -> str:
    """A Markdown table of MAE and RMSE per quantity."""
    rows = [f"| {q} | {mae} | {rmse} |" for q, mae, rmse in _described(m)]
    return "\n".join(["| quantity | MAE | RMSE |", "|---|---|---|", *rows])
