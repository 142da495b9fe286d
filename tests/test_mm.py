"""Fitted classical MM: a bond holds while it vibrates (outside training), so MD sees a continuous energy."""

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.data import covalent_radii

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
    # Perceived below 1.35 × (0.76 + 0.31) = 1.444 Å; held up to 1.5 × 1.07 = 1.605 Å.
    held = _stretch_scan(pot, np.linspace(1.09, 1.58, 50))
    assert np.isfinite(held).all() and np.max(np.abs(np.diff(held))) < 0.3
    # Without the history (as in training, where every frame is perceived on its own) the bond vanishes at
    # 1.444 Å: the jump the held topology removes, so the check above can fail.
    fresh = _stretch_scan(pot, np.linspace(1.09, 1.58, 50), fresh=True)
    assert np.max(np.abs(np.diff(fresh))) > 1.0
    # Past 1.605 Å the bond breaks, and along the trajectory it does not form again.
    beyond = _stretch_scan(pot, [1.58, 1.62, 1.58])
    assert abs(beyond[2] - held[-1]) > 1.0
    # Other atoms: the held bonds of CH4 do not apply, the molecule gets its own perception.
    assert np.isfinite(pot([ethanol(0)])["energy"]).all()


def _squeeze_scan(pot, distances, fresh=False):
    """Energies of CH4 with its hydrogens 1 and 2 brought together symmetrically to each of ``distances`` (Å)."""
    atoms = molecule("CH4")
    s = Structure(numbers=atoms.numbers, positions=atoms.positions)
    mid, axis = (s.positions[1] + s.positions[2]) / 2, s.positions[1] - s.positions[2]
    axis /= np.linalg.norm(axis)
    out = []
    for d in distances:
        pos = s.positions.copy()
        pos[1], pos[2] = mid + axis * d / 2, mid - axis * d / 2
        out.append(float((_mm() if fresh else pot)([s.copy(positions=pos)])["energy"][0]))
    return np.array(out)


def test_no_bond_forms_along_a_trajectory():
    """Two unbonded atoms that come within bond_scale · (R_i + R_j) in MD stay unbonded (as in an MM engine): a bond
    formed on the way, with its angles and exclusions, jumped the energy of 3BPA by 11.7 eV in one NVE step."""
    distances = np.linspace(1.78, 0.7, 60)  # H–H of CH4 down past 1.35 × 2 × 0.31 = 0.837 Å
    held = _squeeze_scan(_mm(), distances)
    assert np.max(np.abs(np.diff(held))) < 0.5
    # A frame on its own is perceived afresh: the H–H bond forms and the energy jumps, so the check above can fail.
    fresh = _squeeze_scan(None, distances, fresh=True)
    assert np.max(np.abs(np.diff(fresh))) > 3.0


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


def test_morse_bonds_share_the_harmonic_curvature_and_soften_when_stretched(tmp_path):
    """`bond_form="morse"`: D (1 − e^{−a x})², a = √(k/D), has the fitted harmonic bond's curvature at r0 and an
    energy that falls further below the harmonic one the more the bond stretches; a package keeps the form and the
    fitted depths. (Its forces on the MD path are compared with autograd in tests/test_mace_native.py.)"""
    from ffspace.potential.package import load_package, save_package

    harmonic = ClassicalMM(ELEMENTS, cutoff=4.0)
    morse = ClassicalMM(ELEMENTS, cutoff=4.0, bond_form="morse")
    with torch.no_grad():
        morse.bond_depth.fill_(1.5)  # D = 1 + softplus(1.5) = 2.70 eV: a shallow well, so the softening shows
    pots = {name: Potential(m, dtype=torch.float64) for name, m in (("harmonic", harmonic), ("morse", morse))}
    r0 = covalent_radii[6] + covalent_radii[1]  # every bond type's start value: R_i + R_j
    radii = r0 + np.array([-0.004, 0.0, 0.004, 0.15, 0.3])  # all below the perception limit 1.35 × r0
    scans = {name: _stretch_scan(pot, radii) for name, pot in pots.items()}
    # Curvature at r0 from the three central points: the same (the cubic term cancels in the central difference).
    curvature = {name: (e[0] - 2 * e[1] + e[2]) / 0.004**2 for name, e in scans.items()}
    np.testing.assert_allclose(curvature["morse"], curvature["harmonic"], rtol=1e-3)
    # Stretched: the Morse bond's energy falls below the harmonic one's, more so the further it is stretched.
    gap = (scans["harmonic"] - scans["morse"])[3:]
    assert 0 < gap[0] < gap[1]
    # The package round trip keeps the form and the depths.
    save_package(tmp_path / "mm", morse)
    loaded, _ = load_package(tmp_path / "mm", dtype=torch.float64)
    mm = next(m for m in loaded.modules() if isinstance(m, ClassicalMM))
    assert mm.bond_form == "morse"
    torch.testing.assert_close(mm.bond_depth.double(), morse.bond_depth.double(), rtol=0, atol=0)
    again = _stretch_scan(Potential(loaded, dtype=torch.float64), radii)
    np.testing.assert_allclose(again, scans["morse"], rtol=0, atol=1e-9)


