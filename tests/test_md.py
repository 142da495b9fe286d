"""MD: energy conservation with a trained model, thermostat, periodic boxes, reporters, blow-up monitor."""

import json

import numpy as np
import pytest
import torch

from ffspace.data import Structure, read_extxyz
from ffspace.md import BlowUpMonitor, run_md
from ffspace.models import PaiNN
from ffspace.potential import Potential
from ffspace.testing.physics import periodic_box


def test_nve_conserves_energy_with_trained_model(trained_package, ethanol_data, tmp_path):
    """Acceptance: float64, 0.5 fs, 2000 steps, drift < 1e-4 eV/atom/ps."""
    pot = Potential.load(trained_package, dtype=torch.float64)
    result = run_md(pot, ethanol_data[0], steps=2000, timestep_fs=0.5, ensemble="nve", temperature=300.0,
                    seed=1, out_dir=tmp_path, traj_interval=100)
    assert result.status == "completed", result.report
    drift = result.energy_drift()
    assert abs(drift) < 1e-4, f"drift {drift:.3g} eV/atom/ps"
    # The run must actually move: kinetic and potential energy exchange.
    assert np.ptp(result.thermo["epot_eV"]) > 0.05
    frames = read_extxyz(tmp_path / "trajectory.extxyz", energy_key="ffspace_energy", forces_key="ffspace_forces")
    assert len(frames) == 21
    header = (tmp_path / "thermo.csv").read_text().splitlines()[0]
    assert header == "step,time_fs,epot_eV,ekin_eV,etot_eV,temperature_K"


def test_langevin_reaches_target_temperature(trained_package, ethanol_data):
    pot = Potential.load(trained_package, dtype=torch.float64)
    result = run_md(pot, ethanol_data[0], steps=2000, timestep_fs=0.5, ensemble="nvt", temperature=500.0,
                    init_temperature=50.0, friction=0.05, seed=3)
    assert result.status == "completed"
    late = result.thermo["temperature_K"][1000:]
    # 9 atoms fluctuate strongly (σ_T ≈ 0.29 T; ~25 independent samples in 0.5 ps at a 20 fs relaxation time,
    # so the mean's σ ≈ 30 K); the mean over the last 0.5 ps must still sit near the target.
    assert 400 < late.mean() < 600, late.mean()


def test_periodic_md_with_verlet_list_matches_fresh_neighbor_lists():
    torch.manual_seed(0)
    model = PaiNN([1, 8], cutoff=3.5, features=16, layers=2)
    pot = Potential(model, dtype=torch.float64)
    box = periodic_box(3)
    a = run_md(pot, box, steps=60, timestep_fs=0.5, ensemble="nve", seed=0, skin=1.0)
    b = run_md(pot, box, steps=60, timestep_fs=0.5, ensemble="nve", seed=0, skin=0.0)
    np.testing.assert_allclose(a.thermo["etot_eV"], b.thermo["etot_eV"], rtol=0, atol=1e-9)


def test_md_batches_equal_the_graph_a_fresh_neighbour_search_gives():
    """The MD loop's batches (`StructureBatcher` on Verlet pairs cut to the cutoff) are the `Batch` that
    ``collate([graph_of(...)])`` gives, field by field, and so are the energy and forces (periodic, charged)."""
    from dataclasses import fields

    from ffspace.graph.batch import collate, graph_of
    from ffspace.md import MDState, PotentialForces

    torch.manual_seed(0)
    pot = Potential(PaiNN([1, 7, 8], cutoff=3.5, features=16, layers=2), dtype=torch.float64)
    box = periodic_box(3, nitrogen=True)
    box.info["charge"] = 1.0
    state = MDState(box)
    forces = PotentialForces(pot, state, skin=1.0)
    rng = np.random.default_rng(0)
    for step in range(3):  # the first call builds the Verlet list, the others reuse it at moved positions
        positions = box.positions + (0.1 * step) * rng.normal(size=box.positions.shape)
        energy, f = forces(positions)
        i, j, shifts = forces.pairs
        moved = box.copy(positions=positions)
        fresh = collate([graph_of(moved, pot.cutoff)], dtype=pot.dtype, labels=False)
        ours = forces.batcher(positions, *(a[forces.distances < pot.cutoff] for a in (i, j, shifts)))
        for field in fields(fresh):
            a, b = getattr(fresh, field.name), getattr(ours, field.name)
            if field.name in ("edge_index", "shifts"):  # the same edges (i, j, vector), maybe in another order
                key = lambda batch: sorted(zip(*batch.edge_index.tolist(),
                                               *np.round(batch.edge_vectors().numpy(), 9).T.tolist()))
                assert key(fresh) == key(ours)
            elif a is None:
                assert b is None, field.name
            else:
                assert a.dtype == b.dtype and torch.equal(a, b), field.name
        expected = pot.compute(fresh)
        assert abs(energy - float(expected["energy"][0])) < 1e-9
        np.testing.assert_allclose(f, expected["forces"].numpy(), rtol=0, atol=1e-9)


