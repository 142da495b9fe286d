"""The speed reference: classical MM in OpenMM on the same systems the benchmark times.

- Periodic water: TIP3P (OpenMM's own ``tip3p.xml``), PME with a 9 Å cutoff (just under half the box for
  the 192-atom cell), rigid water (SETTLE),
  velocity Verlet at 0.5 fs on the CPU platform — how a production MM code runs this box.
- The molecule: the benchmark's graph-learned MM model exported to an OpenMM System of standard forces
  (when the config has a ``graph_mm`` model), which is hand-built MM's cost (see docs/benchmarks.md).

Each figure is milliseconds per MD step (median of a few blocks of steps after a warm-up block).
"""

from __future__ import annotations

import numpy as np

from .. import units
from ..data.structure import Structure
from ..evaluate.speed import openmm_context_cost


def water_cost(box: Structure, threads: int = 2, steps: int = 50, repeats: int = 3) -> dict:
    """ms per step of TIP3P/PME MD of ``box`` (O, H, H per molecule, as `systems` builds it)."""
    import openmm
    from openmm import app, unit

    positions = water_molecules(box)
    topology = app.Topology()
    chain = topology.addChain()
    elements = {8: app.Element.getBySymbol("O"), 1: app.Element.getBySymbol("H")}
    for _ in range(len(positions) // 3):
        residue = topology.addResidue("HOH", chain)
        o = topology.addAtom("O", elements[8], residue)
        h1 = topology.addAtom("H1", elements[1], residue)
        h2 = topology.addAtom("H2", elements[1], residue)
        topology.addBond(o, h1)
        topology.addBond(o, h2)
    nm = 1.0 / units.nm
    topology.setPeriodicBoxVectors(box.cell * nm * unit.nanometer)
    forcefield = app.ForceField("tip3p.xml")
    # 9 Å, or just under half the box where the box is smaller (OpenMM's limit for periodic cutoffs).
    cutoff_nm = min(0.9, 0.49 * float(np.linalg.norm(box.cell, axis=1).min()) * nm)
    system = forcefield.createSystem(topology, nonbondedMethod=app.PME, nonbondedCutoff=cutoff_nm * unit.nanometer,
                                     rigidWater=True, constraints=None)
    integrator = openmm.VerletIntegrator(0.5 * unit.femtosecond)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(threads)})
    context.setPositions(positions * nm * unit.nanometer)
    context.setVelocitiesToTemperature(300 * unit.kelvin)
    cost = openmm_context_cost(context, box.n_atoms, steps, repeats)
    return {"status": "ok", **cost, "cutoff_A": cutoff_nm * 10, "model": "TIP3P, PME, rigid water, CPU platform",
            "threads": threads}


def water_molecules(box: Structure) -> np.ndarray:
    """Positions reordered O, H, H per molecule (each H with its nearest O, minimum image), whatever the file's
    atom order (DeePMD lists all O first)."""
    o = np.nonzero(box.numbers == 8)[0]
    h = np.nonzero(box.numbers == 1)[0]
    if len(h) != 2 * len(o) or len(o) + len(h) != box.n_atoms:
        raise ValueError(f"not a water box: {len(o)} O and {len(h)} H among {box.n_atoms} atoms")
    inverse = np.linalg.inv(box.cell)
    delta = box.positions[h][:, None, :] - box.positions[o][None, :, :]
    frac = delta @ inverse
    delta = (frac - np.round(frac)) @ box.cell  # minimum image
    owner = np.argmin((delta**2).sum(-1), axis=1)
    if not (np.bincount(owner, minlength=len(o)) == 2).all():
        raise ValueError("cannot split the box into H₂O molecules (an O has not exactly two nearest H)")
    order = np.concatenate([[o_idx, *h[owner == k]] for k, o_idx in enumerate(o)])
    # Put each H next to its O (the periodic image nearest to it), so the molecule is whole.
    pos = box.positions.copy()
    pos[h] = box.positions[o][owner] + delta[np.arange(len(h)), owner]
    return pos[order]


def molecule_cost(package, molecule: Structure, threads: int = 2, steps: int = 500, repeats: int = 5) -> dict:
    """ms per step of the graph-learned MM ``package`` exported to OpenMM, on ``molecule``."""
    from ..evaluate.speed import openmm_cost
    from ..interfaces.openmm import export_openmm

    export = export_openmm(package, molecule)
    cost = openmm_cost(export, molecule, steps=steps, repeats=repeats, platform="CPU", threads=threads)
    return {"status": "ok", **cost, "model": "graph-learned MM exported to OpenMM standard forces, CPU platform"}


def available() -> bool:
    try:
        import openmm  # noqa: F401
    except ImportError:
        return False
    return True