@pytest.mark.parametrize("bond_form", ["harmonic", "morse"])
@pytest.mark.parametrize("in_c", [True, False], ids=["c", "numpy"])
def test_the_direct_path_of_the_prior_equals_autograd(bond_form, in_c, monkeypatch):
    """`FixedTopologyMM` (the MD path of the prior: numpy, or C in kernels/mm.c) against the eager model's autograd on
    two copies of a rattled ethanol, with every parameter table off its start values; needs no MACE kernel."""
    from ffspace.potential import direct_priors

    if not in_c:
        monkeypatch.setattr(direct_priors, "_mm_kernel", lambda: None)
    torch.manual_seed(1)
    mm = ClassicalMM(ELEMENTS, cutoff=4.0, bond_form=bond_form).double()
    with torch.no_grad():
        for p in mm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mm.eval()
    copies = [ethanol(seed, rattle=0.15) for seed in (0, 1)]
    direct = direct_priors.FixedTopologyMM(mm, copies[0].numbers, len(copies))
    if in_c and direct.lib is None:
        pytest.skip("no C compiler here: the numpy version is tested by the other case")
    positions = np.concatenate([s.positions for s in copies])
    n = len(positions)
    i, j = (a.reshape(-1) for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    same_copy = (i // len(copies[0].numbers) == j // len(copies[0].numbers)) & (i != j)
    energy, forces = direct(positions, i[same_copy], j[same_copy])
    reference = Potential(mm, dtype=torch.float64)(copies)
    np.testing.assert_allclose(energy, reference["energy"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(forces, np.concatenate(reference["forces"]), rtol=0, atol=1e-8)


def test_bonds_are_held_structure_by_structure():
    """Each structure of a batch continues its own trajectory: another structure of the batch launched far away
    (a failing MD copy) or removed (the survivors of a run) does not make the others' topology perceived afresh."""
    atoms = molecule("CH4")
    s = Structure(numbers=atoms.numbers, positions=atoms.positions)
    mid, axis = (s.positions[1] + s.positions[2]) / 2, s.positions[1] - s.positions[2]
    axis /= np.linalg.norm(axis)
    path = []
    for d in np.linspace(1.78, 0.75, 40):  # past the H–H perception radius, 0.837 Å
        pos = s.positions.copy()
        pos[1], pos[2] = mid + axis * d / 2, mid - axis * d / 2
        path.append(s.copy(positions=pos))
    alone = _mm()
    held = [float(alone([f])["energy"][0]) for f in path][-1]
    fresh = float(_mm()([path[-1]])["energy"][0])
    assert abs(held - fresh) > 1.0  # so the checks below can fail
    other = ethanol(0)
    launched = other.copy(positions=other.positions + 3.0)
    pot = _mm()
    for f in path[:-1]:
        pot([other, f])
    np.testing.assert_allclose(float(pot([launched, path[-1]])["energy"][1]), held, atol=1e-9)
    np.testing.assert_allclose(float(pot([path[-1]])["energy"][0]), held, atol=1e-9)  # the other one removed
