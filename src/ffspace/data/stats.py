"""Dataset statistics: per-element reference energies, force RMS, neighbor counts."""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def composition_matrix(structures, elements: list[int]) -> np.ndarray:
    index = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for row, s in enumerate(structures):
        for z in s.numbers:
            if int(z) not in index:
                raise DataError(f"element {int(z)} is not in the element list {elements}",
                                file=s.source, frame=s.frame, field="numbers")
            counts[row, index[int(z)]] += 1
    return counts


def reference_energies(structures, elements: list[int] | None = None) -> dict[int, float]:
    """Per-element energies e_Z minimising Σ (E − Σ_Z n_Z e_Z)², by least squares.

    When every structure has the same composition (one molecule) the system is rank-deficient:
    lstsq returns the minimum-norm solution, which still removes the mean energy exactly.
    """
    if not len(structures):
        raise DataError("cannot fit reference energies on an empty dataset")
    elements = elements or sorted(set(np.concatenate([s.numbers for s in structures]).tolist()))
    for s in structures:
        if s.energy is None:
            raise DataError("no energy label (needed for reference energies)", file=s.source, frame=s.frame,
                            field="energy")
    energies = np.array([s.energy for s in structures], dtype=np.float64)
    a = composition_matrix(structures, elements)
    e = np.linalg.lstsq(a, energies, rcond=None)[0]
    return {int(z): float(v) for z, v in zip(elements, e)}


def statistics(structures, cutoff: float | None = None) -> dict:
    """Summary numbers a user checks before training (and the model uses for scale/shift)."""
    n_atoms = np.array([s.n_atoms for s in structures])
    elements = sorted(set(np.concatenate([s.numbers for s in structures]).tolist()))
    out = {"n_structures": len(structures), "n_atoms_total": int(n_atoms.sum()),
           "n_atoms_min": int(n_atoms.min()), "n_atoms_max": int(n_atoms.max()), "elements": elements}
    if all(s.energy is not None for s in structures):
        ref = reference_energies(structures, elements)
        resid = np.array([s.energy - sum(ref[int(z)] for z in s.numbers) for s in structures])
        out["reference_energies_eV"] = ref
        out["energy_residual_per_atom_std_eV"] = float(np.std(resid / n_atoms))
        out["energy_residual_std_eV"] = float(np.std(resid))
    if all(s.forces is not None for s in structures):
        f = np.concatenate([s.forces for s in structures])
        out["force_rms_eV_A"] = float(np.sqrt((f**2).mean()))
    if cutoff is not None:
        import vesin

        counts = []
        for s in structures[: min(len(structures), 200)]:
            nl = vesin.NeighborList(cutoff=cutoff, full_list=True)
            box = s.cell if s.pbc.any() else np.zeros((3, 3))
            i = nl.compute(s.positions, box, s.pbc if s.pbc.any() else False, "i")[0]
            counts.append(len(i) / s.n_atoms)
        out["mean_neighbors"] = float(np.mean(counts))
    return out
