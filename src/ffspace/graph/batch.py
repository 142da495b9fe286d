"""`Batch`: the tensors every model reads, built from one or many structures."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

from .neighbors import neighbor_list


@dataclass
class Batch:
    """Many structures as one disconnected graph.

    numbers (N,) long; positions (N, 3); cell (G, 3, 3) rows are lattice vectors; pbc (G, 3) bool;
    graph_index (N,) long, the structure each atom belongs to; edge_index (2, E) long with
    edge_index[0] = i (the centre) and edge_index[1] = j (the neighbour); shifts (E, 3) integer
    cell shifts in the dtype of positions: edge vector r_ij = pos[j] − pos[i] + shifts @ cell[g].
    n_atoms (G,) long. Optional labels: energy (G,) always float64 (totals need the precision),
    forces (N, 3), stress (G, 3, 3).
    """

    numbers: torch.Tensor
    positions: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    graph_index: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor
    n_atoms: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    has_stress: torch.Tensor | None = None
    total_charge: torch.Tensor | None = None  # (G,) e; from Structure.info["charge"], 0 when absent
    # (G, 3) V/Å, the uniform external field of each structure (Structure.info["field"]; zeros for a structure
    # without one in a batch where others have one); None when no structure of the batch has a field.
    field: torch.Tensor | None = None
    dipole: torch.Tensor | None = None  # (G, 3) e·Å reference dipoles (label); has_dipole (G,) says which are real
    has_dipole: torch.Tensor | None = None

    @property
    def n_graphs(self) -> int:
        return int(self.n_atoms.shape[0])

    def edge_vectors(self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None):
        """r_ij for every edge; pass displaced positions/cell (for stress) to differentiate through them."""
        pos = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        i, j = self.edge_index
        vec = pos[j] - pos[i]
        if self.shifts.shape[0]:
            edge_cell = cell[self.graph_index[i]]
            vec = vec + torch.einsum("ek,ekl->el", self.shifts, edge_cell)
        return vec

    def to(self, device=None, dtype=None) -> "Batch":
        """Move to a device; float tensors also change dtype when ``dtype`` is given."""
        changes = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is None:
                continue
            if t.is_floating_point() and dtype is not None and f.name != "energy":
                changes[f.name] = t.to(device=device, dtype=dtype)
            else:
                changes[f.name] = t.to(device=device)
        return replace(self, **changes)


@dataclass
class GraphData:
    """Pre-computed graph of one structure (numpy), so that training batches cost no neighbor search."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    i: np.ndarray
    j: np.ndarray
    shifts: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    charge: float = 0.0
    field: np.ndarray | None = None  # (3,) V/Å
    dipole: np.ndarray | None = None  # (3,) e·Å


def graph_of(structure, cutoff: float, pairs=None) -> GraphData:
    """Neighbor graph of a `Structure` at ``cutoff``; ``pairs`` (i, j, shifts) may be given (Verlet list)."""
    if pairs is None:
        i, j, s = neighbor_list(structure.positions, structure.cell, structure.pbc, cutoff)
    else:
        i, j, s = pairs
        # A Verlet list carries pairs up to cutoff + skin: drop those beyond the cutoff now.
        vec = structure.positions[j] - structure.positions[i] + s @ structure.cell
        keep = (vec**2).sum(axis=1) < cutoff * cutoff
        i, j, s = i[keep], j[keep], s[keep]
    return GraphData(numbers=structure.numbers, positions=structure.positions, cell=structure.cell,
                     pbc=structure.pbc, i=i, j=j, shifts=s, energy=structure.energy,
                     forces=structure.forces, stress=structure.stress,
                     charge=float(structure.info.get("charge", 0.0)), field=structure.info.get("field"),
                     dipole=structure.info.get("dipole"))


