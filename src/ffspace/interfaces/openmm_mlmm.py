"""ML/MM in OpenMM: part of a classical System (a solute) treated by an ffspace model, the rest by MM.

Mechanical embedding, as OpenMM-ML's ``createMixedSystem`` (without interpolation): in a copy of the MM System
every bonded term whose atoms all belong to the ML part is removed, the nonbonded interactions between two ML atoms
are excluded (zeroed exceptions of the NonbondedForce, exclusions of a CustomNonbondedForce), constraints between two
ML atoms are dropped, and the model, as an ``openmm.PythonForce`` on the ML particles (`openmm_ml.openmm_force`),
gives the ML part's internal energy. Solute–solvent interactions stay MM (charges and Lennard-Jones of the MM
System), so E_mixed = E_ML(solute) + E_MM(everything) − E_MM(solute alone).

`solvated_graph_mm` makes the MM side from ffspace itself: a molecule parametrized by a graph-learned MM model
(`interfaces.openmm.export_openmm`) in a box of TIP3P water (OpenMM's ``tip3p.xml``, ``Modeller.addSolvent``), PME.

    solvated = solvated_graph_mm("graph_mm.safetensors", aspirin, padding_nm=1.0)
    system = mixed_system(solvated.system, solvated.topology, solvated.solute_atoms, "mace.safetensors")
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .openmm_ml import _openmm, openmm_force

_BONDED = {"HarmonicBondForce": ("getNumBonds", "getBondParameters", 2),
           "HarmonicAngleForce": ("getNumAngles", "getAngleParameters", 3),
           "PeriodicTorsionForce": ("getNumTorsions", "getTorsionParameters", 4),
           "RBTorsionForce": ("getNumTorsions", "getTorsionParameters", 4),
           "CustomBondForce": ("getNumBonds", "getBondParameters", 2),
           "CustomAngleForce": ("getNumAngles", "getAngleParameters", 3),
           "CustomTorsionForce": ("getNumTorsions", "getTorsionParameters", 4)}
_KEEP = {"CMMotionRemover", "MonteCarloBarostat", "MonteCarloAnisotropicBarostat", "MonteCarloMembraneBarostat",
         "MonteCarloFlexibleBarostat"}


def topology_numbers(topology, atoms) -> np.ndarray:
    """Atomic numbers of ``atoms`` (indices) of an OpenMM Topology; an atom without an element is an error."""
    table = list(topology.atoms())
    out = []
    for i in atoms:
        atom = table[i]
        if atom.element is None:
            raise ConfigError(f"topology atom {i} ({atom.name} in residue {atom.residue.name}) has no element: "
                              "the ML model needs one for every ML atom")
        out.append(atom.element.atomic_number)
    return np.asarray(out, dtype=np.int64)


def _without_ml_terms(force, name, ml: set[int]):
    """The bonded force without its terms whose atoms are all ML atoms, rebuilt as a new force of the same kind
    (OpenMM forces cannot delete terms). A custom bonded force is kept only when it has no such term."""
    count, getter, n = _BONDED[name]
    terms = [getattr(force, getter)(k) for k in range(getattr(force, count)())]
    keep = [t for t in terms if not set(int(a) for a in t[:n]) <= ml]
    if len(keep) == len(terms):
        openmm, _ = _openmm()
        # a copy: the caller removes the original from its System
        return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
    if name.startswith("Custom"):
        raise ConfigError(f"a {name} has terms between ML atoms only; mixed_system removes such terms from "
                          "the standard bonded forces only (rewrite it as one, or leave those atoms MM)")
    new = type(force)()
    new.setUsesPeriodicBoundaryConditions(force.usesPeriodicBoundaryConditions())
    add = getattr(new, "addBond" if n == 2 else "addAngle" if n == 3 else "addTorsion")
    for term in keep:
        add(*term)
    new.setForceGroup(force.getForceGroup())
    new.setName(force.getName())
    return new


def mixed_system(system, topology, ml_atoms, model, dtype: str = "float64", device: str = "cpu",
                 charge: float = 0.0, ml_force_group: int = 0):
    """A copy of the MM ``system`` in which the atoms ``ml_atoms`` (indices) are described by ``model`` (a package
    path, ``builtin:NAME`` or a `Potential`), mechanically embedded (module docstring). ``topology`` (an OpenMM
    Topology of the same atoms) gives the ML atoms' elements; atoms or elements that do not fit the System or the
    model are refused here, before any step. ``charge``: the ML part's net charge, for models that use it."""
    openmm, _ = _openmm()
    ml_atoms = [int(i) for i in ml_atoms]
    if topology.getNumAtoms() != system.getNumParticles():
        raise ConfigError(f"the topology has {topology.getNumAtoms()} atoms, the System "
                          f"{system.getNumParticles()} particles")
    if not ml_atoms or len(set(ml_atoms)) != len(ml_atoms) or min(ml_atoms) < 0 or \
            max(ml_atoms) >= system.getNumParticles():
        raise ConfigError(f"ML atoms must be distinct indices below {system.getNumParticles()}, got "
                          f"{len(ml_atoms)} indices from {min(ml_atoms, default=None)} to {max(ml_atoms, default=None)}")
    numbers = topology_numbers(topology, ml_atoms)
    ml = set(ml_atoms)
    # A serialized copy keeps everything (masses, box, virtual sites); forces are then edited or replaced in it.
    mixed = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for k in reversed(range(mixed.getNumConstraints())):
        i, j, _ = mixed.getConstraintParameters(k)
        if i in ml and j in ml:
            mixed.removeConstraint(k)
    for index in reversed(range(mixed.getNumForces())):
        force = mixed.getForce(index)
        name = type(force).__name__
        if name in _BONDED:
            replacement = _without_ml_terms(force, name, ml)
            mixed.removeForce(index)
            mixed.addForce(replacement)
        elif name == "NonbondedForce":
            for a in range(len(ml_atoms)):
                for b in range(a):
                    force.addException(ml_atoms[a], ml_atoms[b], 0.0, 1.0, 0.0, True)
        elif name == "CustomNonbondedForce":
            existing = {tuple(sorted(force.getExclusionParticles(k))) for k in range(force.getNumExclusions())}
            for a in range(len(ml_atoms)):
                for b in range(a):
                    if tuple(sorted((ml_atoms[a], ml_atoms[b]))) not in existing:
                        force.addExclusion(ml_atoms[a], ml_atoms[b])
        elif name not in _KEEP:
            raise ConfigError(f"mixed_system does not know how to split a {name} between ML and MM atoms")
    # The ML part is one molecule, evaluated without periodic images. In a periodic System its atoms may reach the
    # force wrapped into the box one by one (GPU platforms wrap; no bond ties them once the MM bonds are gone), so
    # the force takes the box and makes the molecule whole by the minimum image first.
    force = openmm_force(model, numbers, periodic=False, particles=ml_atoms, dtype=dtype, device=device,
                         charge=charge, molecule_in_box=system.usesPeriodicBoundaryConditions())
    force.setForceGroup(ml_force_group)
    mixed.addForce(force)
    return mixed


