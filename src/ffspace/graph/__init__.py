"""Neighbor lists (vesin) and the `Batch` every model reads."""

from .batch import Batch, GraphData, batch_structures, collate, graph_of
from .neighbors import VerletList, neighbor_list

__all__ = ["Batch", "GraphData", "VerletList", "batch_structures", "collate", "graph_of", "neighbor_list"]
