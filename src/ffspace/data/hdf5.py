"""Structures in a chunked HDF5 file (h5py), streamed: a training set larger than memory.

Layout (format ``ffspace-structures``, version 1): per-atom arrays concatenated over structures (``numbers``
uint8, ``positions`` and ``forces`` float64 Å and eV/Å), per-structure arrays (``offsets`` into the atom arrays,
``energy`` eV, ``cell`` Å rows, ``pbc``, ``stress`` eV/Å³ ASE sign, ``has_*`` masks, ``frame``, ``info`` as JSON),
all chunked and compressed (lzf). Structures are read in blocks of ``block_structures`` consecutive frames, the
unit of the reader's least-recently-used cache, whose size is capped (``cache_mb``): what stays in memory is
the atom numbers and offsets (9 bytes per atom) and at most the cache.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .structure import Structure
from .writers import _plain

FORMAT, VERSION = "ffspace-structures", 1
# The per-structure arrays of a block besides ``info`` (JSON strings).
FRAME_ARRAYS = ("energy", "cell", "pbc", "stress", "has_energy", "has_forces", "has_stress", "frame")


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("HDF5 structure sets need h5py: pip install 'ffspace[hdf5]' (or h5py)") from None
    return h5py


def write_hdf5(path, structures: Iterable[Structure], block_structures: int = 256, name: str | None = None) -> int:
    """Write ``structures`` (any iterable: a generator streams a set larger than memory) to a new HDF5 file at
    ``path``, appending one block at a time; returns the number written. The file is complete only when this
    returns (written to ``path.partial`` first, then renamed)."""
    h5py = _h5py()
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    n = 0
    with h5py.File(partial, "w") as f:
        f.attrs.update(format=FORMAT, version=VERSION, block_structures=block_structures,
                       name=name or path.stem, energy_unit="eV", length_unit="angstrom")
        atom_chunk = max(64, block_structures * 16)
        per_atom = {"numbers": ((0,), np.uint8), "positions": ((0, 3), np.float64), "forces": ((0, 3), np.float64)}
        per_frame = {"energy": ((0,), np.float64), "cell": ((0, 3, 3), np.float64), "pbc": ((0, 3), bool),
                     "stress": ((0, 3, 3), np.float64), "has_energy": ((0,), bool), "has_forces": ((0,), bool),
                     "has_stress": ((0,), bool), "frame": ((0,), np.int64), "offsets": ((0,), np.int64)}
        for key, (shape, dtype) in per_atom.items():
            f.create_dataset(key, shape, dtype, maxshape=(None, *shape[1:]), chunks=(atom_chunk, *shape[1:]),
                             compression="lzf")
        for key, (shape, dtype) in per_frame.items():
            f.create_dataset(key, shape, dtype, maxshape=(None, *shape[1:]), chunks=(block_structures, *shape[1:]),
                             compression="lzf")
        f.create_dataset("info", (0,), h5py.string_dtype(), maxshape=(None,), chunks=(block_structures,))
        f["offsets"].resize((1,))
        f["offsets"][0] = 0
        sources = []
        block = []
        for s in structures:
            block.append(s)
            if len(block) == block_structures:
                n += _append(f, block, sources)
                block = []
        if block:
            n += _append(f, block, sources)
        f.attrs["sources"] = json.dumps(sorted(set(sources)))
    os.replace(partial, path)
    return n


def _append(f, block: list[Structure], sources: list) -> int:
    a0, k0 = int(f["offsets"][-1]), len(f["energy"])
    counts = np.array([s.n_atoms for s in block])
    atoms = {"numbers": np.concatenate([s.numbers for s in block]).astype(np.uint8),
             "positions": np.concatenate([s.positions for s in block]),
             "forces": np.concatenate([np.zeros((s.n_atoms, 3)) if s.forces is None else s.forces for s in block])}
    frames = {"energy": np.array([np.nan if s.energy is None else s.energy for s in block]),
              "cell": np.stack([s.cell for s in block]), "pbc": np.stack([s.pbc for s in block]),
              "stress": np.stack([np.zeros((3, 3)) if s.stress is None else s.stress for s in block]),
              "has_energy": np.array([s.energy is not None for s in block]),
              "has_forces": np.array([s.forces is not None for s in block]),
              "has_stress": np.array([s.stress is not None for s in block]),
              "frame": np.array([-1 if s.frame is None else s.frame for s in block], dtype=np.int64),
              "info": np.array([json.dumps(s.info, default=_plain) for s in block], dtype=object)}
    for key, values in atoms.items():
        f[key].resize((a0 + len(values), *f[key].shape[1:]))
        f[key][a0:] = values
    for key, values in frames.items():
        f[key].resize((k0 + len(block), *f[key].shape[1:]))
        f[key][k0:] = values
    f["offsets"].resize((k0 + len(block) + 1,))
    f["offsets"][k0 + 1:] = a0 + np.cumsum(counts)
    sources.extend(s.source for s in block if s.source)
    return len(block)


def _check_layout(f, path) -> None:
    """Every attribute and dataset the reader uses is there, with lengths that agree with the offsets: a file
    written by hand or cut short is a clear error naming the field, never a KeyError or a silent misread."""
    for name in ("block_structures", "name"):
        if name not in f.attrs:
            raise DataError("the file has no such attribute", file=str(path), field=name)
    for name in ("offsets", "numbers", "positions", "forces", "info", *FRAME_ARRAYS):
        if name not in f:
            raise DataError("the file has no such dataset", file=str(path), field=name)
    offsets = f["offsets"]
    n = len(offsets) - 1
    atoms = int(offsets[-1]) if n >= 0 else 0
    if n < 0 or int(offsets[0]) != 0 or (np.diff(offsets[:]) < 0).any():
        raise DataError("the offsets must start at 0 and never decrease (one more entry than structures)",
                        file=str(path), field="offsets")
    if int(f.attrs["block_structures"]) < 1:
        raise DataError("block_structures must be at least 1", file=str(path), field="block_structures")
    for name in ("numbers", "positions", "forces"):
        if len(f[name]) != atoms:
            raise DataError(f"{len(f[name])} rows, but the offsets count {atoms} atoms", file=str(path), field=name)
    for name in ("info", *FRAME_ARRAYS):
        if len(f[name]) != n:
            raise DataError(f"{len(f[name])} rows, but the offsets count {n} structures", file=str(path),
                            field=name)


class _Store:
    """The open file (reopened in a forked or spawned process), its index arrays and the block cache."""

    def __init__(self, path, cache_mb: float):
        h5py = _h5py()
        self.path = Path(path)
        self.cache_bytes = int(cache_mb * 2**20)
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise DataError(f"not an ffspace structures file (format attribute "
                                    f"{f.attrs.get('format')!r}, expected {FORMAT!r})", file=str(self.path))
                if "version" not in f.attrs:
                    raise DataError("the file has no such attribute", file=str(self.path), field="version")
                if int(f.attrs["version"]) > VERSION:  # (before the layout: a newer one may differ)
                    raise DataError(f"written by a newer ffspace (format version {int(f.attrs['version'])})",
                                    file=str(self.path))
                _check_layout(f, self.path)
                self.block = int(f.attrs["block_structures"])
                self.name = str(f.attrs["name"])
                self.offsets = f["offsets"][:]
                self.numbers = f["numbers"][:]
                self._sizes = self._block_sizes(f)
        except OSError as exc:
            raise DataError(f"cannot read the HDF5 file: {exc}", file=str(self.path)) from None
        self.n = len(self.offsets) - 1
        self._file, self._pid = None, None
        self._cache: OrderedDict[int, dict] = OrderedDict()
        self.cached_bytes = self.peak_cached_bytes = self.block_reads = 0

    def _block_sizes(self, f) -> np.ndarray:
        """Each block's bytes in the cache, exactly, from the file alone (the info column read once, in whole blocks
        of about 64k strings): the epochs' read order (`HDF5Dataset.epoch_order`) depends on them, so it must not depend on what
        a process happened to read before."""
        n = len(self.offsets) - 1
        per_atom = sum(f[k].dtype.itemsize * int(np.prod(f[k].shape[1:])) for k in ("positions", "forces"))
        per_frame = sum(f[k].dtype.itemsize * int(np.prod(f[k].shape[1:])) for k in FRAME_ARRAYS)
        info, column = np.zeros(n, dtype=np.int64), f["info"]
        step = self.block * max(1, 65536 // self.block)  # whole blocks, ~64k strings per read
        for k0 in range(0, n, step):
            info[k0:k0 + step] = [len(x) for x in column[k0:min(n, k0 + step)]]
        starts = np.arange(0, n, self.block)
        ends = np.minimum(starts + self.block, n)
        return ((self.offsets[ends] - self.offsets[starts]) * per_atom + (ends - starts) * per_frame
                + np.add.reduceat(info, starts)).astype(np.int64) if n else np.zeros(0, dtype=np.int64)

    @property
    def data_bytes(self) -> int:
        """What the whole set takes in memory as blocks (positions, forces, per-structure arrays, info strings)."""
        return int(self._sizes.sum())

    def file(self):
        h5py = _h5py()
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def block_bytes(self, b: int) -> int:
        """What block ``b`` takes in the cache (positions and forces, per-structure arrays, info strings)."""
        return int(self._sizes[b])

    def order_key(self) -> dict:
        """What the epochs' read order depends on beyond the seed (`HDF5Dataset.epoch_order`): the training
        fingerprint carries it, so a run resumed with another cache size is refused instead of drifting."""
        fits = self.blocks_in_cache() * self.block >= self.n
        return {"block_structures": self.block, "cache_bytes": "whole set" if fits else self.cache_bytes}

    def blocks_in_cache(self) -> int:
        """How many blocks of the average size fit the cache (at least one)."""
        per_block = self.data_bytes / max(1, -(-self.n // self.block))
        return max(1, int(self.cache_bytes // max(per_block, 1)))

    def _load(self, b: int) -> dict:
        if b in self._cache:
            self._cache.move_to_end(b)
            return self._cache[b]
        f = self.file()
        k0, k1 = b * self.block, min(self.n, (b + 1) * self.block)
        a0, a1 = int(self.offsets[k0]), int(self.offsets[k1])
        arrays = {key: f[key][a0:a1] for key in ("positions", "forces")}
        arrays.update({key: f[key][k0:k1] for key in (*FRAME_ARRAYS, "info")})
        size = self.block_bytes(b)
        self.block_reads += 1
        self._cache[b] = arrays
        self.cached_bytes += size
        arrays["_bytes"] = size
        while len(self._cache) > 1 and self.cached_bytes > self.cache_bytes:
            _, old = self._cache.popitem(last=False)
            self.cached_bytes -= old["_bytes"]
        self.peak_cached_bytes = max(self.peak_cached_bytes, self.cached_bytes)
        return arrays

    def structure(self, k: int) -> Structure:
        b = k // self.block
        arrays = self._load(b)
        i = k - b * self.block
        base = int(self.offsets[b * self.block])
        a0, a1 = int(self.offsets[k]) - base, int(self.offsets[k + 1]) - base
        info = arrays["info"][i]
        return Structure(numbers=self.numbers[a0 + base:a1 + base], positions=arrays["positions"][a0:a1],
                         cell=arrays["cell"][i], pbc=arrays["pbc"][i],
                         energy=float(arrays["energy"][i]) if arrays["has_energy"][i] else None,
                         forces=arrays["forces"][a0:a1] if arrays["has_forces"][i] else None,
                         stress=arrays["stress"][i] if arrays["has_stress"][i] else None,
                         info=json.loads(info.decode() if isinstance(info, bytes) else info),
                         source=str(self.path), frame=k)


class _Frames:
    """The structures of a view, read on access (a sequence, never a list in memory)."""

    def __init__(self, store: _Store, indices: np.ndarray):
        self.store, self.indices = store, indices

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, k):
        return self.store.structure(int(self.indices[k]))

    def __iter__(self):
        for k in self.indices:
            yield self.store.structure(int(k))


class HDF5Dataset(Dataset):
    """A `Dataset` whose structures stay on disk: indexing reads a block through a capped cache; slices and
    index lists (splits) are views on the same file. ``frame`` of a structure is its index in the file."""

    def __init__(self, path, cache_mb: float = 256.0, indices=None, name: str | None = None, _store=None):
        if cache_mb <= 0:
            raise DataError(f"cache_mb must be positive, got {cache_mb}", file=str(path))
        self._store = _store or _Store(path, cache_mb)
        self.indices = np.arange(self._store.n) if indices is None else np.asarray(indices, dtype=np.int64)
        self.structures = _Frames(self._store, self.indices)
        self.name = name or str(path)
        self.label_fields = {}

    @property
    def store(self) -> _Store:
        return self._store

    def __getitem__(self, index):
        if isinstance(index, slice) or isinstance(index, (list, np.ndarray)):
            return HDF5Dataset(self._store.path, indices=self.indices[index], name=self.name, _store=self._store)
        return self.structures[index]

    def __repr__(self) -> str:
        return f"HDF5Dataset({self.name!r}, {len(self)} structures)"

    def in_file_order(self) -> "HDF5Dataset":
        """The same structures in the order of the file: a pass over it reads each block once. (Splits keep
        `Dataset.split`'s seeded order, so that a prefix of a part is a random sample; the trainer and the model
        set-up, whose passes do not depend on the order, read this view.)"""
        return HDF5Dataset(self._store.path, indices=np.sort(self.indices), name=self.name, _store=self._store)

    @property
    def elements(self) -> list[int]:
        store = self._store
        if len(self.indices) == store.n:
            return np.unique(store.numbers).astype(int).tolist()
        starts, counts = store.offsets[self.indices], np.diff(store.offsets)[self.indices]
        # the atom indices of the view's structures, without a loop over them
        atoms = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        return np.unique(store.numbers[atoms]).astype(int).tolist()

    def info_values(self, key: str) -> list:
        """``info[key]`` of every structure of the view, read from the file's ``info`` column a block at a time
        (not through the cache: no positions or forces are read)."""
        store = self._store
        f = store.file()
        order = np.argsort(self.indices, kind="stable")
        wanted = np.sort(self.indices)
        values: list = [None] * len(self.indices)
        first = 0
        for b in np.unique(wanted // store.block):
            k0 = int(b) * store.block
            last = int(np.searchsorted(wanted, k0 + store.block))
            column = f["info"][k0:min(store.n, k0 + store.block)]
            for position, k in zip(order[first:last], wanted[first:last]):
                raw = column[int(k) - k0]
                info = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                if key not in info:
                    raise DataError(f"no {key!r} in the structure's info (needed to split by {key})",
                                    file=str(store.path), frame=int(k), field=key)
                values[position] = info[key]
            first = last
        return values

    def n_atoms(self, k: int) -> int:
        """Atoms of structure ``k`` of this view, without reading its block."""
        i = int(self.indices[k])
        return int(self._store.offsets[i + 1] - self._store.offsets[i])

    def order_key(self) -> dict:
        """What `epoch_order` depends on beyond the generator (`_Store.order_key`)."""
        return self._store.order_key()

    def epoch_order(self, rng: np.random.Generator) -> np.ndarray:
        """An order for one epoch that reads every block once: the blocks in a random order, and the structures
        of each window of blocks that fits the cache shuffled together. When the whole view fits the cache this
        is a plain permutation (the order an in-memory `Dataset` gets from the same generator)."""
        store = self._store
        if store.blocks_in_cache() * store.block >= store.n:
            return rng.permutation(len(self))
        by_block: dict[int, list[int]] = {}
        for position, k in enumerate(self.indices):
            by_block.setdefault(int(k) // store.block, []).append(position)
        blocks = list(by_block)
        blocks = [blocks[b] for b in rng.permutation(len(blocks))]
        # Windows of consecutive blocks (in the shuffled order) whose real sizes fit the cache together: blocks of
        # large structures make smaller windows, so no block is read twice in an epoch.
        windows, current, size = [], [], 0
        for b in blocks:
            need = store.block_bytes(b)
            if current and size + need > store.cache_bytes:
                windows.append(current)
                current, size = [], 0
            current.append(b)
            size += need
        windows.append(current)
        order = []
        for window in windows:
            members = np.concatenate([by_block[b] for b in window])
            order.append(members[rng.permutation(len(members))])
        return np.concatenate(order)


def read_hdf5(path, cache_mb: float = 256.0, required: tuple[str, ...] = ()) -> HDF5Dataset:
    """Open an ffspace HDF5 structures file (`write_hdf5`) for streaming. ``required``: labels (``energy``,
    ``forces``, ``stress``) every structure must have; the first one without is an error naming it (by default
    none: a file may hold unlabelled structures, and training checks what it needs)."""
    if not Path(path).is_file():
        raise DataError("no such file", file=str(path))
    unknown = sorted(set(required) - {"energy", "forces", "stress"})
    if unknown:
        raise DataError(f"required labels must be among energy, forces, stress; got {unknown}", file=str(path))
    dataset = HDF5Dataset(path, cache_mb=cache_mb)
    if required:
        with _h5py().File(dataset.store.path, "r") as f:
            for name in required:
                missing = np.flatnonzero(~f[f"has_{name}"][:].astype(bool))
                if len(missing):
                    raise DataError(f"no {name} label ({len(missing)} structure(s) without one)", file=str(path),
                                    frame=int(missing[0]), field=name)
    return dataset
