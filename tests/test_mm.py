"""Fitted classical MM: a bond holds while it vibrates (outside training), so MD sees a continuous energy."""

import numpy as np
import torch
from ase.build import molecule

from ffspace.data import Structure
from ffspace.models import ClassicalMM
from ffspace.potential import Potential
from ffspace.testing.physics import ethanol

ELEMENTS = [1, 6, 7, 8]


def _mm():
    return Potential(ClassicalMM(ELEMENTS, cutoff=4.0), dtype=torch.float64)  # its starting values: no randomness


def _stretch_scan(pot, radii, fresh=False):
    """Energies of CH4 with one C–H at each length in ``radii`` (Å), in that order; ``fresh``: each by a new
    model that has seen nothing before."""
    atoms = molecule("CH4")
    s = Structure(numbers=atoms.numbers, positions=atoms.positions)
    direction = s.positions[1] / np.linalg.norm(s.positions[1])
    out = []
    for r in radii:
        pos = s.positions.copy()
        pos[1] = direction * r
        call = _mm() if fresh else pot
        out.append(float(call([s.copy(positions=pos)])["energy"][0]))
    return np.array(out)


def test_a_bond_holds_while_stretched_and_breaks_past_break_scale():
    pot = _mm()
    # Perceived below 1.2 × (0.76 + 0.31) = 1.284 Å; held up to 1.5 × 1.07 = 1.605 Å.
    held = _stretch_scan(pot, np.linspace(1.09, 1.58, 50))
    assert np.isfinite(held).all() and np.max(np.abs(np.diff(held))) < 0.3
    # Without the history (as in training, where every frame is perceived on its own) the bond vanishes at
    # 1.284 Å: the jump the hysteresis removes, so the check above can fail.
    fresh = _stretch_scan(pot, np.linspace(1.09, 1.58, 50), fresh=True)
    assert np.max(np.abs(np.diff(fresh))) > 1.0
    # Past 1.605 Å the bond breaks, and is not re-formed on the way back until below 1.284 Å.
    beyond = _stretch_scan(pot, [1.58, 1.62, 1.58])
    assert abs(beyond[2] - held[-1]) > 1.0
    # Other atoms: the held bonds of CH4 do not apply, the molecule gets its own perception.
    assert np.isfinite(pot([ethanol(0)])["energy"]).all()


def test_old_packages_without_break_scale_get_the_default():
    assert ClassicalMM(ELEMENTS).config["break_scale"] == 1.5
    assert ClassicalMM(ELEMENTS, bond_scale=1.6).config["break_scale"] == 1.6


def test_inference_mode_does_not_poison_later_force_calls():
    pot = Potential(ClassicalMM(ELEMENTS, cutoff=4.0), dtype=torch.float64)
    s = ethanol(0)
    with torch.inference_mode():
        pot.model(pot.batch([s]).to(dtype=torch.float64))
    assert np.isfinite(pot([s])["forces"]).all()


def test_exclusions_match_the_walks_of_every_edge():
    """1-2 / 1-3 / 1-4 pairs from per-atom walk keys equal the per-edge expansion of the neighbour table (the
    former code, 216 candidates an edge), on a ring molecule where walks step back and close rings."""
    from ffspace.graph.batch import collate, graph_of
    from ffspace.models.mm import _has_key, _walk_keys

    atoms = molecule("C6H6")  # benzene: 1-4 pairs across the ring are also reached by shorter walks
    s = Structure(numbers=atoms.numbers, positions=atoms.positions)
    batch = collate([graph_of(s, 4.0)], dtype=torch.float64, labels=False)
    model = ClassicalMM([1, 6], cutoff=4.0).eval()
    i, j = batch.edge_index
    r = torch.linalg.norm(batch.edge_vectors(), dim=-1)
    nbr, _, _ = model.topology(batch, r)
    first = nbr[i]
    second = torch.where(first.unsqueeze(-1) >= 0, nbr[first.clamp(min=0)], -1).flatten(1)
    third = torch.where(second.unsqueeze(-1) >= 0, nbr[second.clamp(min=0)], -1).flatten(1)
    n = nbr.shape[0]
    walks = _walk_keys(nbr, 3)
    for expanded, keys in zip((first, second, third), walks):
        assert torch.equal(_has_key(keys, i * n + j), (expanded == j.unsqueeze(-1)).any(-1))
    assert walks[0].numel() == 24 and _has_key(walks[2], i * n + j).sum() > 0  # 12 bonds, both directions
    assert not _has_key(torch.empty(0, dtype=torch.long), i * n + j).any()
