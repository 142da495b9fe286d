"""`Dataset`: an ordered collection of structures with seeded splits."""

from __future__ import annotations

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

    def split(self, sizes: Sequence[int | float], seed: int = 0) -> list["Dataset"]:
        """Seeded random split. ``sizes`` are counts or fractions; one entry may be -1 for 'the rest'."""
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
        order = np.random.default_rng(seed).permutation(n)
        out, start = [], 0
        for c in counts:
            out.append(self[order[start:start + c]])
            start += c
        return out
