"""The physics suite every model must pass (float64; on the CPU, or on another device through ``DEVICE``). Shipped inside the package (NequIP's habit).

Each ``check_*`` takes a model and raises AssertionError with the measured numbers when it fails.
`run_physics_suite` runs them all. Models with random weights are fine: the checks are about
symmetry and calculus, not accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.structure import Structure
from ..graph.batch import batch_structures
from ..potential import Potential

F64 = torch.float64

# The device the checks evaluate on. tests/conftest.py sets it from FFSPACE_TEST_DEVICE, so the same suite runs on a
# GPU machine (`FFSPACE_TEST_DEVICE=cuda pytest tests/test_physics.py`); results come back to the CPU for comparison.
DEVICE = "cpu"


# The elements the suite's structures carry: those of every model ffspace ships or benchmarks (H, C, O) and N.
ELEMENTS = [1, 6, 7, 8]


def ethanol(seed: int = 0, rattle: float = 0.05) -> Structure:
    return molecule("CH3CH2OH", seed, rattle)


def molecule(name: str = "CH3CONH2", seed: int = 0, rattle: float = 0.05) -> Structure:
    """A molecule of ASE's G2 set (default acetamide: H, C, N and O), each atom displaced by ``rattle`` Å."""
    from ase.build import molecule as g2

    atoms = g2(name)
    atoms.positions += np.random.default_rng(seed).normal(scale=rattle, size=atoms.positions.shape)
    return Structure.from_ase(atoms)


def periodic_box(seed: int = 0, n_molecules: int = 4, box: float = 6.0, nitrogen: bool = False) -> Structure:
    """A small periodic box of water molecules (every second one ammonia with ``nitrogen``), so that images
    interact within typical cutoffs."""
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    numbers, positions = [], []
    grid = [(x, y, z) for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.25, 0.75)]
    for k in range(n_molecules):
        w = molecule("NH3" if nitrogen and k % 2 else "H2O")
        w.rotate(rng.uniform(0, 360), rng.normal(size=3))
        numbers += list(w.numbers)
        positions += list(w.positions + np.array(grid[k]) * box + rng.normal(scale=0.05, size=3))
    cell = np.diag([box, box * 1.05, box * 0.95]) + np.array([[0, 0, 0], [0.3, 0, 0], [0, 0.2, 0]])
    return Structure(numbers=numbers, positions=positions, cell=cell, pbc=True)


# The uniform field (V/Å) the suite puts every molecule in for a model that takes one (`FieldResponse`), so that the
# response terms are part of every check (rotations turn it with the atoms).
FIELD = np.array([0.1, -0.2, 0.15])


def _in_field(pot: Potential, structures) -> list:
    """``structures``, each molecule without a field put in `FIELD` when the model takes a field."""
    if not pot.field_dependent:
        return list(structures)
    out = []
    for s in structures:
        if s.info.get("field") is None and not s.pbc.any():
            s = s.copy()
            s.info["field"] = FIELD.copy()
        out.append(s)
    return out


def _pot(model) -> Potential:
    return Potential(model, dtype=F64, device=DEVICE)


def _eval(pot: Potential, structures, stress=False):
    out = pot.compute(batch_structures(_in_field(pot, structures), pot.cutoff, dtype=F64), forces=True, stress=stress)
    return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in out.items()}


def _rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def check_finite_difference_forces(model, structure: Structure | None = None, h: float = 1e-5,
                                   tol: float = 1e-6) -> float:
    """Forces equal −dE/dr by central differences (max error ≤ tol eV/Å)."""
    pot = _pot(model)
    s = structure or molecule()
    forces = _eval(pot, [s])["forces"].numpy()
    fd = np.zeros_like(s.positions)
    for a in range(s.n_atoms):
        for d in range(3):
            plus, minus = s.positions.copy(), s.positions.copy()
            plus[a, d] += h
            minus[a, d] -= h
            e = [float(_eval(pot, [s.copy(positions=p)])["energy"][0]) for p in (plus, minus)]
            fd[a, d] = -(e[0] - e[1]) / (2 * h)
    err = float(np.abs(fd - forces).max())
    assert np.abs(forces).max() > 1e-6, "forces are all zero: the check would be meaningless"
    assert err <= tol, f"finite-difference forces differ by {err:.3g} eV/Å (> {tol})"
    return err