def test_blow_up_is_stopped_with_a_report(tmp_path):
    """Two atoms pushed together by a huge velocity: the monitor stops the run and names them."""
    torch.manual_seed(0)
    pot = Potential(PaiNN([1, 6, 8], cutoff=4.0, features=8, layers=1), dtype=torch.float64)
    s = Structure(numbers=[6, 6, 1], positions=[[0, 0, 0], [1.5, 0, 0], [5, 5, 5]])

    class Push(BlowUpMonitor):
        pass

    from ffspace.md import simulation

    orig = simulation.maxwell_boltzmann

    def head_on(masses, temperature, rng):
        v = np.zeros((len(masses), 3))
        v[0, 0], v[1, 0] = 0.2, -0.2  # Å/fs: collide within a few fs
        return v

    simulation.maxwell_boltzmann = head_on
    try:
        result = run_md(pot, s, steps=200, timestep_fs=0.5, ensemble="nve", out_dir=tmp_path,
                        monitor=Push(max_force=1e6, min_distance=0.5))
    finally:
        simulation.maxwell_boltzmann = orig
    assert result.status == "blown_up"
    report = json.loads((tmp_path / "blowup.json").read_text())
    assert sorted(report["atoms"]) == [0, 1]
    assert report["step"] > 0 and "apart" in report["reason"]
    thermo = (tmp_path / "thermo.csv").read_text()
    assert "nan" not in thermo.lower()


def test_langevin_temperature_of_an_ideal_gas_is_exact():
    """Free particles (no forces): BAOAB must give ⟨T⟩ = target with 3N − 3 degrees of freedom."""
    from ffspace.models import ZBL

    # Few atoms, so that a wrong degrees-of-freedom count (3N instead of 3N − 3: +14 %) cannot hide.
    grid = np.stack(np.meshgrid(*[np.arange(2) * 6.0] * 3, indexing="ij"), -1).reshape(-1, 3)
    gas = Structure(numbers=[1] * len(grid), positions=grid, cell=np.eye(3) * 12.0, pbc=True)
    pot = Potential(ZBL(cutoff=0.5), dtype=torch.float64)  # switched off beyond 0.62 Å: zero forces here
    result = run_md(pot, gas, steps=10000, timestep_fs=1.0, ensemble="nvt", temperature=300.0, friction=0.2,
                    seed=0, monitor=BlowUpMonitor(min_distance=0.01))
    mean_t = result.thermo["temperature_K"][1000:].mean()
    assert abs(mean_t - 300.0) < 9.0, mean_t