def _unit():
    from openmm import unit

    return unit


@dataclass
class SolvatedSystem:
    """A molecule in water: the MM System, its Topology, positions (an (N, 3) array with OpenMM's nm unit) and the
    molecule's atom indices (the first ones)."""

    system: object
    topology: object
    positions: object
    solute_atoms: list


def _solute_ffxml(numbers, charges, sigmas, epsilons, bonds) -> str:
    """An OpenMM force-field file for one residue ``FFS`` with an atom type per atom (what ``Modeller.addSolvent``
    and ``ForceField.createSystem`` need to place the water around it); exact parameters are set afterwards."""
    from ase.data import atomic_masses, chemical_symbols

    types = "".join(f'<Type name="ffs{i}" class="ffs{i}" element="{chemical_symbols[z]}" mass="{atomic_masses[z]}"/>'
                    for i, z in enumerate(numbers))
    atoms = "".join(f'<Atom name="A{i}" type="ffs{i}" charge="{q!r}"/>' for i, q in enumerate(charges))
    bond_xml = "".join(f'<Bond atomName1="A{i}" atomName2="A{j}"/>' for i, j in bonds)
    lj = "".join(f'<Atom type="ffs{i}" sigma="{s!r}" epsilon="{e!r}"/>' for i, (s, e) in enumerate(zip(sigmas, epsilons)))
    return (f'<ForceField><AtomTypes>{types}</AtomTypes><Residues><Residue name="FFS">{atoms}{bond_xml}</Residue>'
            f'</Residues><NonbondedForce coulomb14scale="0.833333" lj14scale="0.5"><UseAttributeFromResidue '
            f'name="charge"/>{lj}</NonbondedForce></ForceField>')