def check_finite_difference_stress(model, structure: Structure | None = None, h: float = 1e-6,
                                   tol: float = 1e-6) -> float:
    """Stress equals (1/V) dE/dε by central differences of a strained cell (ASE sign)."""
    pot = _pot(model)
    s = structure or periodic_box(nitrogen=True)
    stress = _eval(pot, [s], stress=True)["stress"][0].numpy()
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            e = []
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b] += sign * h / 2
                eps[b, a] += sign * h / 2
                m = np.eye(3) + eps
                e.append(float(_eval(pot, [s.copy(positions=s.positions @ m, cell=s.cell @ m)])["energy"][0]))
            fd[a, b] = (e[0] - e[1]) / (2 * h) / s.volume
    err = float(np.abs(fd - stress).max())
    assert err <= tol, f"stress differs from finite differences by {err:.3g} eV/Å³ (> {tol})"
    return err


def check_invariances(model, structure: Structure | None = None, tol: float = 1e-9) -> None:
    """Rotation, translation and permutation of like atoms leave E unchanged and move F with the atoms."""
    pot = _pot(model)
    s = _in_field(pot, [structure or molecule()])[0]
    ref = _eval(pot, [s])
    e0, f0 = float(ref["energy"][0]), ref["forces"].numpy()
    # The model must depend on geometry at all, or the invariance checks below prove nothing.
    moved = s.copy(positions=s.positions + np.random.default_rng(1).normal(scale=0.05, size=s.positions.shape))
    assert abs(float(_eval(pot, [moved])["energy"][0]) - e0) > 1e-8, "energy does not depend on positions"

    rot = _rotation(7)
    r = s.copy(positions=s.positions @ rot.T, cell=s.cell @ rot.T)
    if s.info.get("field") is not None:  # the field turns with the molecule
        r.info["field"] = s.info["field"] @ rot.T
    out = _eval(pot, [r])
    assert abs(float(out["energy"][0]) - e0) < tol * max(1, abs(e0)), "energy not rotation invariant"
    assert np.abs(out["forces"].numpy() - f0 @ rot.T).max() < 1e-7, "forces not rotation equivariant"

    t = s.copy(positions=s.positions + np.array([1.3, -2.1, 0.7]))
    out = _eval(pot, [t])
    assert abs(float(out["energy"][0]) - e0) < tol * max(1, abs(e0)), "energy not translation invariant"
    assert np.abs(out["forces"].numpy() - f0).max() < 1e-7, "forces not translation invariant"

    perm = np.arange(s.n_atoms)
    for z in np.unique(s.numbers):
        idx = np.where(s.numbers == z)[0]
        perm[idx] = np.roll(idx, 1)
    p = s.copy(numbers=s.numbers[perm], positions=s.positions[perm])
    out = _eval(pot, [p])
    assert abs(float(out["energy"][0]) - e0) < tol * max(1, abs(e0)), "energy not permutation invariant"
    assert np.abs(out["forces"].numpy() - f0[perm]).max() < 1e-7, "forces do not follow a permutation"
    assert np.abs(out["energies"].numpy() - ref["energies"].numpy()[perm]).max() < 1e-8, \
        "per-atom energies do not follow a permutation"


def check_additivity(model, tol: float = 1e-8) -> None:
    """Two molecules farther apart than the cutoff: E(A+B) = E(A) + E(B)."""
    pot = _pot(model)
    a, b = ethanol(1), molecule(seed=2)
    gap = pot.cutoff + 10.0 + np.ptp(a.positions[:, 0])
    b = b.copy(positions=b.positions + np.array([gap, 0, 0]))
    ab = Structure(numbers=np.concatenate([a.numbers, b.numbers]),
                   positions=np.concatenate([a.positions, b.positions]))
    e = _eval(pot, [a, b, ab])["energy"].numpy()
    assert abs(e[2] - e[0] - e[1]) < tol * max(1.0, abs(e[2])), f"E(A+B) − E(A) − E(B) = {e[2] - e[0] - e[1]:.3g} eV"


