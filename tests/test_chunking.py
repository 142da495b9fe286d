"""Large graphs in inference are done block by block (models/chunking.py): the same energies and forces as in one
piece, in bounded memory; training is never chunked; a term of a Sum ignores edges beyond its own cutoff."""

import numpy as np
import pytest
import torch

from ffspace.bench.systems import generated_water_box
from ffspace.graph.batch import batch_structures
from ffspace.models import PaiNN
from ffspace.models.chunking import EdgeBlocks, edge_blocks
from ffspace.potential import Potential

from .test_physics import make  # the physics suite's small models of each family

ELEMENTS = [1, 6, 8]


def build(name):
    if name == "mace_3_layers":  # the suite's 2-layer MACE starts with forces below 1 meV/Å on this box
        pytest.importorskip("e3nn")
        from ffspace.models.mace import MACE

        return MACE(ELEMENTS, cutoff=4.0, channels=8, lmax=2, layers=3, correlation=3)
    return make(name)


@pytest.mark.parametrize("name", ["painn", "schnet", "mace_3_layers", "mace_vectors"])
def test_blocks_give_the_same_energy_and_forces(name):
    torch.manual_seed(0)
    model = build(name)
    box = generated_water_box(n_molecules=27, seed=1)
    pot = Potential(model, dtype=torch.float64)
    batch = batch_structures([box], pot.cutoff, dtype=torch.float64)
    whole = pot.compute(batch, forces=True)
    pot.model.max_edges_per_block = 150  # ~15 blocks of receivers (pot.model: the float64 copy)
    blocks = edge_blocks(pot.model, batch.edge_index[0], box.n_atoms)
    assert blocks is not None and len(blocks.blocks) > 5
    chunked = pot.compute(batch, forces=True)
    assert torch.allclose(chunked["energy"], whole["energy"], rtol=0, atol=1e-10)
    assert torch.allclose(chunked["forces"], whole["forces"], rtol=0, atol=1e-10)
    assert whole["forces"].abs().max() > 1e-3  # the comparison is not between zeros


def test_training_and_energy_only_calls_are_not_chunked():
    model = PaiNN(ELEMENTS, cutoff=4.0, features=8, layers=1)
    model.max_edges_per_block = 1
    receivers = torch.tensor([0, 0, 1, 1, 2])
    model.train()
    assert edge_blocks(model, receivers, 3) is None
    model.eval()
    with torch.no_grad():
        assert edge_blocks(model, receivers, 3) is None
    assert edge_blocks(model, receivers, 3) is not None


def test_blocks_partition_the_edges_by_receiver():
    receivers = torch.tensor([2, 0, 1, 2, 2, 0, 3, 1, 2])
    blocks = EdgeBlocks(receivers, n_nodes=5, max_edges=3)
    assert blocks.receivers.tolist() == sorted(receivers.tolist())
    # Each block holds whole receivers, at most 3 edges unless one receiver alone has more (node 2: 4 edges).
    assert blocks.blocks == [(0, 1, 0, 2), (1, 2, 2, 4), (2, 3, 4, 8), (3, 5, 8, 9)]
    assert sorted(blocks.order.tolist()) == list(range(len(receivers)))


def test_a_term_ignores_edges_beyond_its_cutoff():
    torch.manual_seed(0)
    model = PaiNN(ELEMENTS, cutoff=3.0, features=16, layers=2)
    box = generated_water_box(n_molecules=27, seed=1)
    pot = Potential(model, dtype=torch.float64)
    short = pot.compute(batch_structures([box], 3.0, dtype=torch.float64))
    long = pot.compute(batch_structures([box], 5.0, dtype=torch.float64))
    assert torch.allclose(short["energy"], long["energy"], rtol=0, atol=1e-10)
    assert np.allclose(short["forces"].numpy(), long["forces"].numpy(), rtol=0, atol=1e-10)
