"""The reactive mode of the classical prior (pairwise Morse, `model.prior: morse`; issue 33)."""

import numpy as np
import torch

from ffspace.data import Dataset
from ffspace.data.structure import Structure
from ffspace.graph.batch import batch_structures
from ffspace.models import ClassicalMM, MorsePairs
from ffspace.testing import physics


def _energy(model, structures):
    return model(batch_structures(structures, model.cutoff, dtype=torch.float64)).detach()


def _oh(r: float) -> Structure:
    return Structure(numbers=[8, 1], positions=[[0, 0, 0], [r, 0, 0]])


def test_a_morse_bond_binds_at_r0_dissociates_smoothly_and_repels_at_contact():
    model = MorsePairs([1, 8], cutoff=3.0, switch_width=1.0, depth=4.0, width=2.0).double()
    r0 = float(model.r0[model.pair_index[0, 1]])
    grid = np.linspace(0.7, 3.5, 281)
    e = np.array([float(_energy(model, [_oh(r)]).sum()) for r in grid])
    assert abs(grid[np.argmin(e)] - r0) < 0.011 and abs(e.min() + 4.0) < 1e-3  # the well: −D at r0
    assert e[grid >= 3.0].max() == 0.0 and float(_energy(model, [_oh(0.5)]).sum()) > 0  # 0 beyond the cutoff; a wall
    assert np.abs(np.diff(e)).max() < 0.5  # no step anywhere on the way out (0.01 Å apart)
    # a molecule's energy is the sum of its pairs' (O–H twice, H–H once), each from the same table entry
    h2o = Structure(numbers=[1, 8, 1], positions=[[1.1, 0, 0], [0, 0, 0], [-0.3, 0.9, 0]])
    hh = Structure(numbers=[1, 1], positions=[[1.1, 0, 0], [-0.3, 0.9, 0]])
    pairs = _energy(model, [_oh(1.1)]).sum() + _energy(model, [_oh(float(np.hypot(0.3, 0.9)))]).sum()
    assert torch.allclose(_energy(model, [h2o]).sum(), pairs + _energy(model, [hh]).sum(), atol=1e-12, rtol=0)
    assert model.r0.numel() == 3  # H–H, H–O, O–O: one parameter set per unordered pair


def test_prior_morse_composes_and_the_mm_prior_holds_its_bonds_where_morse_lets_go():
    from ffspace.train import build_model_for_data

    rng = np.random.default_rng(0)
    data = Dataset([physics.molecule(seed=k).copy(energy=-1.0 * k, forces=rng.normal(size=(9, 3)))
                    for k in range(3)])
    model = build_model_for_data({"family": "schnet", "cutoff": 4.0, "features": 8, "layers": 1, "prior": "morse"},
                                 data)
    assert any(isinstance(t, MorsePairs) for t in model.terms)
    # Pulling H off O in 0.01 Å steps, as MD would: the Morse prior levels off (≤ its depth above the minimum), the
    # harmonic MM bond, held along the way (its eval-mode hysteresis), does not.
    morse = MorsePairs([1, 8]).double()
    mm = ClassicalMM([1, 8], cutoff=6.0).double().eval()
    path = np.round(np.arange(0.97, 1.4001, 0.01), 3)
    rise = {}
    for name, m in (("morse", morse), ("mm", mm)):
        e = [float(_energy(m, [_oh(r)]).sum()) for r in path]
        rise[name] = e[-1] - e[0]
    assert rise["morse"] < 1.0 < rise["mm"]


def test_the_switch_takes_the_pair_to_zero_with_zero_slope():
    model = MorsePairs([1, 8], cutoff=3.0, switch_width=1.0, depth=4.0).double()
    e = lambda x: float(_energy(model, [_oh(x)]).sum())  # noqa: E731
    for r in (2.995, 2.9999):
        assert abs((e(r + 1e-6) - e(r - 1e-6)) / 2e-6) < 1e-2 * (3.0 - r) ** 0.5 + 1e-6
        assert abs(e(r)) < 1e-3


def test_the_reactive_doc_example_runs(capsys):
    """docs/reactive.md runs as written."""
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[1] / "docs" / "reactive.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.S)
    assert blocks, "docs/reactive.md lost its example"
    exec(compile("\n".join(blocks), str(doc), "exec"), {"__name__": "__reactive_doc__"})
    assert capsys.readouterr().out.count("Morse") == 6
