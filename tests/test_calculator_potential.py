"""A reference method as the potential of the MD stability protocol (the oracle bound, issue 30)."""

import numpy as np
import pytest

from ffspace.bench import stability
from ffspace.md.calculator_potential import CalculatorPotential
from ffspace.md.copies import MoleculeCopies


def test_copies_get_the_calculators_energies_and_forces(ethanol_data):
    pytest.importorskip("tblite")
    from ffspace.reference.xtb import XTBLabeler

    labeler = XTBLabeler()
    mol = ethanol_data[0]
    rng = np.random.default_rng(0)
    positions = mol.positions[None] + rng.normal(0, 0.03, (3, mol.n_atoms, 3))
    copies = MoleculeCopies(CalculatorPotential(labeler.calculator, workers=2), mol, positions,
                            np.zeros_like(positions))
    for k in range(3):  # each copy as the labeler alone would label it (eV, eV/Å)
        ref = labeler.label(mol.copy(positions=positions[k]))
        assert copies.energies[k] == pytest.approx(ref.energy, abs=1e-6)
        np.testing.assert_allclose(copies.state.forces.reshape(3, -1, 3)[k], ref.forces, atol=1e-5)


class _FailsFar:
    """A harmonic pull to the start geometry whose "SCF" fails once the second atom moves 0.05 Å away."""

    def __init__(self, start):
        self.start = start

    def __call__(self):
        from ase.calculators.calculator import Calculator, all_changes

        start = self.start

        class Calc(Calculator):
            implemented_properties = ["energy", "forces"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                d = self.atoms.positions - start
                if np.linalg.norm(d[1]) > 0.05:
                    raise RuntimeError("SCF not converged")
                self.results = {"energy": float(5.0 * (d ** 2).sum()), "forces": -10.0 * d}

        return Calc()


def test_a_calculation_that_fails_fails_only_its_copy(ethanol_data):
    mol = ethanol_data[0]
    pot = CalculatorPotential(_FailsFar(mol.positions), workers=2)
    positions = np.repeat(mol.positions[None], 3, 0)
    positions[1, 1] += 0.1  # only copy 1's "SCF" fails
    copies = MoleculeCopies(pot, mol, positions, np.zeros_like(positions))
    assert copies.energies.shape == (3,) and copies.state.forces.shape == (3 * mol.n_atoms, 3)
    assert np.isnan(copies.energies[1]) and np.isfinite(copies.energies[[0, 2]]).all()
    assert copies.energies[0] == 0.0 and pot.failures == [(0, 1, "RuntimeError: SCF not converged")]
    # the survivors keep their calculators (matched by their positions), and their SCF history with them
    before = list(pot._calculators)
    kept = copies.survivors(np.array([True, False, True]))
    assert pot._calculators[0] is before[0] and pot._calculators[1] is before[2]
    assert np.isfinite(kept.energies).all()


def test_md_on_a_calculator_loses_the_copies_whose_calculation_failed(ethanol_data):
    mol = ethanol_data[0]
    r = stability.survival(CalculatorPotential(_FailsFar(mol.positions), workers=2), mol, 1200.0, seeds=3,
                           time_ps=0.1)
    # at 1200 K atom 1 leaves the 0.05 Å ball within 0.1 ps in every copy: each is lost to a non-finite energy
    assert r["survived"] == 0 and all(t is not None for t in r["failure_ps"])
    assert all(f["reason"] == "non-finite" for f in r["failure"]), r["failure"]


def test_workers_must_be_positive(ethanol_data):
    with pytest.raises(ValueError, match="workers must be ≥ 1, got 0"):
        CalculatorPotential(_FailsFar(ethanol_data[0].positions), workers=0)
