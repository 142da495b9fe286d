"""A crash-safe label store: append-only JSON lines, each label durable (fsync) before the next starts.

Killing a labeling job loses at most the calculations in flight; rerunning skips every structure
whose key is already stored. The key hashes the labeling method with the geometry, so identical
frames are never labeled twice and a relabel at another level of theory gets new keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..data.structure import VECTOR_INFO, Structure
from ..errors import DataError


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
    """``labels.jsonl`` (finished labels) and ``failures.jsonl`` (calculations that gave no label) in a folder."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels_path = self.folder / "labels.jsonl"
        self.failures_path = self.folder / "failures.jsonl"
        self.labels: dict[str, dict] = self._load(self.labels_path)
        self.failures: dict[str, dict] = self._load(self.failures_path)

    @staticmethod
    def _load(path: Path) -> dict:
        out = {}
        if not path.exists():
            return out
        with open(path, "rb") as f:
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

    def add_failure(self, key: str, reason: str, details: dict | None = None) -> None:
        record = {"key": key, "reason": reason, **(details or {})}
        self._append(self.failures_path, record)
        self.failures[key] = record

    def get(self, key: str, frame: int = 0) -> Structure:
        return _from_record(self.labels[key], str(self.labels_path), frame)
