"""Compile a kernel of this package with the local C compiler, cache it, load it with ctypes.

The shared library is cached under ``$FFSPACE_CACHE/kernels`` (default ``~/.cache/ffspace/kernels``), named by a
hash of the source, the compiler's version and the flags: a changed source or compiler builds anew, a second process
reuses it (written to a temporary name and renamed, so concurrent builds never load a half-written file). Flags are
tried from the fastest down (``-march=native`` and OpenMP may be missing, e.g. on Apple clang); a machine without a C
compiler raises `KernelUnavailable`, and callers fall back to their torch code.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-fopenmp"], ["-O3", "-fopenmp-simd"], ["-O3"])
_LOADED: dict[str, ctypes.CDLL] = {}


class KernelUnavailable(RuntimeError):
    """The kernel could not be built or loaded here (no compiler, a compiler error): use the torch path."""


def cache_dir() -> Path:
    root = os.environ.get("FFSPACE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "ffspace")
    return Path(root) / "kernels"


def _compiler() -> tuple[str, str]:
    cc = os.environ.get("CC", "gcc")
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise KernelUnavailable(f"no C compiler ({cc!r}: {exc}); set CC to one") from None
    return cc, version.splitlines()[0] if version else cc


def load_kernel(name: str) -> ctypes.CDLL:
    """The compiled ``<name>.c`` of this package (built on first use, then from the cache)."""
    if name in _LOADED:
        return _LOADED[name]
    source = Path(__file__).with_name(f"{name}.c")
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise KernelUnavailable(f"the kernel source {source} is missing ({exc})") from None
    cc, version = _compiler()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(text + version.encode() + " ".join(flags).encode()).hexdigest()[:16]
        target = cache_dir() / f"{name}-{key}.so"
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
                os.close(fd)
            except OSError as exc:
                raise KernelUnavailable(f"cannot write the kernel cache {target.parent} ({exc}); set FFSPACE_CACHE "
                                        "to a writable folder") from None
            cmd = [cc, *flags, "-std=c11", "-shared", "-fPIC", "-o", tmp, str(source), "-lm"]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except (OSError, subprocess.SubprocessError) as exc:
                done = None
                errors.append(f"{' '.join(flags)}: {exc}")
            if done is None or done.returncode != 0:
                if done is not None:
                    lines = (done.stderr or done.stdout).strip().splitlines()
                    first = next((x for x in lines if "error" in x), lines[0] if lines else "failed")
                    errors.append(f"{' '.join(flags)}: {first.strip()[:300]}")
                os.unlink(tmp)
                continue
            os.replace(tmp, target)
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as exc:
            errors.append(f"{target}: {exc}")
            continue
        _LOADED[name] = lib
        return lib
    raise KernelUnavailable(f"could not build the {name} kernel with {cc} ({'; '.join(errors)})")
