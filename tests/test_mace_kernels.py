"""The MACE model's fast kernels equal the plain formulas they replace (so a speed-up cannot change physics)."""

import torch

from ffspace.models.base import scatter_sum
from ffspace.models.mace import (MACE, _coupling_matrices, _message_coupling, _neighbour_slots, _pad, _used_pairs,
                                 _vector_coupling)


def test_pair_compression_reproduces_the_full_outer_product():
    lmax = 2
    dim = (lmax + 1) ** 2
    c2, c3, _ = _coupling_matrices(lmax, 3)
    cv, _ = _vector_coupling(lmax)
    full = torch.cat([c2, c3, cv], 1)
    select, folded = _used_pairs(full, dim)
    a = torch.randn(50, dim, dtype=torch.float64)
    outer = (a[:, :, None] * a[:, None, :]).reshape(50, dim * dim) @ full
    compressed = ((a @ select[0]) * (a @ select[1])) @ folded
    torch.testing.assert_close(compressed, outer, rtol=1e-12, atol=1e-12)
    assert select.shape[-1] < dim * (dim + 1) // 2  # it really drops unused pairs


def test_padded_aggregation_equals_scatter_sum():
    gen = torch.Generator().manual_seed(0)
    n_nodes, n_edges = 7, 30
    receivers = torch.randint(0, n_nodes - 1, (n_edges,), generator=gen)  # the last node has no neighbours
    x = torch.randn(n_edges, 4, 3, dtype=torch.float64, generator=gen)  # (E, K, L+1)
    sh = torch.randn(n_edges, 9, dtype=torch.float64, generator=gen)
    model = MACE([1, 6], channels=4, lmax=2).double()
    layout = _neighbour_slots(receivers, n_nodes)
    a = model._aggregate(x, _pad(sh, layout), layout)
    reference = scatter_sum(x[..., model.l_of_m] * sh[:, None, :], receivers, n_nodes)
    torch.testing.assert_close(a, reference, rtol=1e-12, atol=1e-12)
    assert torch.all(a[-1] == 0)


def test_padded_vector_messages_equal_edge_couplings_scattered():
    """Y_l' ⊗ v_j → l per path, weighted and summed over paths and neighbours: node-side coupling = edge-side."""
    gen = torch.Generator().manual_seed(1)
    n_nodes, n_edges, k = 6, 25, 4
    receivers = torch.randint(0, n_nodes, (n_edges,), generator=gen)
    model = MACE([1, 6], channels=k, lmax=2, hidden_lmax=1).double()
    cm, n_paths = _message_coupling(2)
    sh = torch.randn(n_edges, 9, dtype=torch.float64, generator=gen)
    r = torch.randn(n_edges, k, 1, dtype=torch.float64, generator=gen)  # radial weight per edge and channel
    w = torch.randn(k, n_paths, dtype=torch.float64, generator=gen)  # path weight per channel
    v = torch.randn(n_edges, k, 3, dtype=torch.float64, generator=gen)
    layout = _neighbour_slots(receivers, n_nodes)
    fast = model._aggregate_vectors(r * v, w, _pad(sh, layout), layout)
    paths = ((sh[:, None, :, None] * v[:, :, None, :]).reshape(-1, 27) @ cm.double()).reshape(n_edges, k, n_paths, 9)
    reference = scatter_sum(r * (w[None, :, :, None] * paths).sum(2), receivers, n_nodes)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)


def test_neighbour_slots_of_no_edges():
    slots, positions = _neighbour_slots(torch.zeros(0, dtype=torch.long), 3)
    assert slots.shape == (3, 0) and positions.shape == (0,)
    assert _pad(torch.zeros(0, 5), (slots, positions)).shape == (3, 0, 5)


def test_padding_is_the_indexing_it_replaces_to_second_order():
    """`_pad`'s hand-written gradients (gathers both ways) equal autograd's through plain indexing, also the
    gradient of a gradient (forces are a first derivative, their training a second)."""
    gen = torch.Generator().manual_seed(2)
    n_nodes, n_edges = 6, 20
    receivers = torch.randint(0, n_nodes - 1, (n_edges,), generator=gen)
    layout = _neighbour_slots(receivers, n_nodes)
    slots, positions = layout
    assert torch.equal(slots.reshape(-1)[positions], torch.arange(n_edges))
    x = torch.randn(n_edges, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.equal(_pad(x, layout), torch.cat([x, x.new_zeros(1, 3)])[slots])
    torch.autograd.gradcheck(lambda t: _pad(t, layout), (x,))
    torch.autograd.gradgradcheck(lambda t: _pad(t, layout) ** 2, (x,))


def test_a_structure_without_edges_has_only_its_element_energies():
    from ffspace.graph.batch import batch_structures
    from ffspace.data.structure import Structure

    model = MACE([1, 8], channels=4, cutoff=2.0).double()
    far = Structure(numbers=[8, 1], positions=[[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    energies = model(batch_structures([far], cutoff=2.0))
    assert energies.shape == (2,) and torch.isfinite(energies).all()