def solvated_graph_mm(graph_mm, structure, padding_nm: float = 1.0, cutoff_nm: float = 0.9,
                      water: str = "tip3p") -> SolvatedSystem:
    """``structure`` (a molecule) parametrized by the graph-learned MM model ``graph_mm`` (package path, model or
    `Potential`) in a cubic box of TIP3P water reaching ``padding_nm`` beyond it, PME with ``cutoff_nm``, rigid
    water, no other constraints (the molecule's X–H bonds move: use a 0.5 fs step). The molecule's bonded terms,
    charges, Lennard-Jones and 1-4 exceptions are the graph-MM export's (equal to ffspace's graph-MM energy), the
    water and ions are OpenMM's ``tip3p.xml``."""
    openmm, unit = _openmm()
    from openmm import app

    from .openmm import export_openmm

    if structure.pbc.any():
        raise ConfigError("solvated_graph_mm solvates a molecule; this structure is periodic")
    export = export_openmm(graph_mm, structure)
    forces = {type(f).__name__: f for f in export.system.getForces()}
    nb = forces["NonbondedForce"]
    params = [nb.getParticleParameters(i) for i in range(nb.getNumParticles())]
    charges = [p[0].value_in_unit(unit.elementary_charge) for p in params]
    sigmas = [p[1].value_in_unit(unit.nanometer) for p in params]
    epsilons = [p[2].value_in_unit(unit.kilojoule_per_mole) for p in params]
    hb = forces["HarmonicBondForce"]
    bonds = [tuple(hb.getBondParameters(k)[:2]) for k in range(hb.getNumBonds())]

    topology = app.Topology()
    residue = topology.addResidue("FFS", topology.addChain())
    atoms = [topology.addAtom(f"A{i}", app.Element.getByAtomicNumber(int(z)), residue)
             for i, z in enumerate(structure.numbers)]
    for i, j in bonds:
        topology.addBond(atoms[i], atoms[j])
    forcefield = app.ForceField(f"{water}.xml")
    forcefield.loadFile(io.StringIO(_solute_ffxml(structure.numbers, charges, sigmas, epsilons, bonds)))
    modeller = app.Modeller(topology, structure.positions * 0.1 * unit.nanometer)
    modeller.addSolvent(forcefield, model=water, padding=padding_nm * unit.nanometer)
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=cutoff_nm * unit.nanometer, constraints=None, rigidWater=True)
    n = len(structure.numbers)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(n):  # exactly the export's parameters (the template matcher may permute equivalent atoms)
        nonbonded.setParticleParameters(i, *params[i])
    for k in range(nb.getNumExceptions()):  # the export's exclusions and 1-4 pairs replace the template's
        i, j, qq, s, e = nb.getExceptionParameters(k)
        nonbonded.addException(i, j, qq, s, e, True)
    for name in ("HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce"):
        system.addForce(openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(forces[name])))
    positions = np.array([[p[0], p[1], p[2]] for p in modeller.positions.value_in_unit(unit.nanometer)])
    return SolvatedSystem(system=system, topology=modeller.topology, positions=positions * unit.nanometer,
                          solute_atoms=list(range(n)))
