"""Do the labels have the size their declared unit says? Catches eV read as kcal/mol and the like.

A wrong energy unit scales energies and forces by the same factor, so every relation linear in the labels is
blind to it; only a comparison with a physical magnitude sees it. Three, strongest first:

1. Covalent bond stiffness (forces, H/C/N/O bonds). For each bond i–j (`ffspace.data.bonds`' rule) the
   stretching force f = ((F_j − F_i)·u)/2 is fitted against the bond length r within the bond (each bond its
   own r0, so C–O and C=O are not mixed): f = −k (r − r0). The dataset's k is the count-weighted geometric mean
   over element pairs. Covalent bonds have k ≈ 20–100 eV/Å² (1 mdyn/Å = 6.24 eV/Å²); every public dataset in
   ../shared/data read in its right unit gives 28–45, rMD17 read with the wrong unit gives 1.3–1.7 (eV read
   as kcal/mol) or 690–920 (kcal/mol read as eV). With one or two frames, the X–H bonds of an element pair are
   pooled into one line instead.
2. Total energy bound (energies, any element): |E| cannot exceed the free atoms' all-electron energies plus
   10 eV of binding per atom. One-sided: catches labels too large, never too small (relative energies pass).
3. Force bound: no force component in eV/Å is above 500 (reactive combustion data reach 150).

`refuse_constant_labels` (called by the trainer) refuses labels that are all the same (every energy identical,
or every force zero): they teach a model nothing and usually mean a wrong key or a placeholder. The thresholds and their margins were measured on every dataset in
../shared/data (docs/benchmarks.md, "Label unit check").
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from ase.data import chemical_symbols

from .. import units
from ..errors import DataError
from .bonds import bond_reach

ORGANIC = (1, 6, 7, 8)
K_ERROR = (8.0, 250.0)  # eV/Å²: outside, the labels are off by a factor of ~20 or more
K_WARN = (15.0, 100.0)  # eV/Å²: outside, suspicious (kcal/mol ↔ kJ/mol is a factor of 4.184)
K_REF = 35.0  # eV/Å²: the centre of the right-unit values, used to name the likely unit
E_RATIO_ERROR = 1.5  # |E| over the physical bound
BINDING_PER_ATOM = 10.0  # eV, a generous atomisation energy per atom
F_ERROR = 500.0  # eV/Å
MIN_FRAMES, MIN_PAIR_SAMPLES, MIN_SPREAD, MIN_XH_SAMPLES = 3, 30, 0.003, 20
MAX_FRAMES = 300  # evenly spaced frames the check looks at (about 10 ms for a molecule)
# Non-relativistic all-electron energies of the free atoms, Hartree, Z = 1..18; Thomas–Fermi above (it
# over-binds, so it stays above the true totals).
_ATOM_HARTREE = [0.5, 2.9037, 7.4781, 14.6674, 24.6539, 37.8450, 54.5893, 75.0674, 99.7341, 128.9383,
                 162.2546, 200.0530, 242.3460, 289.3590, 341.2590, 398.1100, 460.1480, 527.5400]
_ATOM_BOUND_EV = np.array([0.0] + [(_ATOM_HARTREE[z - 1] if z <= 18 else 0.7687 * z ** (7 / 3)) * units.hartree
                                   for z in range(1, 119)])


class LabelUnitWarning(UserWarning):
    """Labels whose size is unusual for their declared unit (not certainly wrong)."""


def check_labels(dataset, energy_unit: str = "eV", mode: str = "error") -> dict:
    """Check ``dataset``'s labels (read as ``energy_unit``) and act on what is found: ``mode`` "error" raises a
    `DataError` for labels that cannot be right (naming the file, the field and the likely unit) and warns
    (`LabelUnitWarning`) for suspicious ones; "warn" only warns; "off" does nothing. Returns the findings."""
    if mode == "off":
        return {}
    result = label_statistics(dataset, energy_unit)
    fields = _fields(dataset)
    if result["status"] in ("wrong", "warn"):
        likely = result["likely_unit"]
        hint = (f"The labels look like {likely}, not {energy_unit}: set data.energy_unit={likely} (Python: "
                f"energy_unit={likely!r})" if likely and likely != energy_unit else "Check the file's units")
        message = (f"labels do not fit the declared energy unit {energy_unit} (forces {energy_unit}/Å): "
                   f"{'; '.join(result['reasons'])}. {hint}; if the data are right, set data.unit_check=warn")
        error = DataError(message, file=dataset.name, field=f"{fields['energy']}/{fields['forces']}")
        if result["status"] == "wrong":
            _report(mode, error)
        else:
            warnings.warn(str(error), LabelUnitWarning, stacklevel=3)
    return result


def _report(mode: str, error: DataError) -> None:
    if mode == "error":
        raise error
    warnings.warn(str(error), LabelUnitWarning, stacklevel=4)


def _fields(dataset) -> dict:
    return {"energy": "energy", "forces": "forces",
            **{k: v for k, v in getattr(dataset, "label_fields", {}).items() if v}}


def refuse_constant_labels(dataset, energy: bool = True, forces: bool = True) -> None:
    """A `DataError` when every energy label is the same or every force label is zero (of the labels asked for):
    a model fitted to them learns nothing, with a loss that looks fine."""
    fields = _fields(dataset)
    name = getattr(dataset, "name", None)
    # One pass that holds no more than a structure (an on-disk set streams through it).
    values, n_forces, several_atoms, nonzero = [], 0, False, False
    for s in dataset:
        if s.energy is not None:
            values.append(s.energy)
        if s.forces is not None:
            n_forces += 1
            several_atoms = several_atoms or len(s.forces) > 1
            nonzero = nonzero or bool(np.any(s.forces))
    values = np.array(values)
    if energy and len(values) >= 2 and np.ptp(values) == 0:
        raise DataError(f"all {len(values)} energies are {values[0]:g} eV: constant labels teach a model nothing "
                        "(a wrong key or a placeholder value?)", file=name, field=fields["energy"])
    if forces and n_forces and several_atoms and not nonzero:
        raise DataError(f"every force of all {n_forces} structures is zero: constant labels teach a model nothing "
                        "(a wrong key or a placeholder value?)", file=name, field=fields["forces"])


def label_statistics(structures, energy_unit: str = "eV", max_frames: int = MAX_FRAMES) -> dict:
    """The measurements behind `check_labels`: status ("ok", "warn", "wrong" or "undecided": no test
    applied), likely unit, reasons, bond stiffness ``k`` (eV/Å²) and its pairs, force and energy bounds, and
    constant labels."""
    if not hasattr(structures, "__getitem__"):
        structures = list(structures)
    picks = np.unique(np.linspace(0, len(structures) - 1, min(len(structures), max_frames)).round().astype(int))
    frames = [structures[int(k)] for k in picks]
    out = {"status": "undecided", "likely_unit": None, "reasons": [], "k": None, "pairs": {}}
    verdicts = []
    k, pairs, how = bond_stiffness(frames)
    out["pairs"] = pairs
    if k is not None:
        out["k"] = k
        verdict = "wrong" if not K_ERROR[0] <= k <= K_ERROR[1] else ("warn" if not K_WARN[0] <= k <= K_WARN[1]
                                                                     else "ok")
        verdicts.append(verdict)
        if verdict != "ok":
            out["likely_unit"] = _closest_unit(k / K_REF, energy_unit)
        out["reasons"].append(f"{how} {k:.3g} eV/Å² (covalent bonds: 20-100)")
    with_e = [s for s in frames if s.energy is not None]
    if with_e:
        bound = np.array([_ATOM_BOUND_EV[s.numbers].sum() + BINDING_PER_ATOM * s.n_atoms for s in with_e])
        ratio = float(np.max(np.abs([s.energy for s in with_e]) / bound))
        out["energy_ratio"] = ratio
        if ratio > E_RATIO_ERROR:
            verdicts.append("wrong")
            if out["likely_unit"] in (None, energy_unit):
                smaller = [u for u, f in units.ENERGY_TO_EV.items() if f < units.energy_factor(energy_unit)]
                out["likely_unit"] = _closest_unit(ratio, energy_unit, smaller) if smaller else None
            out["reasons"].append(f"|energy| is {ratio:.3g}x the largest physical total energy (free atoms + "
                                  "binding)")
    with_f = [s.forces for s in frames if s.forces is not None]
    if with_f:
        f_max = float(max(np.abs(f).max() for f in with_f))
        out["force_max"] = f_max
        if f_max > F_ERROR:
            verdicts.append("wrong")
            out["reasons"].append(f"a force component of {f_max:.3g} eV/Å (chemical forces stay below {F_ERROR:g})")
    if "wrong" in verdicts:
        out["status"] = "wrong"
    elif "warn" in verdicts:
        out["status"] = "warn"
    elif k is not None:
        out["status"] = "ok"
    return out


def _closest_unit(ratio: float, declared: str, among=None) -> str:
    """The unit U for which labels ``ratio`` times too large (in the declared unit) are right."""
    among = among or list(units.ENERGY_TO_EV)
    f = units.energy_factor(declared)
    return min(among, key=lambda u: abs(math.log(ratio * units.energy_factor(u) / f)))


def bond_stiffness(frames) -> tuple[float | None, dict, str]:
    """Stretching stiffness of the H/C/N/O covalent bonds in ``frames`` (eV/Å²): the dataset value (None when
    no element pair has enough samples), per element pair, and how it was obtained."""
    samples = _bond_samples(frames)
    if samples is None:
        return None, {}, ""
    pair, bond, r, f = samples
    _, inv, count = np.unique(bond, return_inverse=True, return_counts=True)
    rc = r - (np.bincount(inv, r) / count)[inv]  # within each bond: its own r0
    fc = f - (np.bincount(inv, f) / count)[inv]
    seen = count[inv] >= MIN_FRAMES
    ks, weights, pooled, pooled_w, pairs = [], [], [], [], {}
    for code in np.unique(pair):
        m = pair == code
        mw = m & seen
        n = int(mw.sum())
        var = float(rc[mw] @ rc[mw])
        k = -float(rc[mw] @ fc[mw]) / var if var > 0 else float("nan")
        spread = math.sqrt(var / n) if n else 0.0
        name = f"{chemical_symbols[code // 100]}-{chemical_symbols[code % 100]}"
        pairs[name] = {"n": n, "k": k}
        if n >= MIN_PAIR_SAMPLES and spread >= MIN_SPREAD and k > 0:
            ks.append(k)
            weights.append(n)
        # One or two frames: the X–H bonds of an element pair are alike enough to pool into one line.
        rp, fp = r[m] - r[m].mean(), f[m] - f[m].mean()
        if code // 100 == 1 and code % 100 != 1 and m.sum() >= MIN_XH_SAMPLES and rp @ rp > 0 \
                and math.sqrt(np.mean(rp ** 2)) >= MIN_SPREAD:
            k_pool = -float(rp @ fp) / float(rp @ rp)
            if k_pool > 0:
                pooled.append(k_pool)
                pooled_w.append(int(m.sum()))
    if ks:
        return float(np.exp(np.average(np.log(ks), weights=weights))), pairs, "bond stiffness"
    if pooled:
        return float(np.exp(np.average(np.log(pooled), weights=pooled_w))), pairs, "X-H bond stiffness (pooled)"
    return None, pairs, ""


def _bond_samples(frames):
    """(element-pair code, bond id, length, stretching force) of every H/C/N/O bond in ``frames`` with forces."""
    from .bonds import covalent_bonds

    molecules, periodic, out, offset = {}, [], [], 0
    for s in frames:
        if s.forces is None:
            continue
        if s.pbc.any():
            periodic.append(s)
        else:  # same atoms in the same order: one numpy pass over all frames
            molecules.setdefault(s.numbers.tobytes(), []).append(s)
    for group in molecules.values():
        numbers = group[0].numbers
        sel = np.where(np.isin(numbers, ORGANIC))[0]
        n = len(sel)
        if n >= 2:
            z = numbers[sel]
            x = np.stack([s.positions[sel] for s in group])
            force = np.stack([s.forces[sel] for s in group])
            iu, ju = np.triu_indices(n, 1)
            d = x[:, ju] - x[:, iu]
            r = np.sqrt(np.einsum("fpk,fpk->fp", d, d))
            fr, pr = np.nonzero(r < bond_reach(z[iu], z[ju]))
            if len(fr):
                u = d[fr, pr] / r[fr, pr, None]
                f = 0.5 * np.einsum("ij,ij->i", force[fr, ju[pr]] - force[fr, iu[pr]], u)
                zi, zj = z[iu[pr]], z[ju[pr]]
                out.append((np.minimum(zi, zj) * 100 + np.maximum(zi, zj), offset + pr, r[fr, pr], f))
        offset += n * n
    systems = {}
    for s in periodic:
        n = s.n_atoms
        key = (s.source, s.numbers.tobytes())
        if key not in systems:
            systems[key], offset = offset, offset + n * n
        i, j, shifts = covalent_bonds(s.numbers, s.positions, s.cell, s.pbc)
        m = np.isin(s.numbers[i], ORGANIC) & np.isin(s.numbers[j], ORGANIC) & (i != j)
        i, j, shifts = i[m], j[m], shifts[m]
        d = s.positions[j] - s.positions[i] + shifts @ s.cell
        r = np.linalg.norm(d, axis=1)
        f = 0.5 * np.einsum("ij,ij->i", s.forces[j] - s.forces[i], d / r[:, None])
        zi, zj = s.numbers[i], s.numbers[j]
        out.append((np.minimum(zi, zj) * 100 + np.maximum(zi, zj), systems[key] + i * n + j, r, f))
    if not out:
        return None
    return tuple(np.concatenate(a) for a in zip(*out))
