"""ML/MM in OpenMM: a molecule described by an ffspace model inside TIP3P water, NVT, against the same system all MM
(issue 32, Deliver 2 / acceptance 4).

    OMP_NUM_THREADS=2 python benchmarks/mlmm_water.py [--ps 10] [--out benchmarks/results/mlmm_aspirin]

The MM side comes from ffspace: aspirin (rMD17 test frame 0) parametrized by bench_aspirin's graph-learned MM
package (bonded terms, charges, Lennard-Jones; `interfaces.openmm_mlmm.solvated_graph_mm`) in a cube of TIP3P water
(1.2 nm padding, PME 0.9 nm, rigid water). The ML/MM system (`mixed_system`, mechanical embedding) replaces the
molecule's internal MM terms by bench_aspirin's MACE-style package (float32, 18.0 meV/Å on rMD17 aspirin); water
and molecule–water interactions stay MM. Both systems are minimized, then run Langevin (LangevinMiddle, 1/ps,
0.5 fs, 300 K, OpenMM's CPU platform) for ``--ps``; the cost per step of each is timed in this one run. A run fails
when a covalent bond of the molecule leaves ±0.5 Å of its start length (the stability benchmark's rule) or when an
energy is not finite; the molecule is checked every 50 fs. Writes ``mlmm.json`` and the last frame as PDB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/bench_aspirin/aspirin"


def run(system, topology, positions, steps: int, check_every: int, bonds, start_lengths, label: str):
    import openmm
    from openmm import unit

    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
    integrator.setRandomNumberSeed(7)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 500)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 7)
    integrator.step(200)  # warm-up, not timed
    failure, done, t0 = None, 0, time.perf_counter()
    while done < steps:
        n = min(check_every, steps - done)
        integrator.step(n)
        done += n
        state = context.getState(getPositions=True, getEnergy=True)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        pos = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)
        lengths = np.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], axis=1)
        worst = int(np.argmax(np.abs(lengths - start_lengths)))
        if not np.isfinite(energy) or abs(lengths[worst] - start_lengths[worst]) > 0.5:
            failure = {"time_ps": done * 0.0005, "bond": bonds[worst].tolist(), "length": float(lengths[worst])}
            break
        if done % (check_every * 200) == 0:
            print(f"  {label}: {done * 0.0005:.1f} ps, E = {energy:.1f} kJ/mol", flush=True)
    seconds = time.perf_counter() - t0
    state = context.getState(getPositions=True, getEnergy=True)
    return {"steps": done, "ms_per_step": 1000 * seconds / done, "failure": failure,
            "final_energy_kJ_mol": state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)}, \
        state.getPositions()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graph-mm", default=str(RESULTS / "graph_mm/train/model.safetensors"))
    p.add_argument("--ml", default=str(RESULTS / "mace/train/model.safetensors"))
    p.add_argument("--data", default=str(ROOT.parent / "shared/data/rmd17/rmd17_aspirin_test_01.npz"))
    p.add_argument("--ps", type=float, default=10.0)
    p.add_argument("--padding-nm", type=float, default=1.2)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/mlmm_aspirin"))
    args = p.parse_args(argv)
    from openmm import app

    from ffspace.data import read_dataset
    from ffspace.data.bonds import covalent_bonds
    from ffspace.interfaces.openmm_mlmm import mixed_system, solvated_graph_mm

    if not Path(args.data).exists():
        sys.exit(f"{args.data} not found (the public rMD17 data: ../shared/data/README.md)")
    molecule = read_dataset(args.data)[0]
    solvated = solvated_graph_mm(args.graph_mm, molecule, padding_nm=args.padding_nm)
    mixed = mixed_system(solvated.system, solvated.topology, solvated.solute_atoms, args.ml, dtype="float32")
    i, j, _ = covalent_bonds(molecule.numbers, molecule.positions)
    bonds = np.stack([i, j], axis=1)
    start = np.linalg.norm(molecule.positions[bonds[:, 0]] - molecule.positions[bonds[:, 1]], axis=1)
    n_atoms = solvated.system.getNumParticles()
    steps = int(round(args.ps / 0.0005))
    print(f"{len(molecule.numbers)}-atom molecule in {(n_atoms - len(molecule.numbers)) // 3} TIP3P waters "
          f"({n_atoms} atoms), {args.ps} ps at 0.5 fs", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"atoms": n_atoms, "molecule_atoms": len(molecule.numbers), "ps": args.ps, "graph_mm": args.graph_mm,
              "ml": args.ml, "box_nm": solvated.system.getDefaultPeriodicBoxVectors()[0][0]._value}
    for label, system in (("MM", solvated.system), ("ML/MM", mixed)):
        result[label], final = run(system, solvated.topology, solvated.positions, steps, 100, bonds, start, label)
        print(f"{label}: {result[label]}", flush=True)
        if label == "ML/MM":
            with open(out / "mlmm_last_frame.pdb", "w") as f:
                app.PDBFile.writeFile(solvated.topology, final, f)
    (out / "mlmm.json").write_text(json.dumps(result, indent=2))
    mm, ml = result["MM"]["ms_per_step"], result["ML/MM"]["ms_per_step"]
    print("\n| system | atoms | ps run | failure | ms per step | µs per atom-step |\n|---|---|---|---|---|---|")
    for label in ("MM", "ML/MM"):
        r = result[label]
        print(f"| {label} | {n_atoms} | {r['steps'] * 0.0005:.1f} | {r['failure'] or 'none'} | "
              f"{r['ms_per_step']:.2f} | {1000 * r['ms_per_step'] / n_atoms:.2f} |")
    print(f"\nML/MM costs {ml / mm:.1f}x the all-MM step.")


if __name__ == "__main__":
    main()
