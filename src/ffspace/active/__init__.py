"""Uncertainty and active learning: committees, their calibration, exploration, selection and the
label–train–explore loop (``ffspace active``)."""

from .calibration import calibration, calibration_plot
from .committee import Committee, train_committee
from .explore import explore
from .selection import select

__all__ = ["Committee", "calibration", "calibration_plot", "explore", "select", "train_committee"]
