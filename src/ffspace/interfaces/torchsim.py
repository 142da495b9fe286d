"""Any ffspace model as a TorchSim model (``torch-sim-atomistic``): many systems batched in TorchSim's integrators.

TorchSim works in eV, Å, amu and ps-free "metal" units like ffspace, so nothing converts. Its state holds all
systems as one set of atoms (``system_idx`` says which system each atom is in), which is what an ffspace `Batch`
is, so one model call serves every system: the neighbour lists come from ffspace (vesin), the energies, forces and
stress from `Potential.compute` (the fast path's kernels where the family has them).

    import torch_sim as ts
    from ffspace.interfaces.torchsim import TorchSimModel
    model = TorchSimModel("model.safetensors", dtype="float64")
    final = ts.integrate(system=[atoms_a, atoms_b], model=model, integrator=ts.nvt_langevin,
                         n_steps=1000, timestep=0.0005, temperature=300)   # timestep in ps
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.structure import Structure
from ..errors import ConfigError
from ..graph.batch import collate, graph_of
from ..potential import Potential
from ..potential.potential import torch_dtype


def _model_interface():
    try:
        from torch_sim.models.interface import ModelInterface
    except ImportError:
        raise ImportError("the TorchSim interface needs torch-sim: pip install torch-sim-atomistic") from None
    return ModelInterface


def _structures(state) -> list[Structure]:
    """One ffspace `Structure` per system of a TorchSim state (positions and cells copied to float64 numpy)."""
    positions = state.positions.detach().cpu().double().numpy()
    numbers = state.atomic_numbers.detach().cpu().numpy()
    cells = state.row_vector_cell.detach().cpu().double().numpy()
    system = state.system_idx.detach().cpu().numpy()
    pbc = np.broadcast_to(np.asarray(state.pbc.cpu() if torch.is_tensor(state.pbc) else state.pbc, dtype=bool), 3)
    out = []
    for g in range(state.n_systems):
        mask = system == g
        cell = cells[g] if pbc.any() else np.zeros((3, 3))
        out.append(Structure(numbers=numbers[mask], positions=positions[mask], cell=cell, pbc=pbc.copy()))
    return out


def TorchSimModel(model, dtype="float64", device="cpu", compute_stress: bool = False, charge: float = 0.0):
    """A TorchSim ``ModelInterface`` around ``model`` (a package path, ``builtin:NAME`` or a `Potential`).

    Built by a function so that importing ffspace never needs torch-sim; the class is made on first use."""
    return _torchsim_class()(model, dtype=dtype, device=device, compute_stress=compute_stress, charge=charge)


_CLASS = None


def _torchsim_class():
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    ModelInterface = _model_interface()

    class FFSpaceTorchSimModel(ModelInterface):
        """An ffspace `Potential` behind TorchSim's model interface: energy (n_systems,), forces (n_atoms, 3) and,
        with ``compute_stress``, stress (n_systems, 3, 3) in eV/Å³ (ASE's sign: σ = (1/V) ∂E/∂ε)."""

        def __init__(self, model, dtype="float64", device="cpu", compute_stress=False, charge=0.0):
            super().__init__()
            dtype = torch_dtype(dtype)
            self.potential = model if isinstance(model, Potential) else Potential.load(model, dtype=dtype,
                                                                                       device=device)
            if self.potential.dtype != dtype:
                raise ConfigError(f"the Potential is {self.potential.dtype}, the TorchSim model asked for {dtype}")
            self._device, self._dtype = self.potential.device, dtype
            self._compute_forces, self._compute_stress = True, bool(compute_stress)
            self.potential.check_total_charge(charge)
            self.charge = float(charge)

        def forward(self, state, **kwargs) -> dict[str, torch.Tensor]:
            if isinstance(state, dict):
                raise ConfigError("pass a torch_sim SimState (a dict of tensors has no masses or pbc)")
            if state.atomic_numbers is None:
                raise ConfigError("the TorchSim state has no atomic_numbers; the ffspace model needs them")
            structures = _structures(state)
            if self.charge:
                for s in structures:
                    s.info["charge"] = self.charge
            self.potential.check_elements(structures)
            batch = collate([graph_of(s, self.potential.cutoff) for s in structures], dtype=self._dtype,
                            device=self._device, labels=False)
            out = self.potential.compute(batch, forces=True, stress=self._compute_stress)
            result = {"energy": out["energy"].to(self._dtype), "forces": out["forces"]}
            if self._compute_stress:
                result["stress"] = out["stress"]
            return result

    _CLASS = FFSpaceTorchSimModel
    return _CLASS
