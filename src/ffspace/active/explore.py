"""Exploration: Langevin MD driven by a committee, recording every frame's uncertainty.

All trajectories of one start structure run as one batch (`MoleculeCopies`), every temperature's seeds
together, each copy in its own heat bath, so the committee is evaluated once per step for all of them. A
trajectory stops when its largest atomic force deviation passes ``upper`` (the model no longer knows where
it is: what follows would be its invention),
when two atoms come closer than ``min_distance_factor`` × the sum of their covalent radii (a collapse the
committee may agree on: undertrained members share the same missing repulsion), when a bond of the start
structure is more than ``bond_tolerance`` off its start length (the stability benchmark's rule,
`ffspace.md.failure`: the committee may agree on a dissociation too), or when its energy or forces are not
finite; the others go on. The frame where a trajectory ended records why and, for a broken bond or a collapse,
which atoms.
"""

from __future__ import annotations

import numpy as np

from .. import units
from ..data.structure import Structure
from ..md import failure as rules
from ..md.copies import MoleculeCopies
from ..md.integrators import Langevin, maxwell_boltzmann
from ..progress import progress as progress_bar


def explore(committee, starts: list[Structure], temperatures, seeds: int = 4, steps: int = 2000,
            timestep_fs: float = 0.5, friction: float = 0.01, record_every: int = 20, upper: float = 1.0,
            min_distance_factor: float = 0.6, seed: int = 0, progress: bool = False,
            bond_tolerance: float | None = rules.BOND_TOLERANCE) -> list[dict]:
    """Records ``{"trajectory", "start", "temperature_K", "copy", "step", "time_ps", "deviation_eV_A",
    "positions", "stopped"}`` every ``record_every`` steps for each live trajectory; ``stopped`` names why a
    trajectory ended at that frame ("uncertain", "collapsed", "bond broken" or "non-finite"), else None, and
    such a frame carries ``failure`` (`ffspace.md.failure.why`: the bond or the pair; for "uncertain" the
    deviation). ``bond_tolerance`` None: bonds are not checked."""
    from ase.data import atomic_masses, covalent_radii

    if not hasattr(committee, "last_max_deviation"):
        raise TypeError("exploration needs a committee (ffspace.active.Committee): a single model has no uncertainty")
    records, order = [], []
    for s_idx, start in enumerate(starts):
        radii = covalent_radii[start.numbers]
        closest = min_distance_factor * (radii[:, None] + radii[None, :])
        np.fill_diagonal(closest, 0.0)
        bonds, lengths = rules.start_bonds(start)
        if bond_tolerance is None:
            bonds = bonds[:0]
        # Every temperature's trajectories run as one batch, each copy with its own bath: one committee call
        # per step for all of them, which a second thread can speed up (a 4-copy batch is too small to
        # split; benchmarks/committee_md_cost.py). Copy c runs at temperature c // seeds.
        masses = atomic_masses[start.numbers]
        velocities = []
        for t_idx, temperature in enumerate(temperatures):
            rng = np.random.default_rng(np.random.SeedSequence([seed, s_idx, t_idx]).spawn(2)[0])
            velocities += [maxwell_boltzmann(masses, temperature, rng) for _ in range(seeds)]
        n = len(velocities)
        copy_temperature = np.repeat(np.asarray(temperatures, dtype=float), seeds)
        copies = MoleculeCopies(committee, start, np.repeat(start.positions[None], n, 0), np.stack(velocities))
        integrator = Langevin(timestep_fs, np.repeat(copy_temperature, start.n_atoms), friction,
                              seed=np.random.SeedSequence([seed, s_idx, len(temperatures), 1]), groups=copies.groups())
        label = "/".join(f"{t:g}" for t in temperatures)
        bar = progress_bar(range(1, steps + 1), desc=f"explore {label} K × {seeds}", enabled=progress)
        for step in bar:
            integrator.step(copies.state, copies)
            dev = copies.deviations
            pos = copies.positions()
            broken = ~np.isfinite(copies.energies) | ~np.isfinite(dev) | ~np.isfinite(pos).all((1, 2))
            gaps = np.linalg.norm(pos[:, :, None] - pos[:, None, :], axis=-1)
            collapsed = ~broken & (gaps < closest).any((1, 2))
            snapped = ~broken & ~collapsed & rules.failed(pos, copies.energies, bonds, lengths,
                                                           bond_tolerance or 0.0, min_distance=0.0)
            lost = ~broken & ~collapsed & ~snapped & (dev > upper)
            ended = broken | collapsed | snapped | lost
            if step % record_every == 0 or ended.any():
                for k, c in enumerate(copies.ids):
                    if step % record_every and not ended[k]:
                        continue
                    why = ("non-finite" if broken[k] else "collapsed" if collapsed[k] else
                           "bond broken" if snapped[k] else "uncertain" if lost[k] else None)
                    t_idx, local = divmod(c, seeds)
                    temperature = copy_temperature[c]
                    records.append({"trajectory": f"start{s_idx}_{temperature:g}K_{local}", "start": s_idx,
                                    "temperature_K": float(temperature), "copy": local, "step": step,
                                    "time_ps": step * timestep_fs / units.ps,
                                    "deviation_eV_A": float(dev[k]) if np.isfinite(dev[k]) else None,
                                    "positions": pos[k].copy(), "stopped": why})
                    if why == "uncertain":
                        records[-1]["failure"] = {"reason": "uncertain", "deviation_eV_A": float(dev[k])}
                    elif why is not None:
                        records[-1]["failure"] = rules.why(pos[k], copies.energies[k], start.numbers, bonds, lengths,
                                                           bond_tolerance or np.inf)
                    order.append((s_idx, t_idx, step, local))
            if ended.all():
                break
            if ended.any():
                copies = copies.survivors(~ended, integrator)
        bar.close()
    # Trajectory by trajectory group (start, temperature), then by step: the order of one temperature at a time.
    return [records[i] for i in sorted(range(len(records)), key=order.__getitem__)]


def survival(records: list[dict]) -> dict[str, dict]:
    """What the exploration MD did, per temperature ("600" → ...): trajectories run, how many ran to the end, and
    for each that ended early when, why and which bond or pair (the round log's "what broke")."""
    ends: dict[str, dict] = {}
    for r in records:
        ends.setdefault(r["trajectory"], r)
        if r["stopped"] is not None:
            ends[r["trajectory"]] = r
    out: dict[str, dict] = {}
    for name, r in ends.items():
        row = out.setdefault(f"{r['temperature_K']:g}", {"runs": 0, "survived": 0, "failures": []})
        row["runs"] += 1
        if r["stopped"] is None:
            row["survived"] += 1
        else:
            row["failures"].append({"trajectory": name, "time_ps": r.get("time_ps"), "stopped": r["stopped"],
                                    **r.get("failure", {})})
    return out
