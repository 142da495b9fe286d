"""ASE calculator: any ffspace model in ASE's MD, optimizers and tools."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes

from ..data.structure import Structure, matrix_to_voigt, total_charge
from ..potential import Potential


class FFSpaceCalculator(Calculator):
    """``FFSpaceCalculator("model.safetensors")`` or ``FFSpaceCalculator(potential=Potential(model))``.

    Provides energy, free_energy (= energy), forces, stress (periodic cells; ASE sign, Voigt order)
    and per-atom energies. Units are ASE's: eV and Å, which are also ffspace's.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model_path=None, potential: Potential | None = None, dtype: str = "float64",
                 device: str = "cpu", fast: bool | str = "auto", **kwargs):
        """``fast``: the fast inference path (see `Potential`; stress is always eager)."""
        super().__init__(**kwargs)
        if potential is None:
            if model_path is None:
                raise ValueError("give model_path or potential")
            potential = Potential.load(model_path, dtype=dtype, device=device, fast=fast)
        self.potential = potential

    def check_state(self, atoms, tol=1e-15):
        """ASE's changes, plus the total charge (``atoms.info["charge"]`` or the initial charges' sum), which ASE's
        own comparison does not look at: a charge-aware model must recompute when only the charge changed."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and total_charge(atoms) != total_charge(self.atoms) and "charge" not in changes:
            changes.append("charge")
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        structure = Structure.from_ase(self.atoms)
        want_stress = "stress" in properties and bool(self.atoms.pbc.any())
        self.potential.check_charges([structure])
        batch = self.potential.batch([structure])
        out = self.potential.compute(batch, forces=True, stress=want_stress)
        energy = float(out["energy"][0])
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": out["forces"].double().cpu().numpy(),
                        "energies": out["energies"].double().cpu().numpy()}
        if want_stress:
            self.results["stress"] = matrix_to_voigt(out["stress"][0].double().cpu().numpy())
        elif "stress" in properties:
            from ase.calculators.calculator import PropertyNotImplementedError

            raise PropertyNotImplementedError("stress needs a periodic cell")
