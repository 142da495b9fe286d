"""GFN2-xTB labels through tblite: forces agree with finite differences of the energy."""

import numpy as np
import pytest

pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")

from ffspace.reference import XTBLabeler  # noqa: E402
from ffspace.testing.physics import ethanol  # noqa: E402


def test_xtb_forces_match_finite_differences():
    lab = XTBLabeler()
    s = ethanol(0, rattle=0.05)
    labeled = lab.label(s)
    h = 1e-4
    for atom, d in [(0, 0), (3, 1), (8, 2)]:
        e = []
        for sign in (1, -1):
            p = s.positions.copy()
            p[atom, d] += sign * h
            e.append(lab.label(s.copy(positions=p)).energy)
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - labeled.forces[atom, d]) < 1e-4, (atom, d, fd, labeled.forces[atom, d])
    assert labeled.info["label_method"] == "GFN2-xTB"


def test_shipped_dataset_is_what_the_labeler_gives(ethanol_data):
    """The shipped file's labels are reproducible by the labeler (spot check of three frames)."""
    lab = XTBLabeler()
    for k in (0, 150, 399):
        s = ethanol_data[k]
        again = lab.label(s)
        assert abs(again.energy - s.energy) < 1e-6
        np.testing.assert_allclose(again.forces, s.forces, atol=1e-5)
