"""The design-space benchmark: accuracy, extrapolation, speed, memory and MD stability of many models
trained under one budget on the same data, as JSON, Markdown and plots (``ffspace bench``).

Imports are lazy so that the timing worker (``python -m ffspace.bench.speed``) starts light.
"""

__all__ = ["BenchConfig", "load_bench_config", "run_bench"]


def __getattr__(name):
    if name in ("BenchConfig", "load_bench_config"):
        from . import config

        return getattr(config, name)
    if name == "run_bench":
        from .runner import run_bench

        return run_bench
    raise AttributeError(name)
