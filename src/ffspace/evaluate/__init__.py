"""Metrics, parity plots and (later) speed, memory and stability benchmarks."""

from .metrics import error_metrics, format_metrics, predict

__all__ = ["error_metrics", "format_metrics", "predict"]
