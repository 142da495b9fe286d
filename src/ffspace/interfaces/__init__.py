"""Boundaries to other engines (ASE now; OpenMM and TorchSim later). Units convert only here."""

from .ase_calculator import FFSpaceCalculator

__all__ = ["FFSpaceCalculator"]
