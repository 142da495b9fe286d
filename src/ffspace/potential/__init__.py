"""Energy, forces and stress from any model; model packages (safetensors + JSON)."""

from .package import load_package, read_metadata, save_package
from .potential import Potential, torch_device, torch_dtype

__all__ = ["Potential", "load_package", "read_metadata", "save_package", "torch_device", "torch_dtype"]
