"""`Dataset`: an ordered collection of structures with seeded splits."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import numpy as np

from ..errors import DataError
from .structure import Structure


class Dataset(Sequence):
    """A list of `Structure` with a name (usually the file it came from)."""

    def __init__(self, structures: Iterable[Structure], name: str = "dataset", label_fields: dict | None = None):
        self.structures = list(structures)
        self.name = name
        # The file's names of the energy and forces labels (for messages about them); empty: "energy", "forces".
        self.label_fields = dict(label_fields or {})

    def __len__(self) -> int:
        return len(self.structures)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Dataset(self.structures[index], self.name, self.label_fields)
        if isinstance(index, (list, np.ndarray)):
            return Dataset([self.structures[int(k)] for k in index], self.name, self.label_fields)
        return self.structures[index]

    def __add__(self, other: "Dataset") -> "Dataset":
        return Dataset(list(self.structures) + list(other), f"{self.name}+{getattr(other, 'name', 'dataset')}")

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, {len(self)} structures)"

    @property
    def elements(self) -> list[int]:
        return sorted(set(np.concatenate([s.numbers for s in self.structures]).tolist())) if self else []

    def require_nonempty(self) -> "Dataset":
        if not self.structures:
            raise DataError("the dataset is empty (no structures)", file=self.name)
        return self

    def require_labels(self, energy=True, forces=True, stress=False) -> "Dataset":
        """Raise a `DataError` at the first structure missing a label the caller needs."""
        self.require_nonempty()
        for s in self.structures:
            for name, need in (("energy", energy), ("forces", forces), ("stress", stress)):
                if need and getattr(s, name) is None:
                    raise DataError(f"no {name} label (needed for training/evaluation)",
                                    file=s.source or self.name, frame=s.frame, field=name)
        return self

    def info_values(self, key: str) -> list:
        """The value of ``info[key]`` of every structure, in order; a structure without it is an error naming it."""
        out = []
        for k, s in enumerate(self.structures):
            if key not in s.info:
                raise DataError(f"no {key!r} in the structure's info (needed to split by {key})",
                                file=s.source or self.name, frame=s.frame if s.frame is not None else k, field=key)
            out.append(s.info[key])
        return out

    def split(self, sizes: Sequence[int | float], seed: int = 0, groups: Sequence | None = None) -> list["Dataset"]:
        """Seeded random split. ``sizes`` are counts or fractions; one entry may be -1 for 'the rest'. With
        ``groups`` (one value per structure, e.g. its molecule's SMILES) whole groups go to one part each, so a
        part's size is its target rounded up to whole groups."""
        n = len(self)
        if not len(sizes):
            raise ValueError("give at least one split size")
        fractional = [isinstance(x, float) and 0 < x <= 1 for x in sizes]
        counts = [int(round(x * n)) if frac else int(x) for x, frac in zip(sizes, fractional)]
        if counts.count(-1) > 1:
            raise ValueError("at most one split size may be -1")
        # Fractions that add up to at most 1 must fit: undo any rounding up, largest part first.
        if sum(x for x, frac in zip(sizes, fractional) if frac) <= 1 + 1e-9:
            while sum(c for c in counts if c != -1) > n:
                k = max((i for i, frac in enumerate(fractional) if frac and counts[i] > 0), key=lambda i: counts[i],
                        default=None)
                if k is None:
                    break
                counts[k] -= 1
        if -1 in counts:
            counts[counts.index(-1)] = n - sum(c for c in counts if c != -1)
        if sum(counts) > n or min(counts) < 0:
            raise DataError(f"split sizes {list(sizes)} do not fit {n} structures", file=self.name)
        if groups is not None:
            return [self[idx] for idx in _group_parts(groups, counts, sizes, seed, n)]
        order = np.random.default_rng(seed).permutation(n)
        out, start = [], 0
        for c in counts:
            out.append(self[order[start:start + c]])
            start += c
        return out


def _group_parts(groups: Sequence, counts: list[int], sizes: Sequence, seed: int, n: int) -> list[np.ndarray]:
    """Indices of each part of a split that keeps groups whole: the groups in a seeded random order, each to the
    first part (other than the rest, ``-1`` in ``sizes``) still below its target count, what is left to the rest;
    each part's indices shuffled (a prefix of a part is a random sample of it)."""
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group labels for {n} structures")
    members: dict = {}
    for k, g in enumerate(groups):  # (a list or array value, from JSON, is keyed by its text)
        members.setdefault(g if isinstance(g, (str, int, float, bool, tuple)) else json.dumps(g, default=str),
                           []).append(k)
    rng = np.random.default_rng(seed)
    keys = list(members)
    rest = list(sizes).index(-1) if -1 in list(sizes) else None
    parts: list[list[int]] = [[] for _ in counts]
    for i in rng.permutation(len(keys)):
        group = members[keys[i]]
        target = next((j for j, c in enumerate(counts) if j != rest and len(parts[j]) < c), rest)
        if target is not None:
            parts[target].extend(group)
    return [np.asarray(p, dtype=np.int64)[rng.permutation(len(p))] for p in parts]
