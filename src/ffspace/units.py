"""The internal unit system and every named conversion.

Inside ffspace everything is eV, Å, fs, amu and elementary charge. Conversions happen only at
the boundary (readers, writers, interfaces), always through the names defined here; the
constants come from ASE (CODATA 2014) so that we agree with the rest of the ecosystem.
"""

from __future__ import annotations

import ase.units as _ase

from .errors import ConfigError

# --- energy -------------------------------------------------------------------------------
eV = 1.0
meV = 1e-3
kcal_per_mol = _ase.kcal / _ase.mol  # eV per (kcal/mol)
kJ_per_mol = _ase.kJ / _ase.mol  # eV per (kJ/mol)
hartree = _ase.Hartree  # eV per Hartree

# --- length -------------------------------------------------------------------------------
angstrom = 1.0
bohr = _ase.Bohr  # Å per bohr
DEBYE_E_A = _ase.Debye  # e·Å per debye (0.20819)
FIELD_AU_V_A = _ase.Hartree / _ase.Bohr  # V/Å per atomic unit of electric field (51.422)
nm = 10.0  # Å per nm

# --- time, mass, temperature --------------------------------------------------------------
fs = 1.0
ps = 1000.0
amu = 1.0
kB = _ase.kB  # eV / K

# ASE's internal time unit is Å·sqrt(amu/eV); one fs is _ase.fs of those units.
# An acceleration F/m in eV/(Å·amu) becomes Å/fs² when multiplied by this factor.
ACCEL_TO_A_PER_FS2 = _ase.fs**2
# A kinetic energy m v² with v in Å/fs and m in amu becomes eV when divided by the same factor.
MV2_TO_EV = 1.0 / _ase.fs**2

# Coulomb constant e²/(4π ε0) in eV·Å.
COULOMB_EV_A = 1.0 / (4.0 * 3.141592653589793 * _ase._eps0) * _ase._e / 1e-10
# A polarizability α in e·Å²/V (= e²Å²/eV) is α·COULOMB_EV_A in Å³ (the polarizability volume α/(4πε₀)).

# Converting *to* eV from named units (multiply a value in that unit by the factor).
ENERGY_TO_EV = {
    "eV": 1.0,
    "meV": meV,
    "kcal/mol": kcal_per_mol,
    "kJ/mol": kJ_per_mol,
    "Hartree": hartree,
    "Ha": hartree,
}
LENGTH_TO_A = {"Å": 1.0, "A": 1.0, "Angstrom": 1.0, "bohr": bohr, "Bohr": bohr, "nm": nm}


def energy_factor(unit: str) -> float:
    """Factor converting an energy in ``unit`` to eV."""
    try:
        return ENERGY_TO_EV[unit]
    except KeyError:
        raise ConfigError(f"unknown energy unit {unit!r}; known: {sorted(ENERGY_TO_EV)}") from None


def length_factor(unit: str) -> float:
    """Factor converting a length in ``unit`` to Å."""
    try:
        return LENGTH_TO_A[unit]
    except KeyError:
        raise ConfigError(f"unknown length unit {unit!r}; known: {sorted(LENGTH_TO_A)}") from None


def ev_to_kcal_per_mol(x):
    return x / kcal_per_mol
