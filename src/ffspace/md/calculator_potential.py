"""An ASE calculator (a quantum-chemistry method, e.g. GFN2-xTB through tblite) as a potential for batched MD.

`MoleculeCopies` calls a potential with a batch of copies of one molecule. This adapter answers that call with one
calculator per copy, so that the MD stability protocol (`ffspace.bench.stability.survival`), with the same
integrator, seeds and failure rules, can run on the reference method itself: what the protocol's bond rule says
about the chemistry, not about a model (an oracle bound: a model faithful to this method can do no better).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


class CalculatorPotential:
    """Energies (eV) and forces (eV/Å) of every structure of a batch from ``make_calculator()`` (a new ASE
    calculator), in float64 on the CPU.

    Each copy keeps its own calculator, whose SCF starts from that copy's last wavefunction (MD moves a copy a
    little per step): a structure is matched to the calculator that last saw exactly its positions (the MD
    protocol rebuilds its batch when a copy fails, with the survivors' positions unchanged), and a structure no
    calculator knows gets a fresh one. So a copy's trajectory does not depend on which other copies failed. A run
    resumed from a checkpoint starts its SCFs afresh, which moves it off the uninterrupted run at the SCF tolerance.
    ``workers`` threads evaluate the copies side by side (tblite and PySCF release the GIL in their native code;
    give each worker one OpenMP thread). A calculation that raises gives that structure NaN energy and forces: the
    protocol then counts the copy as failed (non-finite), as for a model that broke; ``failures`` keeps each message
    (label the start structure once before MD to catch a setup error early, with its own message).
    """

    fast = None  # no compiled kernel: `MoleculeCopies` calls `compute` every step
    dtype = torch.float64
    device = torch.device("cpu")

    def __init__(self, make_calculator, workers: int = 1, cutoff: float = 1.0):
        if workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.make_calculator, self.workers = make_calculator, int(workers)
        # the graph MoleculeCopies builds is not used: a short cutoff keeps its neighbour lists cheap
        self.cutoff = float(cutoff)
        self._calculators: list = []  # those of the last call, each with the atoms it last computed
        self._pool = None
        self.calls = 0  # batches evaluated (each structure once per batch)
        self.failures: list[tuple[int, int, str]] = []  # (call, structure in the batch, error message)

    def _calculator_for(self, numbers: np.ndarray, positions: np.ndarray, free: list):
        """The calculator in ``free`` that last computed exactly this structure (removed from ``free``), else a
        new one."""
        for k, calc in enumerate(free):
            atoms = getattr(calc, "atoms", None)
            if atoms is not None and np.array_equal(atoms.numbers, numbers) \
                    and np.array_equal(atoms.positions, positions):
                return free.pop(k)
        return self.make_calculator()

    def compute(self, batch, forces: bool = True, **_) -> dict:
        from ase import Atoms

        counts = batch.n_atoms.tolist()
        cuts = np.cumsum(counts)[:-1]
        numbers = np.split(batch.numbers.cpu().numpy(), cuts)
        positions = np.split(batch.positions.detach().double().cpu().numpy(), cuts)
        free = list(self._calculators)
        calculators = [self._calculator_for(numbers[k], positions[k], free) for k in range(len(counts))]

        def one(k: int):
            atoms = Atoms(numbers=numbers[k], positions=positions[k])
            atoms.calc = calculators[k]
            try:
                return float(atoms.get_potential_energy()), np.asarray(atoms.get_forces(), dtype=float), None
            except Exception as exc:  # noqa: BLE001 - e.g. an SCF that failed: this copy failed, the others go on
                calculators[k] = self.make_calculator()  # no wavefunction carried from a failed SCF
                return float("nan"), np.full((counts[k], 3), np.nan), f"{type(exc).__name__}: {exc}"

        if self.workers > 1 and len(counts) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers)
            results = list(self._pool.map(one, range(len(counts))))
        else:
            results = [one(k) for k in range(len(counts))]
        self._calculators = calculators
        self.failures += [(self.calls, k, msg) for k, (_, _, msg) in enumerate(results) if msg is not None]
        self.calls += 1
        energy = torch.tensor([e for e, _, _ in results], dtype=torch.float64)
        out = {"energy": energy}
        if forces:
            out["forces"] = torch.from_numpy(np.concatenate([f for _, f, _ in results]))
        return out
