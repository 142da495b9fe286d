"""Structures, datasets, readers, writers and statistics (float64 numpy, eV/Å)."""

from .dataset import Dataset
from .hdf5 import HDF5Dataset, read_hdf5, write_hdf5
from .readers import read_ase_db, read_dataset, read_deepmd, read_extxyz, read_md17_npz
from .stats import reference_energies, statistics
from .structure import Structure
from .writers import write_extxyz

__all__ = ["Dataset", "HDF5Dataset", "Structure", "read_ase_db", "read_dataset", "read_deepmd", "read_extxyz",
           "read_hdf5", "read_md17_npz", "reference_energies", "statistics", "write_extxyz", "write_hdf5"]
