"""Process-wide settings for applications: the ``ffspace`` command and the timing worker call these at start.
Library code never does (a process-wide setting is the application's choice).

Large systems on CPU: keep freed memory in the process
-----------------------------------------------------
An energy + forces call on thousands of atoms allocates and frees per-edge tensors of hundreds of MB. glibc's
malloc serves an allocation above its mmap threshold (32 MB at most by default) with fresh pages from the kernel
and hands them back on free, so every call page-faults and zeroes its whole working memory again. On this
project's 2-core machine that was 38-43 % of the CPU time of a MACE call on 5184-24 000 water atoms, and the
calls took twice as long (docs/benchmarks.md, "How we got here"). `keep_freed_memory` raises the
mmap and trim thresholds, so freed blocks stay in the heap and the next call reuses them. The price: resident
memory stays at its high-water mark instead of shrinking between calls, and the peak grows too (PaiNN-128 on
24 000 water atoms: 8.9 against 3.8 GB; heap fragmentation is the likely cause). Library users can call it
themselves, or set ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the environment, or preload
jemalloc/tcmalloc.
"""

from __future__ import annotations

import ctypes
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters (malloc.h)
_KEPT = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the kernel (see the module
    docstring for why). True when the setting is in effect; False where the C library is not glibc (macOS,
    musl, Windows: nothing is changed)."""
    global _KEPT
    if _KEPT:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    # A threshold above any allocation sends every block to the heap; glibc versions that cap the mmap
    # threshold (32 MB) refuse it, and then mmap is switched off instead (the same effect for large blocks).
    heap = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(2**30))) or bool(libc.mallopt(_M_MMAP_MAX, 0))
    trim = bool(libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)))
    _KEPT = heap and trim
    return _KEPT


def freed_memory_kept() -> bool:
    """Whether `keep_freed_memory` is in effect in this process."""
    return _KEPT
