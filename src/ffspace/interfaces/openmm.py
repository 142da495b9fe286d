"""Export a graph-learned MM model to an OpenMM `System` built from standard forces only.

The graph network runs once, on the molecule's topology; its parameters go into HarmonicBondForce,
HarmonicAngleForce, PeriodicTorsionForce (torsions, and impropers with periodicity 2 and phase π) and
a NonbondedForce without cutoff (1-2 and 1-3 pairs excluded, 1-4 pairs as scaled exceptions). OpenMM
then runs the molecule at classical-MM cost. Energies that are constant for a topology (per-element
reference energies and the model's per-atom energies) cannot live in standard forces: they are
returned as ``energy_offset_eV`` so that OpenMM energy + offset = ffspace energy.

Units convert here and only here: ffspace's eV, Å, rad, e to OpenMM's kJ/mol, nm, rad, e.

    from ffspace.interfaces.openmm import export_openmm
    export = export_openmm("model.safetensors", structure)   # or a Potential, or a model
    export.save("aspirin_system.xml")
    energy_eV, forces_eV_A = export.energy_forces(structure.positions)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import units
from ..errors import ModelPackageError

KJ_PER_MOL_PER_EV = 1.0 / units.kJ_per_mol
NM_PER_A = 1.0 / units.nm


@dataclass
class OpenMMExport:
    """An OpenMM System for one molecule plus what standard forces cannot hold."""

    system: object  # openmm.System
    energy_offset_eV: float
    numbers: np.ndarray
    n_terms: dict

    def save(self, path) -> Path:
        """Write the System as OpenMM XML (``XmlSerializer``); the energy offset goes in a JSON sidecar."""
        import json

        import openmm

        path = Path(path)
        path.write_text(openmm.XmlSerializer.serialize(self.system))
        path.with_suffix(".json").write_text(json.dumps(
            {"energy_offset_eV": self.energy_offset_eV, "numbers": self.numbers.tolist(), "n_terms": self.n_terms,
             "note": "OpenMM energy (kJ/mol) / 96.485 + energy_offset_eV = ffspace energy (eV)"}, indent=2))
        return path

    def context(self, platform: str = "Reference", threads: int | None = None, timestep_fs: float = 0.5,
                positions=None):
        """An OpenMM Context (Verlet integrator) on ``platform``; ``threads`` for the CPU platform; ``positions`` in Å."""
        import openmm

        props = {"Threads": str(threads)} if (threads and platform == "CPU") else {}
        integrator = openmm.VerletIntegrator(timestep_fs / units.ps)  # OpenMM time is in ps
        ctx = openmm.Context(self.system, integrator, openmm.Platform.getPlatformByName(platform), props)
        if positions is not None:
            ctx.setPositions(np.asarray(positions, dtype=np.float64) * NM_PER_A)
        return ctx

    def energy_forces(self, positions, context=None) -> tuple[float, np.ndarray]:
        """Energy (eV, offset included) and forces (eV/Å) from OpenMM at ``positions`` (Å)."""
        ctx = context or self.context()
        ctx.setPositions(np.asarray(positions, dtype=np.float64) * NM_PER_A)
        state = ctx.getState(getEnergy=True, getForces=True)
        e = state.getPotentialEnergy().value_in_unit(_unit().kilojoule_per_mole) / KJ_PER_MOL_PER_EV
        f = np.asarray(state.getForces(asNumpy=True).value_in_unit(_unit().kilojoule_per_mole / _unit().nanometer))
        return e + self.energy_offset_eV, f * NM_PER_A / KJ_PER_MOL_PER_EV


def _unit():
    from openmm import unit

    return unit


def _split_model(model):
    """The GraphMM term and the constant per-element reference energies of a (Sum of) model(s)."""
    from ..models.composite import AtomicReference, Sum
    from ..models.graph_mm import GraphMM

    terms = list(model.terms) if isinstance(model, Sum) else [model]
    mm = [t for t in terms if isinstance(t, GraphMM)]
    refs = [t for t in terms if isinstance(t, AtomicReference)]
    others = [t.family for t in terms if not isinstance(t, (GraphMM, AtomicReference))]
    if len(mm) != 1 or others:
        raise ModelPackageError(
            "OpenMM export needs a graph-learned MM model (family graph_mm), optionally with reference energies; "
            f"this model's terms are {[t.family for t in terms]}" + (f" ({others} have no standard OpenMM force)"
                                                                   if others else ""))
    return mm[0], refs


def export_openmm(model, structure) -> OpenMMExport:
    """Parametrize ``structure`` with a graph-learned MM ``model`` (a model, a `Potential` or a package path)."""
    import openmm
    from ase.data import atomic_masses

    from ..graph.batch import batch_structures
    from ..potential import Potential

    if isinstance(model, (str, Path)):
        model = Potential.load(model, dtype=torch.float64).model
    elif isinstance(model, Potential):
        model = model.model
    mm, refs = _split_model(model)
    pot = Potential(mm, dtype=torch.float64)  # a float64 copy when needed; the caller's model is untouched
    pot.check_elements([structure])
    batch = batch_structures([structure], pot.cutoff, dtype=torch.float64)
    with torch.no_grad():
        topo, p = pot.model.parameters_for(batch)
    p = {k: v.detach().cpu().numpy().astype(np.float64) for k, v in p.items()}
    t = {k: v.cpu().numpy() for k, v in vars(topo).items()}
    kj, nm = KJ_PER_MOL_PER_EV, NM_PER_A

    system = openmm.System()
    for z in structure.numbers:
        system.addParticle(float(atomic_masses[int(z)]))
    bonds = openmm.HarmonicBondForce()
    for (i, j), k, r0 in zip(t["bonds"], p["bond_k"], p["bond_r0"]):
        bonds.addBond(int(i), int(j), r0 * nm, k * kj / nm**2)
    angles = openmm.HarmonicAngleForce()
    for (a, c, b), k, th in zip(t["angles"], p["angle_k"], p["angle_theta0"]):
        angles.addAngle(int(a), int(c), int(b), th, k * kj)
    torsions = openmm.PeriodicTorsionForce()
    for (a, b, c, d), ks in zip(t["torsions"], p["torsion_k"]):
        for n, k in enumerate(ks, start=1):
            torsions.addTorsion(int(a), int(b), int(c), int(d), n, 0.0, k * kj)
    for (a, b, c, d), k in zip(t["impropers"], p["improper_k"]):
        torsions.addTorsion(int(a), int(b), int(c), int(d), 2, math.pi, k * kj)
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    q, sig, eps = p["charge"], p["sigma"], p["sqrt_epsilon"] ** 2
    for qi, si, ei in zip(q, sig, eps):
        nonbonded.addParticle(qi, si * nm, ei * kj)
    for i, j in t["excluded"]:
        nonbonded.addException(int(i), int(j), 0.0, 1.0, 0.0)
    for (i, j) in t["pairs"][t["pair_is_14"]]:
        nonbonded.addException(int(i), int(j), q[i] * q[j] * mm.coulomb_14, 0.5 * (sig[i] + sig[j]) * nm,
                               math.sqrt(eps[i] * eps[j]) * mm.lj_14 * kj)
    for force in (bonds, angles, torsions, nonbonded):
        system.addForce(force)
    offset = float(p["atom_energy"].sum())
    for ref in refs:
        offset += float(ref.table[torch.as_tensor(structure.numbers)].sum())
    n_terms = {"bonds": len(t["bonds"]), "angles": len(t["angles"]), "torsions": len(t["torsions"]),
               "impropers": len(t["impropers"]), "nonbonded_pairs": len(t["pairs"]),
               "pairs_14": int(t["pair_is_14"].sum()), "exclusions": len(t["excluded"])}
    return OpenMMExport(system=system, energy_offset_eV=offset, numbers=np.asarray(structure.numbers), n_terms=n_terms)
