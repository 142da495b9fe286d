"""Message passing in bounded memory for large systems.

Forces are −∂E/∂r by autograd, so an energy + forces call keeps every layer's per-edge activations until the
backward pass: PaiNN with 128 features holds about 32 kB per edge, 40 GB for a 24 000-atom water box (1.25 M
edges at 5 Å). In inference (not training) on a graph with more than ``max_edges`` edges, the message-passing
models therefore aggregate their messages block by block: the edges are grouped by receiving atom, and each block
of atoms with at most ``max_edges`` incoming edges is computed under activation checkpointing, which keeps only
the block's inputs and its aggregated node features. The backward pass recomputes one block at a time, so peak
memory is O(atoms × features) plus one block, at the price of computing the messages twice. Training (which
back-propagates through the forces, a double backward) is never chunked, and the sums are the same either way
(up to the order of floating-point additions).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

MAX_EDGES = 1 << 17  # edges per block: ~1.4 GB of PaiNN-128 float32 activations, ~10 blocks at 24 000 atoms


def within_cutoff(i: torch.Tensor, j: torch.Tensor, vec: torch.Tensor, cutoff: float):
    """The edges shorter than ``cutoff``. A term of a `Sum` receives the graph of the longest-ranged term (a Δ-model's
    MM prior at 6 Å around a 5 Å network): the edges beyond its own cutoff contribute exactly zero, but would
    still cost it time and memory."""
    if torch.compiler.is_compiling():
        # A compiled graph (ffspace.potential.fast) cannot branch on data; the extra edges add exact zeros.
        return i, j, vec
    keep = (vec.detach() ** 2).sum(-1) < cutoff * cutoff
    if bool(keep.all()):
        return i, j, vec
    return i[keep], j[keep], vec[keep]


class EdgeBlocks:
    """Edges sorted by receiver, cut into blocks of consecutive receivers with at most ``max_edges`` edges each
    (a receiver with more edges than that gets a block of its own)."""

    def __init__(self, receivers: torch.Tensor, n_nodes: int, max_edges: int = MAX_EDGES):
        self.order = torch.argsort(receivers, stable=True)
        self.receivers = receivers[self.order]
        counts = torch.bincount(self.receivers, minlength=n_nodes).tolist()
        self.blocks, n0, e0, size = [], 0, 0, 0
        for node, c in enumerate(counts):
            if size and size + c > max_edges:
                self.blocks.append((n0, node, e0, e0 + size))
                n0, e0, size = node, e0 + size, 0
            size += c
        self.blocks.append((n0, n_nodes, e0, e0 + size))

    def sort(self, *edge_tensors: torch.Tensor) -> list[torch.Tensor]:
        """Edge tensors in the blocks' (receiver-sorted) order."""
        return [t[self.order] for t in edge_tensors]

    def aggregate(self, fn, edge_tensors, node_tensors):
        """Concatenation over blocks of ``fn(i_local, n_local, *edge slices, *node_tensors)``, a tuple of (n_local,
        ...) node tensors, each block under activation checkpointing. ``edge_tensors`` are already sorted."""
        parts = []
        for n0, n1, e0, e1 in self.blocks:
            parts.append(checkpoint(_block, fn, n0, n1, self.receivers[e0:e1], *[t[e0:e1] for t in edge_tensors],
                                    *node_tensors, use_reentrant=False))
        return tuple(torch.cat(p) for p in zip(*parts))


def _block(fn, n0, n1, receivers, *tensors):
    out = fn(receivers - n0, n1 - n0, *tensors)
    return out if isinstance(out, tuple) else (out,)


def edge_blocks(module: torch.nn.Module, receivers: torch.Tensor, n_nodes: int,
                max_edges: int | None = None) -> EdgeBlocks | None:
    """Blocks when the call should be chunked (inference with gradients on a graph above ``max_edges``, by default
    the module's ``max_edges_per_block`` or `MAX_EDGES`), else None."""
    limit = max_edges or getattr(module, "max_edges_per_block", None) or MAX_EDGES
    if module.training or not torch.is_grad_enabled() or receivers.shape[0] <= limit:
        return None
    return EdgeBlocks(receivers, n_nodes, limit)


def local_edges(module: torch.nn.Module, batch):
    """``(i, j, vec, blocks)``: the batch's edges within the module's cutoff and, when the call is chunked, their
    blocks (the edges then in the blocks' order); ``blocks`` is None otherwise."""
    i, j, vec = within_cutoff(*batch.edge_index, batch.edge_vectors(), module.cutoff)
    blocks = edge_blocks(module, i, batch.numbers.shape[0])
    if blocks is not None:
        i, j, vec = blocks.sort(i, j, vec)
    return i, j, vec, blocks


def edge_sum(blocks: EdgeBlocks | None, fn, i, n: int, edge_tensors, node_tensors) -> tuple:
    """``fn(i, n, *edge_tensors, *node_tensors)`` as a tuple of (n, ...) node tensors: in one piece, or block by
    block when ``blocks`` is given."""
    if blocks is not None:
        return blocks.aggregate(fn, edge_tensors, node_tensors)
    out = fn(i, n, *edge_tensors, *node_tensors)
    return out if isinstance(out, tuple) else (out,)