def test_md_killed_and_rerun_resumes_the_same_trajectory(trained_package, tmp_path):
    """SIGKILL during `ffspace md`, rerun: the thermo log and trajectory equal an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cmd(out):
        return [sys.executable, "-m", "ffspace.cli", "md", f"model_path={trained_package}", "md.steps=1000",
                "md.ensemble=nvt", "md.traj_interval=50", "md.checkpoint_interval=200", f"out={out}"]

    # the uninterrupted run side by side with the one to kill (one thread each, two cores)
    ref = subprocess.Popen(cmd(tmp_path / "ref"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(cmd(tmp_path / "run"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "run" / "md" / "md_checkpoint.npz"
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.exists():
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    thermo = tmp_path / "run" / "md" / "thermo.csv"
    assert ckpt.exists() and len(thermo.read_text().splitlines()) < 1002, "the run was not killed mid-way"
    rerun = subprocess.run(cmd(tmp_path / "run"), check=True, env=env, capture_output=True, text=True)
    assert "resuming MD" in rerun.stderr
    assert ref.wait(timeout=300) == 0
    assert thermo.read_text() == (tmp_path / "ref" / "md" / "thermo.csv").read_text()
    a = read_extxyz(tmp_path / "ref" / "md" / "trajectory.extxyz", energy_key="ffspace_energy",
                    forces_key="ffspace_forces")
    b = read_extxyz(tmp_path / "run" / "md" / "trajectory.extxyz", energy_key="ffspace_energy",
                    forces_key="ffspace_forces")
    assert len(a) == len(b) == 21
    np.testing.assert_array_equal(a[-1].positions, b[-1].positions)


def test_resumed_md_measures_bonds_and_displacements_from_the_true_start(trained_package, ethanol_data, tmp_path,
                                                                         capsys):
    """A resumed run's blow-up checks keep the start structure as their reference: a bond already stretched at the
    checkpoint must count from its starting length, not from the checkpoint's."""
    from ffspace.data.bonds import bond_lengths

    pot = Potential.load(trained_package, dtype=torch.float64)
    start = ethanol_data[0]
    settings = dict(timestep_fs=0.5, ensemble="nvt", temperature=600.0, seed=3, out_dir=tmp_path,
                    checkpoint_interval=50)
    run_md(pot, start, steps=100, **settings)
    monitor = BlowUpMonitor()
    capsys.readouterr()
    result = run_md(pot, start, steps=150, monitor=monitor, **settings)  # resumes at step 100
    assert "from step 100" in capsys.readouterr().err
    assert result.steps == 150 and len(result.thermo["step"]) == 151
    assert not np.allclose(result.final.positions, start.positions)
    np.testing.assert_array_equal(monitor.start, start.positions)
    np.testing.assert_allclose(monitor.bond_start, bond_lengths(start.positions, monitor.bonds, None))


def _harmonic(k=5.0):
    """Every atom tied to the origin by a spring (eV/Å²): forces without a model."""
    def forces(positions):
        return 0.5 * k * float((positions ** 2).sum()), -k * positions
    return forces


