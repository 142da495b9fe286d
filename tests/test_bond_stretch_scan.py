"""benchmarks/bond_stretch_scan.py: the bond moves, nothing else does, and the energy split by term adds up."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bond_stretch_scan import energy_by_term, fragment, stretched  # noqa: E402


def _c_h_bond(structure):
    """A carbon and a hydrogen bonded to it (the closest H to the first C)."""
    c = int(np.nonzero(structure.numbers == 6)[0][0])
    h_atoms = np.nonzero(structure.numbers == 1)[0]
    h = int(h_atoms[np.argmin(np.linalg.norm(structure.positions[h_atoms] - structure.positions[c], axis=1))])
    return c, h


def test_a_stretch_moves_only_the_far_fragment_along_the_bond(ethanol_data):
    start = ethanol_data[0]
    c, h = _c_h_bond(start)
    side = fragment(start, c, h)
    assert side.tolist() == [h]  # a hydrogen is a fragment of its own
    d0 = np.linalg.norm(start.positions[h] - start.positions[c])
    for by in (-0.4, 0.3):
        moved = stretched(start, c, h, side, by)
        assert np.linalg.norm(moved.positions[h] - moved.positions[c]) == pytest.approx(d0 + by, abs=1e-12)
        others = np.setdiff1d(np.arange(start.n_atoms), side)
        np.testing.assert_array_equal(moved.positions[others], start.positions[others])
    o = int(np.nonzero(start.numbers == 8)[0][0])
    carbons = np.nonzero(start.numbers == 6)[0]
    c_o = int(carbons[np.argmin(np.linalg.norm(start.positions[carbons] - start.positions[o], axis=1))])
    carbon_side = fragment(start, o, c_o)  # the C–O bond: the carbon side holds both carbons and their 5 hydrogens
    assert o not in carbon_side and set(carbons) <= set(carbon_side.tolist()) and len(carbon_side) == start.n_atoms - 2


def test_the_terms_add_up_to_the_total_and_each_starts_at_zero(ethanol_data):
    from ffspace.potential import Potential
    from ffspace.train import build_model_for_data

    model = build_model_for_data({"family": "painn", "cutoff": 4.0, "features": 8, "layers": 1, "n_rbf": 4,
                                  "zbl": True}, ethanol_data, seed=0)
    potential = Potential(model, dtype="float64", fast=False)
    start = ethanol_data[0]
    c, h = _c_h_bond(start)
    frames = [stretched(start, c, h, [h], by) for by in (0.0, -0.5, -0.3, 0.2)]
    terms = energy_by_term(potential, frames)
    assert list(terms) == ["reference", "painn", "zbl"]
    total = np.asarray(potential.predict(frames)["energy"])
    np.testing.assert_allclose(sum(terms.values()), total - total[0], atol=1e-9)
    assert all(v[0] == 0.0 for v in terms.values())
    assert np.all(terms["reference"] == 0.0)  # the same atoms in every frame
    assert terms["zbl"][1] > terms["zbl"][2] > 0.0  # C–H at 0.6 Å and 0.8 Å: inside ZBL's reach, and repulsive
