"""Samplers that make configurations for labeling. Each frame records how it was made."""

from __future__ import annotations

import numpy as np

from ..data.structure import Structure


def md_sample(structure: Structure, calculator, n_frames: int, temperature: float = 300.0,
              interval: int = 10, timestep_fs: float = 0.5, equilibration_steps: int = 200,
              friction: float = 0.02, seed: int = 0, progress: bool = False) -> list[Structure]:
    """Langevin MD driven by ``calculator`` (an ASE calculator, e.g. xTB); one frame every ``interval`` steps."""
    from ase import units as ase_units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:  # ASE ≥ 3.28 renamed MaxwellBoltzmannDistribution
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta
    from ..progress import progress as progress_bar

    rng = np.random.default_rng(seed)
    atoms = structure.to_ase()
    atoms.calc = calculator
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # no centre-of-mass drift (ASE's recommended replacement for fixcm)
    dyn = Langevin(atoms, timestep_fs * ase_units.fs, temperature_K=temperature, friction=friction / ase_units.fs,
                   rng=rng, fixcm=False)
    dyn.run(equilibration_steps)
    frames = []
    for k in progress_bar(range(n_frames), desc=f"MD sampling {temperature:g} K", enabled=progress):
        dyn.run(interval)
        frames.append(Structure.from_ase(atoms, info={**start_info(structure.info),  # (copies the arrays)
            "sampler": "md", "sampler_temperature_K": temperature, "sampler_step": equilibration_steps
            + (k + 1) * interval, "sampler_timestep_fs": timestep_fs, "sampler_seed": seed}))
    return frames


def start_info(info: dict, keep_sampler: bool = False) -> dict:
    """What a sampled frame keeps of its start's info: who it is (SMILES, name, conformer, charge), not the start's
    labels (energy, dipole, provenance), which belong to another geometry or another level of theory, nor (unless
    ``keep_sampler``: the frame is the start itself) how the start was sampled."""
    dropped = ("label_", "REF_") if keep_sampler else ("label_", "REF_", "sampler")
    return {k: v for k, v in info.items()
            if k not in ("energy", "dipole", "free_energy", "scf_cycles", "stress") and not k.startswith(dropped)}


def rattle(structure: Structure, n_frames: int, sigma: float = 0.05, seed: int = 0) -> list[Structure]:
    """Gaussian displacements of every atom (σ in Å)."""
    rng = np.random.default_rng(seed)
    return [structure.copy(positions=structure.positions + rng.normal(scale=sigma, size=structure.positions.shape),
                           energy=None, forces=None, stress=None,
                           info={**start_info(structure.info), "sampler": "rattle", "sampler_sigma_A": sigma,
                                 "sampler_seed": seed, "sampler_index": k})
            for k in range(n_frames)]


def normal_mode_sample(structure: Structure, labeler, n_frames: int, temperature: float = 300.0,
                       seed: int = 0, delta: float = 0.01) -> list[Structure]:
    """Normal-mode sampling (ANI's recipe): displace along the Hessian's modes with Boltzmann-distributed
    harmonic amplitudes at ``temperature`` (``structure`` should be near a minimum). The Hessian comes from central differences of the
    labeler's forces (6N calls), so one Hessian serves any number of frames."""
    from ase.data import atomic_masses

    from .. import units

    n = structure.n_atoms
    hessian = np.zeros((3 * n, 3 * n))
    for a in range(n):
        for d in range(3):
            f = []
            for sign in (1, -1):
                p = structure.positions.copy()
                p[a, d] += sign * delta
                f.append(labeler.label(structure.copy(positions=p, energy=None, forces=None)).forces.ravel())
            hessian[3 * a + d] = -(f[0] - f[1]) / (2 * delta)
    hessian = 0.5 * (hessian + hessian.T)
    m = np.repeat(atomic_masses[structure.numbers], 3)
    w2, modes = np.linalg.eigh(hessian / np.sqrt(np.outer(m, m)))
    keep = w2 > 1e-3 * w2.max()  # drop translations, rotations and numerically soft modes
    w2, modes = w2[keep], modes[:, keep]
    rng = np.random.default_rng(seed)
    kt = units.kB * temperature
    frames = []
    for k in range(n_frames):
        # Boltzmann distribution of a harmonic mode: mass-weighted q ~ N(0, kT / ω²).
        q = rng.normal(size=len(w2)) * np.sqrt(kt / w2)
        disp = (modes @ q) / np.sqrt(m)
        frames.append(structure.copy(positions=structure.positions + disp.reshape(n, 3), energy=None, forces=None,
                                     info={**start_info(structure.info), "sampler": "normal_modes",
                                           "sampler_temperature_K": temperature, "sampler_seed": seed,
                                           "sampler_index": k}))
    return frames


