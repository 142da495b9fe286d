"""Molecular topology as explicit index lists, perceived from a batch's geometry.

Bonds are pairs closer than ``bond_scale`` · (R_i + R_j) (covalent radii). From them come angles, proper
torsions, impropers (every three-coordinated centre) and the nonbonded pairs of each molecule: all pairs
of the same structure except 1-2 and 1-3 pairs, with 1-4 pairs flagged for scaling. These are the lists
an MM engine such as OpenMM takes, so a model that computes its energy from them can be exported term
by term. Nothing here carries a gradient: topology is a discrete function of the geometry.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import numpy as np
import torch

from ..data.bonds import bond_reach

MAX_NEIGHBOURS = 6
# The six orderings of an improper centre's three neighbours: summing over all of them makes the
# improper energy independent of atom order (as OpenFF's "trefoil" impropers do with three).
IMPROPER_ORDERS = torch.tensor(list(permutations(range(3))), dtype=torch.long)


@dataclass
class MolecularTopology:
    """Index lists over the atoms of a batch (all long tensors; pairs have i < j).

    bonds (B, 2); angles (A, 3) as (end, centre, end); torsions (T, 4) as a–b–c–d around bond b–c;
    impropers (I, 4) as (n0, centre, n1, n2), six orderings per three-coordinated centre, and
    improper_centre (I,); pairs (P, 2) nonbonded pairs of one structure (1-2 and 1-3 excluded) with
    pair_is_14 (P,) bool; degree (N,) bonded neighbours per atom.
    """

    degree: torch.Tensor
    bonds: torch.Tensor
    angles: torch.Tensor
    torsions: torch.Tensor
    impropers: torch.Tensor
    improper_centre: torch.Tensor
    pairs: torch.Tensor
    pair_is_14: torch.Tensor
    excluded: torch.Tensor  # (X, 2) the 1-2 and 1-3 pairs, i < j (an MM engine needs them as exclusions)


def perceive(batch, bond_scale: float = 1.2) -> MolecularTopology:
    """Topology of every structure in ``batch`` (its edges must reach the longest bond)."""
    return topology_from_bonds(find_bonds(batch, bond_scale), batch.n_atoms)


def find_bonds(batch, bond_scale: float = 1.2) -> torch.Tensor:
    """(B, 2) covalent bonds, i < j: pairs closer than ``bond_scale`` · (R_i + R_j)."""
    i, j = batch.edge_index
    with torch.no_grad():
        r = torch.linalg.norm(batch.edge_vectors(), dim=-1)
        is_bond = (r < bond_reach(batch.numbers[i], batch.numbers[j], bond_scale).to(r.dtype)) & (i < j)
    if bool((batch.shifts[is_bond] != 0).any()) if batch.shifts.shape[0] else False:
        raise ValueError("a bond crosses a periodic boundary: molecular topologies need whole molecules")
    return torch.stack([i[is_bond], j[is_bond]], 1)


def topology_from_bonds(bonds: torch.Tensor, n_atoms: torch.Tensor) -> MolecularTopology:
    """Angles, torsions, impropers and nonbonded pairs implied by ``bonds`` in structures of ``n_atoms``."""
    device = bonds.device
    n = int(n_atoms.sum())
    nbr, degree = _neighbour_table(bonds, n)

    # Angles: every pair of neighbours of each centre.
    a, b = torch.triu_indices(MAX_NEIGHBOURS, MAX_NEIGHBOURS, 1, device=device)
    centre = torch.arange(n, device=device).repeat_interleave(a.numel())
    ea, eb = nbr[centre, a.repeat(n)], nbr[centre, b.repeat(n)]
    ok = (ea >= 0) & (eb >= 0)
    angles = torch.stack([ea[ok], centre[ok], eb[ok]], 1)

    # Proper torsions a–b–c–d around each bond b–c (3-rings give a = d and are dropped).
    sa, sd = torch.meshgrid(torch.arange(MAX_NEIGHBOURS, device=device),
                            torch.arange(MAX_NEIGHBOURS, device=device), indexing="ij")
    m = torch.arange(bonds.shape[0], device=device).repeat_interleave(sa.numel())
    bb, cc = bonds[m, 0], bonds[m, 1]
    aa, dd = nbr[bb, sa.reshape(-1).repeat(bonds.shape[0])], nbr[cc, sd.reshape(-1).repeat(bonds.shape[0])]
    ok = (aa >= 0) & (dd >= 0) & (aa != cc) & (dd != bb) & (aa != dd)
    torsions = torch.stack([aa[ok], bb[ok], cc[ok], dd[ok]], 1)

    # Impropers on three-coordinated centres, in all six neighbour orders.
    centres = torch.nonzero(degree == 3).squeeze(-1)
    orders = IMPROPER_ORDERS.to(device)
    around = nbr[centres][:, :3][:, orders]  # (C, 6, 3)
    cen = centres[:, None].expand(-1, orders.shape[0])
    impropers = torch.stack([around[..., 0], cen, around[..., 1], around[..., 2]], -1).reshape(-1, 4)

    # Nonbonded pairs: all pairs of a structure minus 1-2 and 1-3; 1-4 flagged (ends of a torsion).
    pairs = _intra_structure_pairs(n_atoms)
    excluded = _unique_pairs(torch.cat([bonds, angles[:, [0, 2]]]), n)
    key = pairs[:, 0] * n + pairs[:, 1]
    keep = ~torch.isin(key, excluded[:, 0] * n + excluded[:, 1])
    pairs = pairs[keep]
    ends = _unique_pairs(torsions[:, [0, 3]], n)
    is_14 = torch.isin(pairs[:, 0] * n + pairs[:, 1], ends[:, 0] * n + ends[:, 1])
    return MolecularTopology(degree=degree, bonds=bonds, angles=angles, torsions=torsions, impropers=impropers,
                             improper_centre=cen.reshape(-1), pairs=pairs, pair_is_14=is_14, excluded=excluded)


def _neighbour_table(bonds: torch.Tensor, n: int):
    """(N, MAX_NEIGHBOURS) bonded neighbours, −1 padded, and each atom's degree, from undirected bonds."""
    return neighbour_table(torch.cat([bonds[:, 0], bonds[:, 1]]), torch.cat([bonds[:, 1], bonds[:, 0]]), n)