def test_langevin_per_atom_temperatures_give_each_group_its_own_bath():
    """One state, two groups of molecules at 300 K and 900 K (the exploration batch of active learning):
    each group equilibrates to its own temperature; an array of one temperature is the scalar thermostat."""
    from types import SimpleNamespace

    from ffspace import units
    from ffspace.md.integrators import Langevin, MDState

    n_mol, atoms = 8, 4
    groups = np.repeat(np.arange(n_mol), atoms)
    target = np.where(groups < n_mol // 2, 300.0, 900.0)
    rng = np.random.default_rng(0)

    def state():
        s = SimpleNamespace(numbers=np.full(n_mol * atoms, 6), positions=rng.normal(size=(n_mol * atoms, 3)) * 0.1,
                            cell=np.zeros((3, 3)), pbc=np.zeros(3, dtype=bool), info={})
        st = MDState(s)
        st.energy, st.forces = _harmonic()(st.positions)
        return st

    st, force = state(), _harmonic()
    thermostat = Langevin(1.0, target, friction=0.05, seed=1, groups=groups)
    kinetic = []
    for step in range(6000):
        thermostat.step(st, force)
        if step >= 1000:
            ke = 0.5 * st.masses[:, None] * st.velocities ** 2 * units.MV2_TO_EV
            kinetic.append(np.bincount(groups, weights=ke.sum(1), minlength=n_mol))
    dof = 3 * atoms - 3  # each molecule's centre of mass is held still
    t_mol = 2 * np.mean(kinetic, axis=0) / (dof * units.kB)
    assert abs(t_mol[: n_mol // 2].mean() - 300.0) < 20.0, t_mol
    assert abs(t_mol[n_mol // 2:].mean() - 900.0) < 60.0, t_mol

    a = state()
    b = MDState(SimpleNamespace(numbers=a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc, info={}))
    b.energy, b.forces = a.energy, a.forces.copy()
    scalar = Langevin(0.5, 600.0, seed=3, groups=groups)
    per_atom = Langevin(0.5, np.full(n_mol * atoms, 600.0), seed=3, groups=groups)
    for _ in range(50):
        scalar.step(a, force)
        per_atom.step(b, force)
    np.testing.assert_array_equal(a.positions, b.positions)


def test_md_checkpoint_key_changes_with_box_charge_and_field():
    """A checkpoint of another box, charge or constant field must not be resumed; a molecule's key is unchanged
    by fields it does not set."""
    from ffspace.md import checkpoint

    pot = Potential(PaiNN([1, 8], cutoff=3.0, features=8, layers=1), dtype=torch.float64)
    water = Structure(numbers=[8, 1, 1], positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    key = checkpoint.fingerprint(water, pot, {"seed": 0})
    assert checkpoint.fingerprint(water.copy(), pot, {"seed": 0}) == key
    variants = []
    for change in ({"charge": 1}, {"field": [0.0, 0.0, 0.1]}, {"field": [0.0, 0.0, 0.2]}):
        other = water.copy()
        other.info.update(change)
        variants.append(checkpoint.fingerprint(other, pot, {"seed": 0}))
    boxes = [Structure(numbers=water.numbers, positions=water.positions, cell=np.eye(3) * a, pbc=True)
             for a in (8.0, 9.0)]
    variants += [checkpoint.fingerprint(b, pot, {"seed": 0}) for b in boxes]
    assert len(set(variants + [key])) == 6


def test_an_md_checkpoint_carries_the_mm_priors_held_bonds(ethanol_data, tmp_path):
    """`ffspace md` with an MM prior: the checkpoint holds the bonds the prior held along the trajectory, and a run
    resumed in a new process gets them back instead of perceiving its bonds afresh at the resumed geometry (where a
    bond stretched past the perception rule would vanish)."""
    from types import SimpleNamespace

    from ffspace.md import checkpoint
    from ffspace.md.held_bonds import held_terms
    from ffspace.md.integrators import MDState
    from ffspace.train import build_model_for_data

    def potential():
        return Potential(build_model_for_data({"family": "mm", "cutoff": 5.0}, ethanol_data, seed=0), dtype="float64")

    pot, start = potential(), ethanol_data[0]
    run_md(pot, start, steps=20, ensemble="nvt", seed=1, out_dir=tmp_path / "md", checkpoint_interval=10)
    with np.load(tmp_path / "md" / "md_checkpoint.npz") as saved:
        assert saved["held_counts"].tolist() == [[8]]  # ethanol's eight bonds, held at step 20

    state = MDState(start)
    pot([start])  # the prior perceives and holds the start's bonds
    (term,) = held_terms(pot)
    where = (state.numbers, state.positions, np.array([state.n_atoms]))
    (held,) = term.held_bonds().lookup(*where)
    term.held_bonds().remember(*where, [held[1:]])  # as after a bond stretched past the perception rule
    state.energy, state.forces = 0.0, np.zeros_like(state.positions)
    verlet = SimpleNamespace(pairs=(np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3))),
                             _ref=(state.positions, np.zeros((3, 3))), n_builds=0)
    checkpoint.save(tmp_path / "c.npz", "key", state, SimpleNamespace(), verlet, pot)
    fresh = potential()  # a new process: nothing held
    (fresh_term,) = held_terms(fresh)
    assert fresh_term.held_bonds().lookup(*where) == [None]
    assert checkpoint.load(tmp_path / "c.npz", "key", MDState(start), SimpleNamespace(), verlet, fresh)
    assert [h.tolist() for h in fresh_term.held_bonds().lookup(*where)] == [held[1:].tolist()]


def test_a_resume_that_is_killed_while_cutting_the_outputs_keeps_them_whole(tmp_path, monkeypatch, ethanol_data):
    """A resumed run cuts what the killed run wrote after its checkpoint; the files are rewritten through a
    temporary file, so a kill during that rewrite leaves the old files whole (not truncated), to be cut again."""
    import ase.io

    from ffspace.md import output

    thermo, traj = tmp_path / "thermo.csv", tmp_path / "trajectory.extxyz"
    rows = [[step, 0.5 * step, -1.0, 0.1, -0.9, 300.0] for step in (0, 10, 20, 30)]
    thermo.write_text(",".join(output.THERMO_COLUMNS) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    frames = []
    for step in (0, 10, 20, 30):
        atoms = ethanol_data[0].to_ase()
        atoms.info = {"step": step}
        frames.append(atoms)
    ase.io.write(traj, frames, format="extxyz")
    before = traj.read_bytes()

    def killed(filename, images, **kwargs):  # killed with the file it writes half written
        with open(filename, "w") as f:
            f.write(before.decode()[: len(before) // 3])
        raise KeyboardInterrupt
    monkeypatch.setattr(ase.io, "write", killed)
    with pytest.raises(KeyboardInterrupt):
        output._truncate_outputs(tmp_path, 10)
    assert traj.read_bytes() == before
    monkeypatch.undo()
    kept = output._truncate_outputs(tmp_path, 10)
    assert [r[0] for r in kept] == [0, 10]
    assert [a.info["step"] for a in ase.io.read(traj, index=":", format="extxyz")] == [0, 10]