def collate(graphs: list[GraphData], dtype=torch.float64, device=None, labels: bool = True) -> Batch:
    """Stack pre-computed graphs into one `Batch`."""
    if not graphs:
        raise ValueError("cannot collate an empty list of structures")
    n_atoms = np.array([len(g.numbers) for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
    ii = np.concatenate([g.i + o for g, o in zip(graphs, offsets)])
    jj = np.concatenate([g.j + o for g, o in zip(graphs, offsets)])
    kw = dict(device=device)
    batch = Batch(
        numbers=torch.as_tensor(np.concatenate([g.numbers for g in graphs]), **kw),
        positions=torch.as_tensor(np.concatenate([g.positions for g in graphs]), dtype=dtype, **kw),
        cell=torch.as_tensor(np.stack([g.cell for g in graphs]), dtype=dtype, **kw),
        pbc=torch.as_tensor(np.stack([g.pbc for g in graphs]), **kw),
        graph_index=torch.as_tensor(np.repeat(np.arange(len(graphs)), n_atoms), **kw),
        edge_index=torch.as_tensor(np.stack([ii, jj]), **kw),
        shifts=torch.as_tensor(np.concatenate([g.shifts for g in graphs]), dtype=dtype, **kw),
        n_atoms=torch.as_tensor(n_atoms, **kw),
        total_charge=torch.tensor([g.charge for g in graphs], dtype=dtype, device=device),
    )
    if any(getattr(g, "field", None) is not None for g in graphs):
        batch.field = torch.as_tensor(np.stack([_vector(g, "field") for g in graphs]), dtype=dtype, **kw)
    if labels:
        if all(g.energy is not None for g in graphs):
            batch.energy = torch.tensor([g.energy for g in graphs], dtype=torch.float64, device=device)
        if all(g.forces is not None for g in graphs):
            batch.forces = torch.as_tensor(np.concatenate([g.forces for g in graphs]), dtype=dtype, **kw)
        if any(g.stress is not None for g in graphs):
            batch.stress = torch.as_tensor(
                np.stack([g.stress if g.stress is not None else np.zeros((3, 3)) for g in graphs]),
                dtype=dtype, **kw)
            batch.has_stress = torch.as_tensor([g.stress is not None for g in graphs], **kw)
        if any(getattr(g, "dipole", None) is not None for g in graphs):
            batch.dipole = torch.as_tensor(np.stack([_vector(g, "dipole") for g in graphs]), dtype=dtype, **kw)
            batch.has_dipole = torch.as_tensor([g.dipole is not None for g in graphs], **kw)
    return batch


def _vector(graph, name: str) -> np.ndarray:
    """A graph's (3,) ``field`` or ``dipole``, zeros when it has none (graphs pickled before these existed too)."""
    value = getattr(graph, name, None)
    return np.zeros(3) if value is None else np.asarray(value, dtype=np.float64)


class StructureBatcher:
    """Batches of one structure whose atoms, cell and charge stay fixed while its positions and neighbour pairs
    change (an MD run): the fixed tensors are made once, and each call makes only the positions, edges and
    shifts. The result is the `Batch` that ``collate([graph_of(structure, cutoff, pairs)])`` gives, for a
    fraction of its cost (building it anew was ~5 % of a 21-atom MD step)."""

    def __init__(self, numbers, cell, pbc, charge: float = 0.0, dtype=torch.float64, device=None, field=None):
        n = len(numbers)
        self.dtype, self.device = dtype, device
        self._fixed = dict(numbers=torch.as_tensor(np.asarray(numbers, dtype=np.int64), device=device),
                           cell=torch.tensor(np.asarray(cell)[None], dtype=dtype, device=device),
                           pbc=torch.as_tensor(np.asarray(pbc)[None], device=device),
                           graph_index=torch.zeros(n, dtype=torch.long, device=device),
                           n_atoms=torch.tensor([n], dtype=torch.long, device=device),
                           total_charge=torch.tensor([float(charge)], dtype=dtype, device=device))
        self.set_field(field)

    def set_field(self, field) -> None:
        """The external field (3,) V/Å of the batches made from now on (None: no field); MD under a
        time-dependent field calls this before each force evaluation."""
        self._fixed["field"] = None if field is None else torch.tensor(
            np.asarray(field, dtype=np.float64).reshape(1, 3), dtype=self.dtype, device=self.device)

    def __call__(self, positions: np.ndarray, i: np.ndarray, j: np.ndarray, shifts: np.ndarray) -> Batch:
        # torch.tensor copies: the caller's arrays (an integrator's state) change in place after the call.
        return Batch(positions=torch.tensor(positions, dtype=self.dtype, device=self.device),
                     edge_index=torch.tensor(np.stack([i, j]), dtype=torch.long, device=self.device),
                     shifts=torch.tensor(shifts, dtype=self.dtype, device=self.device), **self._fixed)


def batch_structures(structures, cutoff: float, dtype=torch.float64, device=None, labels: bool = True) -> Batch:
    """Neighbor search + collation in one call (convenient; trainers pre-compute graphs instead)."""
    return collate([graph_of(s, cutoff) for s in structures], dtype=dtype, device=device, labels=labels)
