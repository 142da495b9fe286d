"""Many copies of one molecule integrated as one MD state, with one batched model call per step.

Used for MD stability statistics (several seeds at once) and for exploration in active learning (several
trajectories at once, with a committee's uncertainty per copy).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from .. import units
from ..data.structure import Structure
from ..graph.batch import collate, graph_of
from ..graph.neighbors import VerletList
from .integrators import MDState, maxwell_boltzmann


class MoleculeCopies:
    """``n`` copies of one molecule as one MD state; forces from one batched model call per step.

    Called with the (n·atoms, 3) positions, returns (summed energy, forces) for the integrators and keeps
    each copy's energy in ``energies`` (NaN for a copy whose geometry broke the model: it is detected
    and removed by the caller, never integrated with non-finite forces). A potential that also returns a
    per-atom ``force_deviation`` (a committee) leaves each copy's largest in ``deviations``. With ``dipole`` (a
    field-dependent model), each call also leaves every copy's dipole μ = −∂E/∂ℰ, (n, 3) e·Å, in ``dipoles``.
    """

    def __init__(self, potential, structure: Structure, positions: np.ndarray, velocities: np.ndarray,
                 dipole: bool = False):
        if hasattr(potential, "check_charges"):  # (as `run_md`: the batched MD of the bench and of exploration)
            potential.check_charges([structure])
        self.potential, self.template, self.want_dipole = potential, structure, dipole
        self.dipoles = None  # (n, 3) e·Å, with ``dipole``
        self.n, self.atoms = positions.shape[0], structure.n_atoms
        # The copies overlap in space (each is its own graph), so this is not a valid `Structure`: MDState
        # only needs the arrays.
        combined = SimpleNamespace(numbers=np.tile(structure.numbers, self.n), positions=positions.reshape(-1, 3),
                                   cell=np.zeros((3, 3)), pbc=np.zeros(3, dtype=bool), info={})
        self.state = MDState(combined, velocities=velocities.reshape(-1, 3))
        self._charge = float(structure.info.get("charge", 0.0))  # total charge of each copy, e
        self.ids = list(range(self.n))  # which of the first batch's copies these are (see `survivors`)
        self.lists = [VerletList(potential.cutoff) for _ in range(self.n)]
        self.energies = None  # (n,) potential energy of each copy, eV
        self.deviations = None  # (n,) largest atomic force deviation of each copy, eV/Å (committees only)
        self.errors = [None] * self.n  # per copy, what the model raised on its geometry at the last call (or None)
        # the model's C kernel (and priors) on all copies from numpy (`FastForces.direct`), once checked
        self._direct = None
        self._joint = None  # (finite copies, i, j, shifts): all copies' Verlet pairs, offset to their atoms
        self._built_at = np.zeros((self.n, structure.n_atoms, 3))  # each copy's positions at its list's last build
        self.state.energy, self.state.forces = self(self.state.positions)  # ready for the first step

    @classmethod
    def thermal(cls, potential, structure: Structure, n: int, temperature: float, rng,
                dipole: bool = False) -> "MoleculeCopies":
        """``n`` copies at the structure's geometry, each with its own Maxwell–Boltzmann velocities at
        ``temperature`` K drawn from ``rng`` (copy by copy, so copy k's draw does not depend on n)."""
        from ase.data import atomic_masses

        masses = atomic_masses[structure.numbers]
        velocities = np.stack([maxwell_boltzmann(masses, temperature, rng) for _ in range(n)])
        return cls(potential, structure, np.repeat(structure.positions[None], n, 0), velocities, dipole=dipole)

    def survivors(self, keep: np.ndarray, integrator=None) -> "MoleculeCopies":
        """The copies where ``keep`` (n,) is true, as a new batch with their positions, velocities and ``ids``;
        a thermostat passed as ``integrator`` gets the new batch's ``groups()`` (and keeps the per-atom
        temperatures of the kept copies, if it has them)."""
        kept = MoleculeCopies(self.potential, self.template, self.positions()[keep], self.velocities()[keep],
                              dipole=self.want_dipole)
        kept.ids = [c for c, ok in zip(self.ids, keep) if ok]
        if integrator is not None:
            integrator.groups = kept.groups()
            if np.ndim(integrator.temperature):
                integrator.temperature = integrator.temperature.reshape(self.n, self.atoms)[keep].reshape(-1)
        return kept

    def __call__(self, positions):
        fast = getattr(self.potential, "fast", None)
        # the C kernels know no field and no dipole: copies in a field, or recording dipoles, run eagerly
        field = self.template.info.get("field")
        eager = field is not None or self.want_dipole
        if fast is not None and fast.state == "checked" and not eager:  # checked by the first call (__init__)
            if self._direct is None:
                self._direct = fast.direct(self.template.numbers, self.template.cell, self.template.pbc, self.n,
                                           charge=self._charge) or False
            if self._direct:
                return self._call_direct(positions)
        graphs = []
        for k, vl in enumerate(self.lists):
            pos = positions[k * self.atoms:(k + 1) * self.atoms]
            frame = Structure.__new__(Structure)  # no validation: a failing copy is detected, not refused
            frame.numbers, frame.positions = self.template.numbers, pos
            frame.cell, frame.pbc = self.template.cell, self.template.pbc
            frame.energy = frame.forces = frame.stress = None
            frame.info = {"charge": self._charge, "field": field}
            graphs.append(graph_of(frame, self.potential.cutoff, pairs=vl.update(pos, frame.cell, frame.pbc)))
        self.errors = [None] * self.n
        try:
            energies, forces, deviations, dipoles = self._evaluate(graphs)
        except Exception:  # noqa: BLE001 - one copy's geometry broke the model: find it, fail only it
            energies, forces = np.full(self.n, np.nan), np.full((self.n * self.atoms, 3), np.nan)
            deviations, dipoles = np.full(self.n, np.nan), np.full((self.n, 3), np.nan)
            raised = []
            for k, g in enumerate(graphs):
                try:
                    e, f, d, mu = self._evaluate([g])
                except Exception as exc:  # noqa: BLE001
                    self.errors[k] = f"{type(exc).__name__}: {exc}"[:300]
                    raised.append(exc)
                    continue
                energies[k], forces[k * self.atoms:(k + 1) * self.atoms], deviations[k] = e[0], f, d[0]
                if mu is not None:
                    dipoles[k] = mu[0]
            # A model refuses a geometry with a ValueError (e.g. an atom with too many bonded neighbours); anything
            # else raised by every copy alone (out of memory, a bug) is not the copies' fault and is not recorded
            # as their failure.
            if len(raised) == self.n and not all(isinstance(exc, ValueError) for exc in raised):
                raise raised[0]
        self.energies, self.deviations = energies, deviations
        if self.want_dipole:
            self.dipoles = dipoles
        # The integrator needs finite numbers; a non-finite copy is detected through `energies` and removed.
        return float(np.nansum(energies)), np.nan_to_num(forces, nan=0.0, posinf=0.0, neginf=0.0)

    def _call_direct(self, positions):
        """All copies in one call of the C kernel: each copy's Verlet pairs, offset to its atoms (the kernel ignores
        those beyond the cutoff). A copy with non-finite positions gets no pairs and a NaN energy (detected and
        removed by the caller)."""
        per_copy = positions.reshape(self.n, self.atoms, 3)
        finite = np.isfinite(per_copy).all((1, 2))
        cell, pbc = self.template.cell, self.template.pbc
        # The Verlet test of every copy at once (an atom moved more than skin/2 since its copy's list was built);
        # only the copies that need it rebuild, and the joint pair arrays are re-made only then.
        if self._joint is None or not np.array_equal(self._joint[0], finite):
            stale = finite.copy()
        else:
            disp = per_copy - self._built_at
            stale = finite & (4.0 * np.einsum("kai,kai->ka", disp, disp).max(1) > self.lists[0].skin ** 2)
        if stale.any() or self._joint is None:
            for k in np.nonzero(stale)[0]:
                self.lists[k].update(per_copy[k], cell, pbc)
                self._built_at[k] = self.lists[k].built_at
            live = [k for k in range(self.n) if finite[k]]
            if live:
                i = np.concatenate([self.lists[k].pairs[0] + k * self.atoms for k in live])
                j = np.concatenate([self.lists[k].pairs[1] + k * self.atoms for k in live])
                shifts = np.concatenate([self.lists[k].pairs[2] for k in live])
            else:
                i, j, shifts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3))
            self._joint = (finite, i, j, shifts)
        _, i, j, shifts = self._joint
        # (no cutoff filter here: the kernel skips the Verlet pairs beyond the cutoff itself)
        safe = positions if finite.all() else np.where(np.isfinite(positions), positions, 0.0)
        energies, forces = self._direct(safe, i, j, shifts)
        bad = ~finite | ~np.isfinite(forces.reshape(self.n, self.atoms, 3)).all((1, 2))
        energies[bad] = np.nan
        self.energies, self.deviations = energies, np.full(self.n, np.nan)
        self.errors = [None] * self.n
        return float(np.nansum(energies)), np.nan_to_num(forces, nan=0.0, posinf=0.0, neginf=0.0)

    def verlet_arrays(self) -> dict:
        """Each copy's Verlet list (pairs and the positions it was built at) as arrays for a checkpoint: a resumed
        run then sums the same pairs in the same order as the run that was killed (a list built afresh at the
        resumed geometry holds other pairs within its skin, and vesin promises no pair order; MD amplifies the
        last bits a different order changes)."""
        lists = self.lists
        if any(vl.pairs is None for vl in lists):  # (never built: nothing to keep)
            return {}
        return {"verlet_counts": np.array([len(vl.pairs[0]) for vl in lists], dtype=np.int64),
                "verlet_i": np.concatenate([vl.pairs[0] for vl in lists]),
                "verlet_j": np.concatenate([vl.pairs[1] for vl in lists]),
                "verlet_shifts": np.concatenate([vl.pairs[2] for vl in lists]),
                "verlet_positions": np.stack([vl.built_at for vl in lists]),
                "verlet_cells": np.stack([vl._ref[1] for vl in lists])}

    def restore_verlet(self, arrays) -> None:
        """Put back the lists of `verlet_arrays` (``arrays`` maps its names; a checkpoint without them leaves the
        lists built at the resumed geometry)."""
        if "verlet_counts" not in arrays:
            return
        counts = np.asarray(arrays["verlet_counts"])
        if len(counts) != self.n:
            raise ValueError(f"the checkpoint holds {len(counts)} Verlet lists for {self.n} copies")
        bounds = np.cumsum(counts)[:-1]
        parts = [np.split(np.asarray(arrays[k]), bounds) for k in ("verlet_i", "verlet_j", "verlet_shifts")]
        for k, vl in enumerate(self.lists):
            vl.pairs = (parts[0][k].copy(), parts[1][k].copy(), parts[2][k].copy())
            vl._ref = (np.array(arrays["verlet_positions"][k]), np.array(arrays["verlet_cells"][k]))
            self._built_at[k] = vl._ref[0]
        self._joint = None  # the direct path's joint arrays are made again from the restored lists

    def _evaluate(self, graphs):
        batch = collate(graphs, dtype=self.potential.dtype, device=self.potential.device, labels=False)
        out = self.potential.compute(batch, forces=True, **({"dipole": True} if self.want_dipole else {}))
        forces = out["forces"].double().cpu().numpy()
        energies = out["energy"].cpu().numpy().copy()
        bad = ~np.isfinite(forces.reshape(len(graphs), self.atoms, 3)).all((1, 2))
        energies[bad] = np.nan
        deviations = np.full(len(graphs), np.nan)
        if "force_deviation" in out:
            deviations = out["force_deviation"].double().cpu().numpy().reshape(len(graphs), self.atoms).max(1)
        dipoles = out["dipole"].double().cpu().numpy() if self.want_dipole else None
        return energies, forces, deviations, dipoles

    def groups(self) -> np.ndarray:
        return np.repeat(np.arange(self.n), self.atoms)

    def positions(self) -> np.ndarray:
        return self.state.positions.reshape(self.n, self.atoms, 3)

    def velocities(self) -> np.ndarray:
        return self.state.velocities.reshape(self.n, self.atoms, 3)

    def kinetic(self) -> np.ndarray:
        m = self.state.masses.reshape(self.n, self.atoms)
        return 0.5 * (m[..., None] * self.velocities() ** 2).sum((1, 2)) * units.MV2_TO_EV
