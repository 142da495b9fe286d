"""Progress of long work: a live tqdm bar on a terminal, plain log lines everywhere else.

A tqdm bar written to a pipe or a file (CI logs, ``nohup``, a batch scheduler) becomes thousands of
carriage-return updates in one line. Off a terminal, `progress` therefore prints one complete line every
``log_every_s`` seconds (and one at the end), or nothing at all when ``log_every_s`` is None (work that logs
its own summary lines, such as the trainer's one line per epoch).
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress(iterable=None, *, total: int | None = None, desc: str = "", enabled: bool = True, initial: int = 0,
             unit: str = "it", leave: bool = False, log_every_s: float | None = 30.0):
    """A progress reporter with tqdm's interface (iterate over it, or ``update``/``set_postfix``/``close``)."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if enabled and (stderr_is_terminal() or "ipykernel" in sys.modules):  # a notebook gets tqdm's widget
        return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, leave=leave, file=sys.stderr,
                    dynamic_ncols=True)
    return LineProgress(iterable, total=total, desc=desc, initial=initial, unit=unit,
                        every_s=log_every_s if enabled else None)


class LineProgress:
    """Off a terminal: ``desc: n/total (p %), elapsed, remaining, postfix`` as one line every ``every_s`` seconds
    and at the end; silent when ``every_s`` is None."""

    def __init__(self, iterable=None, total=None, desc="", initial=0, unit="it", every_s: float | None = 30.0):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n, self.every_s, self.postfix = initial, every_s, ""
        self.start = self.last = time.perf_counter()
        self.closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    @staticmethod
    def write(text: str):
        print(text, file=sys.stderr, flush=True)

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def update(self, n: int = 1):
        self.n += n
        now = time.perf_counter()
        if self.every_s is not None and now - self.last >= self.every_s:
            self.last = now
            self._print(now)

    def close(self):
        if not self.closed and self.every_s is not None:
            self._print(time.perf_counter())
        self.closed = True

    def _print(self, now: float):
        elapsed = now - self.start
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        parts.append(f"{elapsed:.0f} s elapsed")
        if self.total and self.n:
            parts.append(f"~{elapsed * (self.total - self.n) / self.n:.0f} s left")
        if self.postfix:
            parts.append(self.postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=sys.stderr, flush=True)