def neighbour_table(src: torch.Tensor, dst: torch.Tensor, n: int):
    """(N, MAX_NEIGHBOURS) table of each atom's bonded neighbours (−1 padded) and its degree, from directed
    bonds src → dst (every bond in both directions)."""
    order = torch.argsort(src * n + dst)
    src, dst = src[order], dst[order]
    degree = torch.bincount(src, minlength=n)
    if degree.numel() and int(degree.max()) > MAX_NEIGHBOURS:
        worst = int(degree.argmax())
        raise ValueError(f"atom {worst} has {int(degree.max())} bonded neighbours (> {MAX_NEIGHBOURS}): atoms "
                         "too close for a molecular-mechanics topology")
    start = torch.cumsum(degree, 0) - degree
    rank = torch.arange(src.numel(), device=src.device) - start[src]
    nbr = torch.full((n, MAX_NEIGHBOURS), -1, dtype=torch.long, device=src.device)
    nbr[src, rank] = dst
    return nbr, degree


def _intra_structure_pairs(n_atoms: torch.Tensor) -> torch.Tensor:
    """All (i, j), i < j, of atoms in the same structure (structures are contiguous in a batch)."""
    offsets = torch.cumsum(n_atoms, 0) - n_atoms
    out = []
    for size in torch.unique(n_atoms).tolist():  # one triangle per distinct structure size
        if size < 2:
            continue
        tri = torch.triu_indices(size, size, 1, device=n_atoms.device)
        start = offsets[n_atoms == size]
        out.append((tri[None] + start[:, None, None]).transpose(0, 1).reshape(2, -1).T)
    return torch.cat(out) if out else torch.zeros((0, 2), dtype=torch.long, device=n_atoms.device)