def check_batching(model, tol: float = 1e-9, periodic: bool = True) -> None:
    """A batch of different structures gives the same results as one at a time; no cross-talk."""
    pot = _pot(model)
    structures = [ethanol(3), periodic_box(1, nitrogen=True) if periodic else ethanol(6), molecule(seed=4, rattle=0.1)]
    together = _eval(pot, structures)
    offset = 0
    for k, s in enumerate(structures):
        alone = _eval(pot, [s])
        assert abs(float(together["energy"][k] - alone["energy"][0])) < tol * max(1, abs(float(alone["energy"][0]))), \
            f"structure {k}: batched energy differs from single"
        f = together["forces"][offset:offset + s.n_atoms]
        assert float((f - alone["forces"]).abs().max()) < 1e-8, f"structure {k}: batched forces differ"
        offset += s.n_atoms
    # Cross-talk: the energy of structure 0 must not depend on the positions of any other structure.
    batch = batch_structures(_in_field(pot, structures), pot.cutoff, dtype=F64).to(device=pot.device, dtype=F64)
    pos = batch.positions.clone().requires_grad_(True)
    from dataclasses import replace

    energies = pot.model(replace(batch, positions=pos))
    e0 = energies[batch.graph_index == 0].sum()
    (grad,) = torch.autograd.grad(e0, pos)
    leak = float(grad[batch.graph_index != 0].abs().max())
    assert leak == 0.0, f"gradient leaks between structures in a batch: {leak:.3g}"


def check_smooth_cutoff(model, pair=(6, 8)) -> None:
    """Energy and force of a dimer go continuously to their separated values at the cutoff."""
    pot = _pot(model)
    rc = pot.cutoff
    if rc <= 0:
        return

    def dimer(r):
        return Structure(numbers=list(pair), positions=[[0, 0, 0], [r, 0, 0]])

    far = _eval(pot, [dimer(rc + 1.0)])
    e_far = float(far["energy"][0])
    prev = None
    for delta in (1e-2, 1e-3, 1e-4):
        out = _eval(pot, [dimer(rc - delta)])
        de = abs(float(out["energy"][0]) - e_far)
        f = float(out["forces"].abs().max())
        if prev is not None:
            # Both must vanish at least linearly as the pair approaches the cutoff.
            assert de <= prev[0] * 0.5 + 1e-12, f"energy does not go smoothly to its limit at the cutoff ({de:.3g})"
            assert f <= prev[1] * 0.5 + 1e-12, f"force does not go smoothly to zero at the cutoff ({f:.3g})"
        prev = (de, f)
    assert prev[0] < 1e-6 and prev[1] < 1e-4, f"at rc − 1e-4 Å: ΔE = {prev[0]:.3g} eV, |F| = {prev[1]:.3g} eV/Å"
    beyond = _eval(pot, [dimer(rc + 1e-4)])
    assert abs(float(beyond["energy"][0]) - e_far) < 1e-12, "energy changes beyond the cutoff"


def check_nve_conservation(model, steps: int = 500, timestep_fs: float = 0.1, rel_tol: float = 2e-3,
                           abs_tol_ev_per_atom: float = 2e-5) -> float:
    """A short NVE run conserves total energy: its largest excursion stays below ``rel_tol`` of the
    potential energy exchanged with kinetic energy during the run (plus a tiny absolute floor), so the
    check means the same for a gentle learned model and for a steep repulsive prior."""
    from ..md import BlowUpMonitor, run_md

    pot = _pot(model)
    # Conservation, not stability, is checked here: random-weight models may bend bonds far.
    result = run_md(pot, _in_field(pot, [molecule(seed=5, rattle=0.02)])[0], steps=steps, timestep_fs=timestep_fs, ensemble="nve",
                    temperature=300.0, seed=0, monitor=BlowUpMonitor(max_force=1e4, min_distance=0.05,
                                                                     bond_tolerance=None))
    assert result.status == "completed", f"NVE run failed: {result.report}"
    etot, epot = result.thermo["etot_eV"], result.thermo["epot_eV"]
    n = result.thermo["n_atoms"]
    dev = float(np.abs(etot - etot[0]).max())
    exchanged = float(np.ptp(epot))
    assert exchanged > 1e-4, "the NVE run did not move: the check would be meaningless"
    limit = rel_tol * exchanged + abs_tol_ev_per_atom * n
    assert dev < limit, f"total energy moved by {dev:.3g} eV (> {limit:.3g} eV) in {steps} steps"
    return dev / exchanged


def run_physics_suite(model, periodic: bool = True) -> None:
    """Every check in turn; raises at the first failure."""
    check_finite_difference_forces(model)
    if periodic:
        check_finite_difference_forces(model, periodic_box(nitrogen=True))
        check_finite_difference_stress(model)
    check_invariances(model)
    if periodic:
        check_invariances(model, periodic_box(2, nitrogen=True))
    if not getattr(model, "long_range", False):
        # Long-range terms (Coulomb) are neither additive over far-apart molecules nor zero at a cutoff.
        check_additivity(model)
        check_smooth_cutoff(model)
    check_batching(model, periodic=periodic)
    check_nve_conservation(model)
