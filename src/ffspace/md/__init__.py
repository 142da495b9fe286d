"""Molecular dynamics: integrators, the simulation loop, reporters, batched copies, and the blow-up and
uncertainty monitors."""

from .integrators import Langevin, MDState, VelocityVerlet, maxwell_boltzmann
from .copies import MoleculeCopies
from .monitor import BlowUpMonitor, UncertaintyMonitor
from .simulation import MDResult, PotentialForces, run_md

__all__ = ["BlowUpMonitor", "Langevin", "MDResult", "MDState", "MoleculeCopies", "PotentialForces",
           "UncertaintyMonitor", "VelocityVerlet", "maxwell_boltzmann", "run_md"]