def _bond_graph(structure: Structure) -> list[set[int]]:
    """Each atom's covalently bonded neighbours (`ffspace.data.bonds`' rule)."""
    from ..data.bonds import covalent_bonds

    graph = [set() for _ in range(structure.n_atoms)]
    for i, j in zip(*covalent_bonds(structure.numbers, structure.positions)[:2]):
        graph[int(i)].add(int(j))
        graph[int(j)].add(int(i))
    return graph


def rotatable_dihedrals(structure: Structure) -> list[tuple[int, int, int, int]]:
    """One dihedral (a, b, c, d) per rotatable bond: b–c not in a ring, both ends with other heavy-or-H neighbors."""
    graph = _bond_graph(structure)
    out = []
    for b in range(structure.n_atoms):
        for c in sorted(graph[b]):
            if c <= b or len(graph[b]) < 2 or len(graph[c]) < 2:
                continue
            moved = _moving_part(graph, b, c)
            if b in moved:  # b and c are in a ring
                continue
            a = min(graph[b] - {c}, key=lambda k: (structure.numbers[k] == 1, k))
            d = min(graph[c] - {b}, key=lambda k: (structure.numbers[k] == 1, k))
            out.append((a, b, c, d))
    return out


def _moving_part(graph: list[set[int]], b: int, c: int) -> set[int]:
    seen, todo = {c}, [c]
    while todo:
        k = todo.pop()
        for n in graph[k]:
            if (k, n) == (c, b) or n in seen:
                continue
            seen.add(n)
            todo.append(n)
    return seen


def torsion_scan(structure: Structure, n_frames: int = 24, dihedral: tuple[int, int, int, int] | None = None,
                 seed: int = 0) -> list[Structure]:
    """Rigid rotation about one bond through 360° in ``n_frames`` steps (default: the first rotatable bond)."""
    dihedrals = [tuple(dihedral)] if dihedral else rotatable_dihedrals(structure)
    if not dihedrals:
        from ..errors import DataError

        raise DataError("no rotatable bond for a torsion scan", file=structure.source, frame=structure.frame,
                        field="positions")
    a, b, c, d = dihedrals[0]
    graph = _bond_graph(structure)
    moved = _moving_part(graph, b, c)
    mask = np.zeros(structure.n_atoms, dtype=bool)
    mask[list(moved)] = True
    atoms = structure.to_ase()
    start = atoms.get_dihedral(a, b, c, d)
    frames = []
    for k in range(n_frames):
        angle = (start + 360.0 * k / n_frames) % 360.0
        copy = atoms.copy()
        copy.set_dihedral(a, b, c, d, angle, mask=mask)
        frames.append(Structure.from_ase(copy, info={**start_info(structure.info), "sampler": "torsion_scan",
                                                     "sampler_dihedral": f"{a}-{b}-{c}-{d}",
                                                     "sampler_angle_deg": round(float(angle), 6), "sampler_index": k}))
    return frames


def dimer_scan(structure: Structure, distances, n_orientations: int = 1, seed: int = 0) -> list[Structure]:
    """Two copies of a molecule at centre-of-mass distances ``distances`` (Å), randomly oriented."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    a = structure.to_ase()
    centred = a.positions - a.get_center_of_mass()
    frames = []
    for dist in distances:
        for k in range(n_orientations):
            r1, r2 = Rotation.random(2, random_state=rng.integers(1 << 31)).as_matrix()
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            pos = np.concatenate([centred @ r1.T, centred @ r2.T + dist * direction])
            frames.append(Structure(numbers=np.concatenate([a.numbers, a.numbers]), positions=pos,
                                    info={**start_info(structure.info), "sampler": "dimer",
                                          "sampler_distance_A": float(dist),
                                          "sampler_index": k, "sampler_seed": seed}))
    return frames
