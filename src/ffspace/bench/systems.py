"""Systems the speed benchmark times: periodic water boxes of 192 to 24 000+ atoms.

The base cell is the 192-atom (64 H₂O) frame of DeePMD-kit's water example when the shared data is
there (the cell peers publish timings on), otherwise a box of 64 molecules at 1 g/cm³ generated here,
so the benchmark runs on a fresh machine without downloads. Larger boxes are n×n×n replicas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.structure import Structure

SHARED_WATER = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "deepmd_water" / "data_0"
WATER_DENSITY_G_CM3 = 1.0
_AVOGADRO = 6.02214076e23


def water_cell(source: str = "auto") -> tuple[Structure, str]:
    """The 192-atom water cell and a sentence saying where it came from."""
    if source == "generated" or (source == "auto" and not SHARED_WATER.exists()):
        return generated_water_box(64), "generated: 64 randomly oriented H₂O on a jittered lattice at 1 g/cm³, no contact < 1.6 Å (seed 0)"
    from ..data.readers import read_deepmd

    path = SHARED_WATER if source == "auto" else Path(source)
    first = read_deepmd(path)[0]
    cell = Structure(numbers=first.numbers, positions=first.positions, cell=first.cell, pbc=True,
                     source=first.source, frame=first.frame)
    return cell, f"DeePMD-kit water example, {path}, frame 0"


def generated_water_box(n_molecules: int = 64, seed: int = 0) -> Structure:
    """``n_molecules`` (a cube number) rigid TIP3P-shaped waters, randomly oriented, on a cubic lattice."""
    side = round(n_molecules ** (1 / 3))
    if side**3 != n_molecules:
        raise ValueError(f"n_molecules must be a cube number, got {n_molecules}")
    mass_g = n_molecules * 18.015 / _AVOGADRO
    length = (mass_g / WATER_DENSITY_G_CM3) ** (1 / 3) * 1e8  # Å
    rng = np.random.default_rng(seed)
    r_oh, angle = 0.9572, np.deg2rad(104.52)
    local = np.array([[0.0, 0.0, 0.0], [r_oh, 0.0, 0.0], [r_oh * np.cos(angle), r_oh * np.sin(angle), 0.0]])
    spacing = length / side
    placed = np.zeros((0, 3))
    for ix in range(side):
        for iy in range(side):
            for iz in range(side):
                for _ in range(1000):  # a random orientation with no intermolecular contact below 1.6 Å
                    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
                    centre = (np.array([ix, iy, iz]) + 0.5 + rng.uniform(-0.1, 0.1, 3)) * spacing
                    mol = centre + local @ q.T
                    delta = mol[:, None, :] - placed[None, :, :]
                    delta -= length * np.round(delta / length)  # minimum image in the cubic cell
                    if not len(placed) or np.sqrt((delta**2).sum(-1)).min() > 1.6:
                        break
                else:
                    raise RuntimeError("could not place a water molecule without close contacts")
                placed = np.concatenate([placed, mol])
    return Structure(numbers=[8, 1, 1] * n_molecules, positions=placed, cell=np.eye(3) * length, pbc=True,
                     source=f"generated water box ({n_molecules} molecules, seed {seed})")


def replicate(structure: Structure, n: int) -> Structure:
    """The periodic ``structure`` repeated n×n×n times (cell vectors as rows)."""
    if not structure.pbc.all():
        raise ValueError("only a fully periodic structure can be replicated")
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    shifts = grid @ structure.cell
    positions = (structure.positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    return Structure(numbers=np.tile(structure.numbers, len(grid)), positions=positions, cell=structure.cell * n,
                     pbc=True, source=f"{structure.source} ×{n}³")
