"""Molecular dynamics: integrators, the simulation loop, reporters and the blow-up monitor."""

from .integrators import Langevin, MDState, VelocityVerlet, maxwell_boltzmann
from .monitor import BlowUpMonitor
from .simulation import MDResult, PotentialForces, run_md

__all__ = ["BlowUpMonitor", "Langevin", "MDResult", "MDState", "PotentialForces", "VelocityVerlet",
           "maxwell_boltzmann", "run_md"]