def _unique_pairs(pairs: torch.Tensor, n: int) -> torch.Tensor:
    lo, hi = torch.minimum(pairs[:, 0], pairs[:, 1]), torch.maximum(pairs[:, 0], pairs[:, 1])
    key = torch.unique(lo * n + hi)
    return torch.stack([key // n, key % n], 1)


def molecule_index(bonds: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) the molecule (connected component of the bond graph) each of ``n`` atoms belongs to, numbered 0…M−1,
    from undirected ``bonds`` (B, 2): label propagation with pointer jumping, a few passes for molecules."""
    src = torch.cat([bonds[:, 0], bonds[:, 1]])
    dst = torch.cat([bonds[:, 1], bonds[:, 0]])
    label = torch.arange(n, device=bonds.device)
    while True:
        new = label.scatter_reduce(0, src, label[dst], reduce="amin")
        new = new[new]
        if torch.equal(new, label):
            return torch.unique(label, return_inverse=True)[1]
        label = new


def same_tensor(a, b) -> bool:
    """Equal shape, dtype, device and values (None only equals None): what a topology cache is keyed on."""
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))


# Outside training, along a trajectory, the topology is held (graph_mm, mm): a bond once perceived lasts until
# BREAK_SCALE · (R_i + R_j) and no new bond forms, so that MD never sees a bond flicker in and out of the topology
# (its terms vanish or appear and the pair becomes a short-range nonbonded one or back: an energy jump of many eV).
BREAK_SCALE = 1.5

# Largest move of any atom (Å, per Cartesian component) between two calls for the second to be a step of the same
# trajectory (topology held): a 0.5 fs step moves a hydrogen at 1200 K by ~0.03 Å, two frames of a dataset by far more.
HOLD_DISPLACEMENT = 0.25


class HeldBonds:
    """The bonds of each structure of recent calls, for a later call's structure that continues its trajectory.

    A structure continues an earlier one when it has the same atoms in the same order and no atom moved more than
    `HOLD_DISPLACEMENT`. Structures are matched one by one, not batch by batch: a batch of MD copies whose failed
    copies were removed, or whose copies were evaluated one at a time after one of them broke the model, still holds
    each surviving copy's own bonds, and a copy launched across the box (or with non-finite positions, never kept)
    does not make the others' topology perceived afresh. Bonds are kept per structure as sorted local keys
    lo · n + hi (lo < hi, atom indices within the structure, n its size). A structure that no later call continues
    is forgotten after as many calls as the largest call of its trajectory had structures (enough for those to be
    evaluated one at a time), so an evaluation depends on recent calls only; at most ``capacity`` atoms are kept
    besides the last call's."""

    def __init__(self, capacity: int = 65536):
        self.capacity = capacity
        # atoms → (positions (E, n, 3), local keys per entry, calls left (E,) before an entry that no call
        # continues is dropped)
        self.groups: dict[bytes, tuple[np.ndarray, list, np.ndarray]] = {}

    def lookup(self, numbers: np.ndarray, positions: np.ndarray, sizes: np.ndarray) -> list:
        """Per structure of a call (atomic ``numbers`` and ``positions`` of all atoms, structures of ``sizes``
        atoms in order): the local bond keys of the earlier structure it continues, or None (perceive afresh)."""
        out = [None] * len(sizes)
        for atoms, members, x in _grouped(numbers, positions, sizes):
            held = self.groups.get(atoms)
            if held is None:
                continue
            moved = _moved(x, held[0])  # (structures, held entries); inf where anything is not finite
            best = moved.argmin(1)
            for g in np.nonzero(moved[np.arange(len(members)), best] < HOLD_DISPLACEMENT)[0]:
                out[members[g]] = held[1][best[g]]
        return out

    def remember(self, numbers: np.ndarray, positions: np.ndarray, sizes: np.ndarray, keys: list) -> None:
        """Keep the local bond ``keys`` of each structure of this call (as `lookup` takes them)."""
        touched = set()
        for atoms, members, x in _grouped(numbers, positions, sizes):
            finite = np.isfinite(x).all(axis=(1, 2))
            kept_x, kept_keys = x[finite], [keys[s] for s, ok in zip(members, finite) if ok]
            left = np.full(len(kept_keys), len(sizes))
            old = self.groups.pop(atoms, None)
            if old is not None:
                moved = _moved(kept_x, old[0])
                if len(kept_x) and len(old[0]):  # a continued trajectory keeps the lifetime it had
                    continues = moved.min(1) < HOLD_DISPLACEMENT
                    left[continues] = np.maximum(left[continues], old[2][moved.argmin(1)[continues]])
                # older entries that no structure of this call continues, while they last
                stale = np.nonzero((moved >= HOLD_DISPLACEMENT).all(0) & (old[2] > 1))[0]
                kept_x = np.concatenate([kept_x, old[0][stale]])
                kept_keys += [old[1][e] for e in stale]
                left = np.concatenate([left, old[2][stale] - 1])
            room = max(int(finite.sum()), self.capacity // max(x.shape[1], 1))
            self.groups[atoms] = (kept_x[:room], kept_keys[:room], left[:room])
            touched.add(atoms)
        # beyond the capacity: the molecules least recently seen go first, never one of this call
        for atoms in [a for a in self.groups if a not in touched]:
            if sum(g[0].size // 3 for g in self.groups.values()) <= self.capacity:
                break
            del self.groups[atoms]


def _moved(x: np.ndarray, held: np.ndarray) -> np.ndarray:
    """(len(x), len(held)) largest displacement of any atom between each structure of x and each held one (inf for
    non-finite positions)."""
    if len(x) == 0 or len(held) == 0:
        return np.full((len(x), len(held)), np.inf)
    moved = np.abs(x[:, None] - held[None]).max(axis=(2, 3))
    return np.where(np.isfinite(moved), moved, np.inf)


def _grouped(numbers: np.ndarray, positions: np.ndarray, sizes: np.ndarray):
    """(atoms as bytes, structure indices, their positions (G, n, 3)) per kind of structure of a call."""
    sizes = np.asarray(sizes)
    if len(sizes) and (sizes == sizes[0]).all():  # MD copies: one reshape, no loop when all are one molecule
        z = numbers.reshape(len(sizes), -1)
        if (z == z[0]).all():
            yield z[0].tobytes(), list(range(len(sizes))), positions.reshape(len(sizes), -1, 3)
            return
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    kinds: dict[bytes, list] = {}
    for s, (a, n) in enumerate(zip(starts.tolist(), sizes.tolist())):
        kinds.setdefault(numbers[a:a + n].tobytes(), []).append(s)
    for atoms, members in kinds.items():
        yield atoms, members, np.stack([positions[starts[s]:starts[s] + sizes[s]] for s in members])


def _owners(lo: np.ndarray, sizes: np.ndarray):
    """Each pair's structure, its atom index within it, and a span M (> any local key) for keys owner · M + local."""
    sizes = np.asarray(sizes, dtype=np.int64)
    ends = np.cumsum(sizes)
    owner = np.searchsorted(ends, lo, side="right")
    span = int(sizes.max()) ** 2 if len(sizes) else 1
    return owner, (ends - sizes), span


def local_keys(lo: np.ndarray, hi: np.ndarray, sizes: np.ndarray) -> list:
    """Sorted unique local keys lo · n + hi per structure, from bonds given as atom indices of the whole call
    (lo < hi, structures of ``sizes`` atoms in order)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    owner, starts, span = _owners(lo, sizes)
    keys = np.unique(owner * span + (lo - starts[owner]) * sizes[owner] + (hi - starts[owner]))
    cuts = np.searchsorted(keys, np.arange(len(sizes) + 1) * span)
    return [keys[cuts[s]:cuts[s + 1]] - s * span for s in range(len(sizes))]


def held_pairs(held: list, lo: np.ndarray, hi: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs lo < hi (atom indices of the whole call): whether their structure continues a held one, and whether
    the pair is one of its held bonds."""
    sizes = np.asarray(sizes, dtype=np.int64)
    owner, starts, span = _owners(lo, sizes)
    on_step = np.array([h is not None for h in held], dtype=bool)[owner] if len(lo) else np.zeros(0, dtype=bool)
    known = np.concatenate([h + s * span for s, h in enumerate(held) if h is not None] or [np.zeros(0, np.int64)])
    if known.size == 0:
        return on_step, np.zeros(len(lo), dtype=bool)
    key = owner * span + (lo - starts[owner]) * sizes[owner] + (hi - starts[owner])
    return on_step, known[np.searchsorted(known, key).clip(max=known.size - 1)] == key


def is_step(previous, positions: torch.Tensor) -> bool:
    """Whether ``positions`` are a step of the trajectory whose previous call had ``previous`` (None: no such call)."""
    return previous is not None and previous.shape == positions.shape and previous.device == positions.device \
        and bool(((positions - previous.to(positions.dtype)).abs() < HOLD_DISPLACEMENT).all())
