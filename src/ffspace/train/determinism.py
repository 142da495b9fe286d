"""Reproducible CPU training: torch's deterministic algorithms, switched on only while a fit runs.

On CPU, the backward pass of a gather ``x[j]`` on float32 tensors of at least 32 768 elements, with more than one
thread, sums into shared rows with parallel atomic adds, so two identical runs differ in the last bits from the
first step, and the difference grows (measured: PaiNN on batches of 7 ethanol frames, MACE on any batch, 2
threads). ``torch.use_deterministic_algorithms(True)`` makes that sum serial; no op of any ffspace family
refuses it on CPU and the step cost did not change measurably (PaiNN 13.7 → 13.2 ms, MACE 49 → 48 ms).

The setting is process-wide, so `deterministic_training` turns it on for the duration of a fit only and restores
the caller's setting (and its ``warn_only``) when the last concurrent fit of the process ends, whether it returns
or raises. Not on CUDA: cuBLAS would need CUBLAS_WORKSPACE_CONFIG and some CUDA ops refuse the mode.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

_LOCK = threading.Lock()
_DEPTH = 0
_SAVED = (False, False)


@contextmanager
def deterministic_training(device):
    global _DEPTH, _SAVED
    if torch.device(device).type != "cpu":
        yield
        return
    with _LOCK:
        if _DEPTH == 0:
            _SAVED = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled())
            if not _SAVED[0] or _SAVED[1]:
                torch.use_deterministic_algorithms(True)
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            _DEPTH -= 1
            if _DEPTH == 0:
                torch.use_deterministic_algorithms(_SAVED[0], warn_only=_SAVED[1])
