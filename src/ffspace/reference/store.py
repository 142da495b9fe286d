"""A crash-safe label store: append-only JSON lines, each label durable (fsync) before the next starts.

Killing a labeling job loses at most the calculations in flight; rerunning skips every structure
whose key is already stored. The key hashes the labeling method with the geometry, so identical
frames are never labeled twice and a relabel at another level of theory gets new keys.

A store kept in a repository must stay in files of a few MiB: once ``labels.jsonl`` passes ``shard_bytes``
its labels move into the next sealed, gzip-compressed shard (``labels-0000.jsonl.gz``, ...), read back with
it, and ``labels.jsonl`` starts again.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..data.structure import VECTOR_INFO, Structure
from ..errors import DataError
from ..outputs import atomic_path

SHARD_BYTES = 4 << 20  # uncompressed: a sealed shard (gzip) is several times smaller, far under a 5 MiB file limit


def structure_key(structure: Structure, method: dict) -> str:
    """Hash of the method settings and the geometry (positions rounded to 1e-6 Å)."""
    h = hashlib.sha256(json.dumps(method, sort_keys=True, default=str).encode())
    h.update(structure.numbers.astype(np.int64).tobytes())
    h.update(np.round(structure.positions, 6).astype(np.float64).tobytes())
    h.update(np.round(structure.cell, 6).astype(np.float64).tobytes())
    h.update(structure.pbc.astype(np.uint8).tobytes())
    field = structure.info.get("field")
    if field is not None and np.any(field):  # the same geometry in another field is another label
        h.update(b"field" + np.round(np.asarray(field, dtype=np.float64), 9).tobytes())
    return h.hexdigest()[:32]


def _to_record(key: str, s: Structure) -> dict:
    def clean(v):
        return v.item() if isinstance(v, np.generic) else v

    return {"key": key, "numbers": s.numbers.tolist(), "positions": s.positions.tolist(), "cell": s.cell.tolist(),
            "pbc": s.pbc.tolist(), "energy": s.energy,
            "forces": None if s.forces is None else s.forces.tolist(),
            "stress": None if s.stress is None else s.stress.tolist(),
            "info": {k: (np.asarray(v, dtype=float).tolist() if k in VECTOR_INFO else clean(v))
                     for k, v in s.info.items()
                     if k in VECTOR_INFO and v is not None or isinstance(clean(v), (str, int, float, bool))}}


def _from_record(r: dict, source: str, frame: int) -> Structure:
    return Structure(numbers=r["numbers"], positions=r["positions"], cell=r["cell"], pbc=r["pbc"],
                     energy=r["energy"], forces=r["forces"], stress=r["stress"], info=r["info"], source=source,
                     frame=frame)


def _last_line_end(f, chunk: int = 1 << 16) -> int:
    """Offset just after the last newline of an open binary file (0 if it has none), reading backwards."""
    end = f.seek(0, os.SEEK_END)
    while end > 0:
        start = max(0, end - chunk)
        f.seek(start)
        k = f.read(end - start).rfind(b"\n")
        if k >= 0:
            return start + k + 1
        end = start
    return 0


class LabelStore:
    """``labels.jsonl`` (finished labels, with the sealed shards ``labels-*.jsonl.gz``) and ``failures.jsonl``
    (calculations that gave no label) in a folder. ``shard_bytes=None`` never seals."""

    def __init__(self, folder, shard_bytes: int | None = SHARD_BYTES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels_path = self.folder / "labels.jsonl"
        self.failures_path = self.folder / "failures.jsonl"
        self.shard_bytes = shard_bytes
        self.labels: dict[str, dict] = {}
        for shard in self.shards():
            self.labels.update(self._load(shard))
        self._sealed = set(self.labels)
        self.labels.update(self._load(self.labels_path))  # (a crash while sealing may repeat a label: same key)
        self.failures: dict[str, dict] = self._load(self.failures_path)

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob("labels-[0-9][0-9][0-9][0-9].jsonl.gz"))

    @staticmethod
    def _load(path: Path) -> dict:
        out = {}
        if not path.exists():
            return out
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
        lines = data.split(b"\n")
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if k == len(lines) - 1:
                    break  # the process died while writing this line: the label was in flight
                raise DataError("corrupt record (not JSON) in the middle of the store", file=str(path),
                                frame=k, field="line") from None
            out[record["key"]] = record
        return out

    def _append(self, path: Path, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode()
        # A torn final line (a crash mid-write: that record was in flight, `_load` skipped it) is cut off, so
        # it never ends up in the middle of the file, where `_load` would rightly call it corruption.
        if path.exists() and path.stat().st_size:
            with open(path, "r+b") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.truncate(_last_line_end(f))
        with open(path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def __contains__(self, key: str) -> bool:
        return key in self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, key: str, structure: Structure) -> None:
        record = _to_record(key, structure)
        self._append(self.labels_path, record)
        self.labels[key] = record
        if self.shard_bytes and self.labels_path.stat().st_size >= self.shard_bytes:
            self.seal()

    def seal(self) -> Path | None:
        """Move the labels of ``labels.jsonl`` into the next compressed shard and start it empty; the new shard,
        or None when there was nothing to seal. The shard is written whole (temporary file, fsync, rename) before
        ``labels.jsonl`` goes, so a crash in between leaves a label in both places, never in neither, and the
        next seal leaves out what a shard already holds."""
        fresh = [r for k, r in self._load(self.labels_path).items() if k not in self._sealed]
        if fresh:
            shards = self.shards()
            path = self.folder / f"labels-{int(shards[-1].name[7:11]) + 1 if shards else 0:04d}.jsonl.gz"
            with atomic_path(path) as tmp, gzip.GzipFile(tmp, "wb", mtime=0) as f:  # (mtime 0: same labels, same bytes)
                f.write(b"".join((json.dumps(r) + "\n").encode() for r in fresh))
            self._sealed.update(r["key"] for r in fresh)
        self.labels_path.unlink(missing_ok=True)
        return path if fresh else None

    def add_failure(self, key: str, reason: str, details: dict | None = None) -> None:
        record = {"key": key, "reason": reason, **(details or {})}
        self._append(self.failures_path, record)
        self.failures[key] = record

    def get(self, key: str, frame: int = 0) -> Structure:
        return _from_record(self.labels[key], str(self.labels_path), frame)
