"""The files a run writes: atomically, with the permissions the user's umask gives, and never over another run's.

Two rules every writer in ffspace follows:

- `atomic_write` / `atomic_path`: a file is written under a temporary name in its own folder, flushed to disk and
  renamed over the target, so a killed process leaves the old file or the new one, never half of one. The file
  gets the mode a plain ``open(path, "w")`` would give (0644 under the usual umask 022), also when the library
  that writes it would choose another (safetensors writes 0600).
- `claim_folder`: a run marks each output folder it writes into with ``.ffspace-run.json`` (who owns it: a key
  that identifies the run, and the command). A folder owned by another run, or holding files that no ffspace run
  claimed, is refused before anything is written, unless the caller says ``overwrite``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import ConfigError

OWNER_FILE = ".ffspace-run.json"


def is_atomic_temporary(path) -> bool:
    """Whether ``path`` is an `atomic_path` write still in flight (``.NAME.tmp-PID.SUFFIX``): never a result."""
    name = Path(path).name
    return name.startswith(".") and ".tmp-" in name


@contextmanager
def atomic_path(path, fsync: bool = True):
    """Yield a temporary path next to ``path`` for a writer to fill; on success it replaces ``path`` atomically.

    The temporary name keeps the suffix (writers that pick a format by suffix, such as ``np.savez``, still work).
    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # (is_atomic_temporary knows this)
        with open(tmp, "wb"):
            pass  # created by a plain open, so its mode is what the umask gives
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    mode = stat.S_IMODE(os.stat(tmp).st_mode)
    try:
        yield tmp
        os.chmod(tmp, mode)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path, data: bytes | str, fsync: bool = True) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; see `atomic_path`."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json(path, value, fsync: bool = True) -> Path:
    """``value`` as indented JSON, atomically."""
    return atomic_write(path, json.dumps(value, indent=2, default=str), fsync=fsync)


def read_owner(folder) -> dict | None:
    """The ownership record of ``folder`` (None when it has none or it is unreadable)."""
    path = Path(folder) / OWNER_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def claim_folder(folder, key: str, what: str = "output folder", overwrite: bool = False,
                 ours=None) -> Path:
    """Make ``folder`` this run's output folder, identified by ``key``, before anything is written into it.

    Accepted: a folder that does not exist yet or is empty, one already owned by ``key``, and one for which
    ``ours(folder)`` says True (e.g. a run made before ownership records, recognised by its checkpoint).
    Refused with a `ConfigError` that says what to do: ``folder`` being a file, a folder owned by another key, or
    a non-empty folder without an owner — unless ``overwrite`` is set, which hands the folder to this run (the
    caller then replaces the other run's files). Also refused: a folder that cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} {folder} is a file, not a folder: give a folder path (e.g. out=runs/name)")
    owner = read_owner(folder) if folder.is_dir() else None
    if owner is not None and owner.get("key") == key:
        return folder
    if folder.is_dir() and not overwrite:
        others = sorted(p.name for p in folder.iterdir() if p.name != OWNER_FILE)
        if owner is not None:
            raise ConfigError(
                f"{what} {folder} holds the outputs of another run (`{owner.get('command', '?')}`, "
                f"{owner.get('created', '?')}); ffspace never overwrites files it did not write: choose another "
                f"folder, or set overwrite=true to replace that run's files")
        if others and not (ours is not None and ours(folder)):
            shown = ", ".join(others[:6]) + (", ..." if len(others) > 6 else "")
            raise ConfigError(
                f"{what} {folder} already holds files that this run did not write ({shown}); ffspace never "
                f"overwrites them: choose another folder, or set overwrite=true to replace them")
    record = {"key": key, "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv else "",
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "pid": os.getpid()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / OWNER_FILE, record, fsync=False)
    except OSError as exc:
        raise ConfigError(f"cannot create {what} {folder}: {exc.strerror or exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"cannot write to {what} {folder} ({exc}); choose a folder you can write to") from None
    return folder
