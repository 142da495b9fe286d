"""benchmarks/bond_stretch_scan.py: the bond moves, nothing else does, and the energy split by term adds up."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bond_stretch_scan import energy_by_term, fragment, read_options, scan_points, stretched  # noqa: E402


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


def test_the_terms_add_up_to_the_total(ethanol_data):
    from ffspace.potential import Potential
    from ffspace.train import build_model_for_data

    model = build_model_for_data({"family": "painn", "cutoff": 4.0, "features": 8, "layers": 1, "n_rbf": 4,
                                  "zbl": True}, ethanol_data, seed=0)
    potential = Potential(model, dtype="float64", fast=False)
    start = ethanol_data[0]
    c, h = _c_h_bond(start)
    d0 = np.linalg.norm(start.positions[h] - start.positions[c])
    frames = [stretched(start, c, h, [h], x - d0) for x in (d0, 0.55, 0.75, d0 + 0.2)]
    terms = energy_by_term(potential, frames)
    assert list(terms) == ["reference", "painn", "zbl"]
    total = np.asarray(potential.predict(frames)["energy"])
    np.testing.assert_allclose(sum(terms.values()), total - total[0], atol=1e-9)
    assert np.all(terms["reference"] == 0.0)  # the same atoms in every frame
    assert terms["zbl"][1] > terms["zbl"][2] > 0.0  # C–H at 0.55 and 0.75 Å: inside ZBL's reach, and repulsive


def test_scan_points_keep_the_order_asked_and_the_start_as_reference():
    stretches, shown, dft = scan_points(1.1, [-0.3, -0.2, 0.0, 0.1])
    assert stretches[0] == 0.0 and [stretches[k] for k in shown] == [-0.3, -0.2, 0.0, 0.1]
    assert dft == {-0.3, -0.2, 0.0, 0.1}
    stretches, shown, dft = scan_points(1.1, [0.0, 0.1], lengths=[0.7, 0.9, 1.1 + 1e-9], dft_at=[0.9])
    assert stretches[0] == 0.0 and len(stretches) == 3  # 1.1 + 1e-9 Å is the start itself
    assert [stretches[k] for k in shown] == pytest.approx([-0.4, -0.2, 0.0])
    assert dft == {stretches[2], 0.0}  # --dft-at in lengths, matched exactly
    stretches, shown, _ = scan_points(1.1, [0.2, 0.4])
    assert stretches == [0.0, 0.2, 0.4] and shown == [1, 2]  # the start is computed, not printed


def test_an_extxyz_start_structure_needs_no_labels(tmp_path, ethanol_data):
    from ase.io import write

    from ffspace.data.readers import read_dataset

    path = tmp_path / "bare.xyz"
    write(path, ethanol_data[0].to_ase())  # positions only: no energy or forces in the file
    start = read_dataset(path, **read_options(path, None, None))[0]
    np.testing.assert_array_equal(start.numbers, ethanol_data[0].numbers)
