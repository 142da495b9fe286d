"""Reference data: DFT and xTB labels, the crash-safe store, local and Dask execution, bad input."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("tblite", reason="tblite (GFN2-xTB) not installed")

from ffspace.data import Structure, read_extxyz  # noqa: E402
from ffspace.errors import DataError  # noqa: E402
from ffspace.reference import XTBLabeler  # noqa: E402
from ffspace.reference.inputs import from_smiles, read_structures  # noqa: E402
from ffspace.reference.runner import label_structures  # noqa: E402
from ffspace.reference.sampling import normal_mode_sample, rattle  # noqa: E402
from ffspace.reference.store import LabelStore  # noqa: E402

from .conftest import shared_data  # noqa: E402

WATER = Structure(numbers=[8, 1, 1], positions=[[0, 0, 0.1173], [0, 0.7572, -0.4692], [0, -0.7572, -0.4692]])


def _config(tmp_path, **extra):
    cfg = {"input": {"smiles": "CCO"}, "samplers": [{"kind": "rattle", "n_frames": 300, "sigma": 0.05}],
           "labeler": {"method": "xtb"}, "store": str(tmp_path / "store"), "out": str(tmp_path / "data.extxyz"),
           "progress": False, **extra}
    path = tmp_path / "label.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def _check_forces_by_finite_differences(labeler, structure, components, h, tol):
    """Labeler forces equal −dE/dr by central differences of the labeler's own energies."""
    labeled = labeler.label(structure)
    for atom, d in components:
        e = []
        for sign in (1, -1):
            p = structure.positions.copy()
            p[atom, d] += sign * h
            e.append(labeler.label(structure.copy(positions=p)).energy)
        fd = -(e[0] - e[1]) / (2 * h)
        assert abs(fd - labeled.forces[atom, d]) < tol, (atom, d, fd, labeled.forces[atom, d])
    return labeled


def test_xtb_forces_match_finite_differences():
    from ffspace.testing.physics import ethanol

    labeled = _check_forces_by_finite_differences(XTBLabeler(), ethanol(0, rattle=0.05), [(0, 0), (3, 1), (8, 2)],
                                                  h=1e-4, tol=1e-4)
    assert labeled.info["label_method"] == "GFN2-xTB"


def test_dft_forces_match_finite_differences():
    pytest.importorskip("pyscf")
    from ffspace.reference.dft import PySCFLabeler

    s = WATER.copy(positions=WATER.positions + np.array([[0.02, -0.01, 0.0], [0, 0, 0.03], [0.01, 0, 0]]))
    # Density fitting and the DFT grid make the analytic gradient consistent only to ~1e-4 eV/Å.
    labeled = _check_forces_by_finite_differences(PySCFLabeler("PBE", "def2-SVP", density_fit=True), s,
                                                  [(0, 2), (1, 1)], h=1e-3, tol=5e-4)
    assert labeled.info["label_method"] == "PBE/def2-SVP"


def test_broken_symmetry_dft_breaks_a_bond_homolytically():
    """UKS from the mixed guess (and along its instabilities): a bond past its Coulson–Fischer point polarises its
    spins, with forces that are −dE/dr (the same state on either side); near equilibrium, in a field or not, it is
    the closed shell. (Dissociation to the two radicals is the next test's: water with an O–H bond at 3.5 Å.)"""
    pytest.importorskip("pyscf")
    from ffspace.reference.dft import PySCFLabeler

    closed = PySCFLabeler("PBE", "def2-SVP", density_fit=True)
    broken = PySCFLabeler("PBE", "def2-SVP", density_fit=True, broken_symmetry=True)
    # H2 at 1.97 Å, off the axes, past PBE's Coulson–Fischer point: the finite difference costs seconds on H2 (a
    # minute on water) and runs the same guesses, Newton steps and stability analysis. One component by finite
    # differences; the others follow from the two-atom symmetry, checked without a label: the forces are equal
    # and opposite and lie along the bond.
    h2 = Structure(numbers=[1, 1], positions=[[0.0, 0.0, 0.0], [0.8, 0.6, 1.7]])
    labeled = _check_forces_by_finite_differences(broken, h2, [(1, 2)], h=1e-3, tol=5e-4)
    f = labeled.forces
    np.testing.assert_allclose(f[0], -f[1], atol=1e-6)
    u = (h2.positions[1] - h2.positions[0]) / np.linalg.norm(h2.positions[1] - h2.positions[0])
    np.testing.assert_allclose(f[1] - (f[1] @ u) * u, 0.0, atol=5e-4)  # eV/Å, as the finite difference
    assert labeled.energy < closed.label(h2).energy - 0.1  # spin-polarised: 0.34 eV below the closed shell here
    assert np.abs(f).min() > 0.05  # still bound at 1.97 Å: the check above compares non-zero forces
    # near equilibrium (H2 at 0.74 Å) it is the closed shell
    h2_eq = Structure(numbers=[1, 1], positions=[[0.0, 0.0, 0.0], [0.3, 0.2, 0.65]])
    e_closed = closed.label(h2_eq).energy
    assert abs(broken.label(h2_eq).energy - e_closed) < 1e-4
    # in a field too: the second-order solver must see the field's core Hamiltonian (it builds it from the inner
    # SCF object, so the field goes on before `newton()`)
    in_field = h2_eq.copy(info={"field": np.array([0.5, 1.0, 2.0])})
    a, b = broken.label(in_field), closed.label(in_field)
    assert abs(a.energy - b.energy) < 1e-4 and abs(a.energy - e_closed) > 1e-3
    np.testing.assert_allclose(a.info["dipole"], b.info["dipole"], atol=1e-4)
    assert labeled.info["label_method"] == "UPBE/def2-SVP (broken symmetry)"
    assert broken.provenance()["broken_symmetry"] and "broken_symmetry" not in closed.provenance()


@pytest.mark.slow
def test_broken_symmetry_dft_finds_the_radicals_where_the_mixed_guess_alone_found_ions():
    """Water with one O–H at 3.5 Å (the other 0.9686 Å, 104°): the HOMO/LUMO mix alone converged to the ionic
    OH⁺ + H⁻ state, 9.5 eV above the radicals and internally stable; the labeler keeps the lower of that and the
    triplet-flip start, within 0.1 eV of OH· + H·."""
    pytest.importorskip("pyscf")
    from ffspace.reference.dft import PySCFLabeler

    angle = np.radians(104.0)
    far = Structure(numbers=[8, 1, 1], positions=[[0, 0, 0], [3.5, 0, 0], [0.9686 * np.cos(angle),
                                                                          0.9686 * np.sin(angle), 0]])
    labeled = PySCFLabeler("PBE", "def2-SVP", density_fit=True, broken_symmetry=True).label(far)
    doublet = PySCFLabeler("PBE", "def2-SVP", density_fit=True, multiplicity=2)
    radicals = (doublet.label(Structure(numbers=[8, 1], positions=far.positions[[0, 2]])).energy
                + doublet.label(Structure(numbers=[1], positions=[[0.0, 0.0, 0.0]])).energy)
    assert abs(labeled.energy - radicals) < 0.1


def test_shipped_dataset_is_what_the_labeler_gives(ethanol_data):
    """The shipped file's labels are reproducible by the labeler (spot check of three frames)."""
    lab = XTBLabeler()
    for k in (0, 150, 399):
        s = ethanol_data[k]
        again = lab.label(s)
        assert abs(again.energy - s.energy) < 1e-6
        np.testing.assert_allclose(again.forces, s.forces, atol=1e-5)


@pytest.mark.slow
def test_dft_reproduces_rmd17_level_of_theory():
    """PBE/def2-SVP on 2 rMD17 ethanol frames: forces within 5 meV/Å, their energy difference within 2 meV."""
    pytest.importorskip("pyscf")
    from ffspace.data import read_dataset
    from ffspace.reference.dft import PySCFLabeler

    frames = read_dataset(shared_data("rmd17", "rmd17_ethanol_test_01.npz"))[[0, 800]]
    ours = [PySCFLabeler("PBE", "def2-SVP").label(s) for s in frames]
    f_mae = np.mean([np.abs(a.forces - b.forces).mean() for a, b in zip(ours, frames)]) * 1000
    de = np.array([a.energy for a in ours]) - np.array([b.energy for b in frames])
    rel = np.abs(de - de.mean()).max() * 1000
    print(f"\nPySCF PBE/def2-SVP vs rMD17 (2 ethanol frames): force MAE {f_mae:.2f} meV/Å, "
          f"max relative energy error {rel:.2f} meV")
    assert f_mae <= 5.0 and rel <= 2.0


def test_xtb_and_dft_bad_input_errors():
    from ffspace.reference.dft import PySCFLabeler

    with pytest.raises(DataError, match="impossible"):
        XTBLabeler(multiplicity=2).label(WATER)  # 10 electrons cannot be a doublet
    with pytest.raises(DataError, match="impossible"):
        PySCFLabeler(charge=1).label(WATER)  # 9 electrons, singlet
    uranium = Structure(numbers=[92, 8], positions=[[0, 0, 0], [0, 0, 1.8]], source="u.xyz", frame=0)
    with pytest.raises(DataError, match="no parameters") as err:
        XTBLabeler().label(uranium)
    assert "u.xyz" in str(err.value) and "numbers" in str(err.value)
    with pytest.raises(DataError, match="SMILES"):
        from_smiles("C1CC(")
    with pytest.raises(DataError, match="not found"):
        read_structures("/nonexistent/file.xyz")


def test_unreadable_structure_file(tmp_path):
    bad = tmp_path / "broken.pdb"
    bad.write_text("ATOM      1  C   XXX A   1    garbage\n")
    with pytest.raises(DataError) as err:
        read_structures(bad)
    assert "broken.pdb" in str(err.value)


def test_smiles_and_samplers_record_provenance():
    start = from_smiles("CCO")[0]
    assert start.n_atoms == 9 and start.info["smiles"] == "CCO"
    r = rattle(start, 3, 0.05, seed=1)
    assert len({f.positions.tobytes() for f in r}) == 3 and r[0].info["sampler"] == "rattle"
    nm = normal_mode_sample(start, XTBLabeler(), 4, temperature=300.0, seed=0)
    disp = [np.sqrt(((f.positions - start.positions) ** 2).sum(axis=1)).max() for f in nm]
    assert all(0.01 < d < 1.0 for d in disp) and nm[0].info["sampler"] == "normal_modes"


def test_store_survives_two_kills_that_tear_the_last_line(tmp_path):
    """A record torn by a kill is dropped, then cut off by the next append: a second resume must not find it
    in the middle of the file."""
    store = LabelStore(tmp_path / "store")
    mol = Structure(numbers=[1, 1], positions=[[0, 0, 0], [0.74, 0, 0]], energy=-1.0, forces=[[0, 0, 0]] * 2)
    store.add("a", mol)
    with open(store.labels_path, "ab") as f:
        f.write(b'{"key": "torn", "numb')  # killed mid-write
    store = LabelStore(tmp_path / "store")
    assert set(store.labels) == {"a"}
    store.add("b", mol)
    with open(store.labels_path, "ab") as f:
        f.write(b'{"key": "torn again')
    store = LabelStore(tmp_path / "store")  # the second resume
    assert set(store.labels) == {"a", "b"}
    store.add("c", mol)
    assert [json.loads(x)["key"] for x in store.labels_path.read_text().splitlines()] == ["a", "b", "c"]


def test_store_seals_full_files_into_compressed_shards(tmp_path):
    """Past ``shard_bytes`` the labels move into sealed gzip shards (what keeps a store in a repository under its
    file-size limit), read back in order with the open file; a crash between writing a shard and removing
    ``labels.jsonl`` repeats no label, in memory or in the next shard."""
    mol = Structure(numbers=[1, 1], positions=[[0, 0, 0], [0.74, 0, 0]], energy=-1.0, forces=[[0, 0, 0]] * 2)
    store = LabelStore(tmp_path / "store", shard_bytes=1000)
    keys = [f"k{i:02d}" for i in range(12)]
    for i, k in enumerate(keys):
        store.add(k, mol.copy(energy=-float(i)))
    shards = store.shards()
    assert len(shards) >= 2
    assert all(p.stat().st_size < 1000 for p in [*shards, store.labels_path] if p.exists())
    again = LabelStore(tmp_path / "store", shard_bytes=1000)
    assert list(again.labels) == keys and again.get("k07").energy == -7.0
    sealed = set(again.labels) - set(again._load(again.labels_path))
    assert sealed == {json.loads(x)["key"] for p in shards for x in gzip.decompress(p.read_bytes()).splitlines()}
    # killed after the shard was written, before labels.jsonl went: its labels are in both places
    store = LabelStore(tmp_path / "store", shard_bytes=None)
    store.add("k12", mol)
    kept = store.labels_path.read_bytes()
    store.seal()
    store.labels_path.write_bytes(kept)
    store = LabelStore(tmp_path / "store", shard_bytes=None)
    assert list(store.labels) == keys + ["k12"]
    store.add("k13", mol)
    store.seal()
    last = gzip.decompress(store.shards()[-1].read_bytes()).splitlines()
    assert [json.loads(x)["key"] for x in last] == ["k13"] and not store.labels_path.exists()
    assert LabelStore(tmp_path / "store", shard_bytes=None).seal() is None  # nothing left to seal


def test_store_dedupes_identical_frames(tmp_path):
    start = from_smiles("CCO")[0]
    frames = rattle(start, 5, 0.05, seed=0)
    frames = frames + [frames[0].copy(), frames[2].copy()]
    store = LabelStore(tmp_path / "store")
    data = label_structures(frames, XTBLabeler(), store, progress=False)
    assert len(store.labels) == 5  # the two repeats were not labeled again
    assert len(data) == 7 and data[5].energy == data[0].energy


def test_label_job_killed_and_rerun_loses_and_repeats_nothing(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ffspace.cli", "label"]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_dir.mkdir(), run_dir.mkdir()
    subprocess.run(cmd + [str(_config(ref_dir))], check=True, env=env, capture_output=True)

    # A DFT-free but slowed job: one label at a time, killed when part of the store is written.
    cfg = _config(run_dir)
    proc = subprocess.Popen(cmd + [str(cfg)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    labels = run_dir / "store" / "labels.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (labels.exists() and len(labels.read_bytes().splitlines()) >= 10):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(LabelStore(run_dir / "store").labels)
    assert 10 <= done_before < 300, done_before
    rerun = subprocess.run(cmd + [str(cfg)], check=True, env=env, capture_output=True, text=True)
    assert f"({done_before} labels already" in rerun.stderr
    keys = [json.loads(x)["key"] for x in labels.read_text().splitlines() if x.strip()]
    assert len(keys) == len(set(keys)) == 300  # nothing recomputed, nothing lost
    a = read_extxyz(ref_dir / "data.extxyz")
    b = read_extxyz(run_dir / "data.extxyz")
    assert len(a) == len(b) == 300
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.positions, y.positions)
        assert x.energy == y.energy
        np.testing.assert_array_equal(x.forces, y.forces)


def test_local_workers_and_dask_cluster_give_the_same_dataset(tmp_path):
    distributed = pytest.importorskip("distributed")
    frames = rattle(from_smiles("CCO")[0], 12, 0.05, seed=3)
    serial = label_structures(frames, XTBLabeler(), LabelStore(tmp_path / "serial"), progress=False)
    pooled = label_structures(frames, XTBLabeler(), LabelStore(tmp_path / "pool"), workers=2, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        dask = label_structures(frames, XTBLabeler(), LabelStore(tmp_path / "dask"), scheduler=client,
                                progress=False)
    for other in (pooled, dask):
        assert len(other) == len(serial) == 12
        for x, y in zip(serial, other):
            np.testing.assert_array_equal(x.positions, y.positions)
            assert x.energy == pytest.approx(y.energy, abs=1e-9)
            np.testing.assert_allclose(x.forces, y.forces, atol=1e-8)


def test_a_molecule_list_sampled_on_workers_and_on_dask_gives_the_serial_frames(tmp_path, monkeypatch):
    """The sampling of a SMILES list (the cost of a large xTB recipe) runs a molecule per task: on local processes
    and on a Dask cluster it gives the serial run's frames, in order, and records the same molecule as left out
    (water has no rotatable bond to scan). Parts already made are not made again: a killed run loses only the
    molecules in flight."""
    from ffspace.reference import job
    from ffspace.reference.config import LabelConfig

    def recipe(name, **kw):
        return LabelConfig(input={"smiles": ["CCCC", "O", "CC=O"]},
                           samplers=[{"kind": "torsion_scan", "n_frames": 3},
                                     {"kind": "normal_modes", "temperature": 300, "n_frames": 2}],
                           store=str(tmp_path / name), out=str(tmp_path / f"{name}.extxyz"), progress=False, **kw)

    serial = job.sampled_frames(recipe("serial"), tmp_path / "serial")

    def not_here(*args):
        raise AssertionError("sampled in the parent process: the workers were not used")
    monkeypatch.setattr(job, "sample_start", not_here)  # (the workers import the module afresh: theirs is real)
    runs = {"workers": job.sampled_frames(recipe("workers", workers=2), tmp_path / "workers")}
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c, \
            distributed.Client(c) as client:
        runs["dask"] = job.sampled_frames(recipe("dask"), tmp_path / "dask", scheduler=client)
    assert len(serial) == 10 and {f.info["smiles"] for f in serial} == {"CCCC", "CC=O"}
    failures = (tmp_path / "serial" / "input_failures.jsonl").read_text()
    assert "no rotatable bond" in failures
    for name, frames in runs.items():
        assert (tmp_path / name / "input_failures.jsonl").read_text() == failures
        assert [f.info for f in frames] == [f.info for f in serial]
        for x, y in zip(serial, frames):
            np.testing.assert_allclose(x.positions, y.positions, atol=1e-6)
    cfg = recipe("resumed", workers=2)
    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "00001.extxyz").write_text("")  # (made before a kill: kept as it is)
    starts = job.start_structures(cfg, [])
    job._sample_in_parallel(cfg, starts, parts)
    assert (parts / "00001.extxyz").read_text() == "" and not (parts / "00001.failed.json").exists()
    assert len(read_extxyz(parts / "00000.extxyz", required=())) == 5 and len(read_extxyz(parts / "00002.extxyz", required=())) == 5


def test_torsion_scan_and_dimers(tmp_path):
    from ffspace.reference.sampling import dimer_scan, rotatable_dihedrals, torsion_scan

    start = from_smiles("CCO")[0]
    assert len(rotatable_dihedrals(start)) == 2  # C–C and C–O
    scan = torsion_scan(start, 12)
    a, b, c, d = map(int, scan[0].info["sampler_dihedral"].split("-"))
    angles = [f.to_ase().get_dihedral(a, b, c, d) for f in scan]
    steps = np.diff(np.unwrap(np.radians(angles)))
    np.testing.assert_allclose(np.degrees(steps), 30.0, atol=1e-6)
    # Rigid rotation: every bond length is unchanged.
    bond = np.linalg.norm(start.positions[b] - start.positions[c])
    assert all(abs(np.linalg.norm(f.positions[b] - f.positions[c]) - bond) < 1e-9 for f in scan)
    dimers = dimer_scan(start, [3.0, 6.0], n_orientations=2)
    assert len(dimers) == 4 and dimers[0].n_atoms == 18


def test_sampling_from_given_starts_is_cached_under_their_own_name(tmp_path):
    from ffspace.reference.config import LabelConfig, SamplerConfig
    from ffspace.reference.job import sampled_frames, start_structures

    cfg = LabelConfig(input={"smiles": "CCO"}, samplers=[SamplerConfig(kind="rattle", n_frames=3)], seed=1)
    default = sampled_frames(cfg, tmp_path)
    other = [s.copy(positions=s.positions + 0.1) for s in start_structures(cfg)]
    moved = sampled_frames(cfg, tmp_path, other)
    # Frames sampled around the given starts, not read back from the default starts' file.
    np.testing.assert_allclose(np.mean([f.positions - d.positions for f, d in zip(moved, default)]), 0.1, atol=1e-6)
    assert len(list(tmp_path.glob("samples-*.extxyz"))) == 2


def test_md_sampling_driven_by_a_trained_model(tmp_path, trained_package):
    import yaml

    from ffspace.reference.config import LabelConfig
    from ffspace.reference.job import run_label_job

    cfg = LabelConfig(**yaml.safe_load(_config(tmp_path).read_text()))
    cfg.samplers = [cfg.samplers[0].model_copy(update={"kind": "md", "driver": str(trained_package),
                                                         "n_frames": 5, "interval": 5,
                                                         "equilibration_steps": 10})]
    data = run_label_job(cfg)
    assert len(data) == 5 and data[0].info["sampler"] == "md"


def test_dft_dispersion_and_open_shell():
    pytest.importorskip("pyscf")
    pytest.importorskip("pyscf.dispersion", reason="pyscf-dispersion not installed")
    from ffspace.reference.dft import PySCFLabeler

    plain = PySCFLabeler("PBE", "def2-SVP").label(WATER)
    d3 = PySCFLabeler("PBE", "def2-SVP", dispersion="d3bj").label(WATER)
    shift = d3.energy - plain.energy
    assert -0.1 < shift < 0.0, shift  # D3(BJ) is attractive and small for one water molecule (eV)
    oh = Structure(numbers=[8, 1], positions=[[0, 0, 0], [0, 0, 0.97]])
    radical = PySCFLabeler("PBE", "def2-SVP", multiplicity=2).label(oh)
    assert np.isfinite(radical.energy) and radical.info["label_method"] == "PBE/def2-SVP"


def test_unconverged_scf_is_recorded_as_a_failure_not_a_label(tmp_path):
    pytest.importorskip("pyscf")
    from ffspace.reference.dft import PySCFLabeler

    store = LabelStore(tmp_path / "store")
    stretched = WATER.copy(positions=WATER.positions * 1.8)
    lab = PySCFLabeler("PBE", "def2-SVP", max_cycle=2, conv_tol=1e-12)
    with pytest.raises(DataError, match="no structure could be labeled"):
        label_structures([stretched], lab, store, progress=False)
    assert len(store.labels) == 0 and len(store.failures) == 1
    reason = next(iter(store.failures.values()))["reason"]
    assert "not converged" in reason
    assert (tmp_path / "store" / "failures.jsonl").read_text().count("\n") == 1


def test_a_frame_the_labeler_refuses_is_a_recorded_failure_and_the_others_go_on(tmp_path):
    """A DataError from the labeler (a charge the electrons cannot have, an element the method lacks) fails that
    frame only; a frame whose own charge is not the labeler's is refused before any calculation; a charged label
    carries its charge for charge-aware models; `retry_failed` labels the failures again."""
    lab = XTBLabeler()
    frames = [WATER, Structure(numbers=[8, 1], positions=[[0, 0, 0], [0, 0, 0.97]])]  # OH: 9 electrons, singlet
    charged = WATER.copy(positions=WATER.positions * 1.01)
    charged.info["charge"] = 1
    store = LabelStore(tmp_path / "store")
    data = label_structures(frames + [charged], lab, store, progress=False)
    assert len(data) == 1 and len(store.failures) == 2
    reasons = sorted(f["reason"] for f in store.failures.values())
    assert "impossible" in reasons[1] and "charge 1 is not the labeler's 0" in reasons[0]
    cation = XTBLabeler(charge=1, multiplicity=2)
    out = label_structures([WATER], cation, LabelStore(tmp_path / "cation"), progress=False)
    assert out[0].info["charge"] == 1
    calls = []
    real = lab.label

    def counted(s):
        calls.append(s)
        return real(s)
    lab.label = counted
    label_structures(frames, lab, store, progress=False)
    assert calls == []  # recorded failures are not retried by default
    with pytest.raises(DataError):  # (no new label either way: the good frame is stored, OH fails again)
        label_structures(frames[1:], lab, store, progress=False, retry_failed=True)
    assert len(calls) == 1


def test_a_numerical_error_inside_the_labeler_fails_that_frame_and_a_setup_error_stops_the_run(tmp_path):
    """An error the QM code raises on one geometry (a singular matrix, an eigensolver that gives up: ValueError,
    RuntimeError, ArithmeticError) is that frame's recorded failure and the others go on; an error that would fail
    every frame (a missing module, a wrong argument) stops the run at once instead of filling the failures."""
    from ffspace.reference.runner import _label_one

    class Breaks:
        charge = 0

        def __init__(self, error):
            self.error = error

        def provenance(self):
            return {"method": "test", "charge": 0}

        def label(self, s):
            if np.abs(s.positions).max() > 1.0:
                raise self.error
            return XTBLabeler().label(s)

    stretched = WATER.copy(positions=WATER.positions * 1.5)
    status, reason, details = _label_one(Breaks(RuntimeError("eigh did not converge")), stretched)
    assert status == "failed" and "RuntimeError: eigh did not converge" in reason and details["error"] == "RuntimeError"
    store = LabelStore(tmp_path / "store")
    data = label_structures([WATER, stretched], Breaks(np.linalg.LinAlgError("singular")), store, progress=False)
    assert len(data) == 1 and len(store.failures) == 1
    with pytest.raises(ImportError):
        label_structures([stretched], Breaks(ImportError("no module named pyscf")), LabelStore(tmp_path / "other"),
                         progress=False)
    assert not LabelStore(tmp_path / "other").failures


def test_radicals_and_fields_without_dft_are_refused_up_front(tmp_path):
    from pydantic import ValidationError

    from ffspace.reference.config import LabelConfig
    from ffspace.reference.molecules import problem

    assert "cannot have the labeler's multiplicity 1" in problem("[CH3]", None, [], charge=0, multiplicity=1)
    assert problem("[CH3]", None, [], charge=0, multiplicity=2) is None
    assert problem("C", None, [], charge=0, multiplicity=1) is None
    # an even electron count can still be a radical: a carbene, two unpaired electrons, is no closed-shell molecule
    assert "2 unpaired electrons" in problem("[CH2]", None, [], charge=0, multiplicity=1)
    assert problem("[CH2]", None, [], charge=0, multiplicity=3) is None
    assert problem("O=O", None, [], charge=0, multiplicity=3) is None  # (written without radicals: not refused)
    base = {"input": {"smiles": "O"}, "fields": {"copies": 1}}
    with pytest.raises(ValidationError, match="need labeler.method: dft"):
        LabelConfig(**base, labeler={"method": "xtb"})
    LabelConfig(**base, labeler={"method": "dft"})


def test_a_molecule_whose_sampling_fails_in_xtb_is_left_out_and_the_list_goes_on(tmp_path, monkeypatch):
    """An xTB SCF failure inside a sampler (normal modes need its Hessian) is a `LabelFailure`: recorded for
    that molecule, and the others are sampled."""
    from ffspace.reference import job
    from ffspace.reference.base import LabelFailure
    from ffspace.reference.config import LabelConfig

    real = job.sample_start

    def failing_for_methanol(cfg, start, k):
        if start.info.get("smiles") == "CO":
            raise LabelFailure("xTB SCF not converged")
        return real(cfg, start, k)
    monkeypatch.setattr(job, "sample_start", failing_for_methanol)
    cfg = LabelConfig(input={"smiles": ["CO", "O"]}, samplers=[{"kind": "rattle", "n_frames": 2}],
                      store=str(tmp_path / "store"), out=str(tmp_path / "out.extxyz"), progress=False)
    frames = job.sampled_frames(cfg, cfg.store)
    assert len(frames) == 2 and all(f.info["smiles"] == "O" for f in frames)
    failures = (tmp_path / "store" / "input_failures.jsonl").read_text()
    assert "CO" in failures and "not converged" in failures


def test_sampled_frames_keep_who_the_start_is_but_not_its_labels():
    """A start from a labelled dataset (relabelling at another level) hands its frames its identity, not its
    dipole or provenance: those belong to the start's geometry and level of theory."""
    start = WATER.copy()
    start.info.update({"smiles": "O", "charge": 0, "dipole": np.array([0.0, 0.0, 0.4]), "label_method": "wb97x",
                       "REF_energy": -2000.0, "sampler": "md", "sampler_temperature_K": 1200.0})
    (frame,) = rattle(start, 1, seed=0)
    assert frame.info["smiles"] == "O" and frame.info["charge"] == 0 and frame.info["sampler"] == "rattle"
    assert not {"dipole", "label_method", "REF_energy", "sampler_temperature_K"} & set(frame.info)


def test_labels_of_another_program_version_are_reused_not_made_again(tmp_path, capsys):
    """A new PySCF or tblite release changes the program version in the labels' provenance (and so in their store
    keys); the store's labels at the same method and settings are reused, each keeping the version that made it,
    and the reuse is said, instead of hours of relabelling without a word."""

    class Versioned(XTBLabeler):
        def __init__(self, version):
            super().__init__()
            self.version, self.calls = version, 0

        def provenance(self):
            return {**super().provenance(), "program_version": self.version}

        def label(self, s):
            self.calls += 1
            return super().label(s)

    frames = rattle(from_smiles("CCO")[0], 4, 0.05, seed=0)
    store = LabelStore(tmp_path / "store")
    old = label_structures(frames[:3], Versioned("0.1"), store, progress=False)
    new_labeler = Versioned("0.2")
    new = label_structures(frames, new_labeler, LabelStore(tmp_path / "store"), progress=False)
    assert new_labeler.calls == 1  # only the frame the store lacked
    assert [s.energy for s in new[:3]] == [s.energy for s in old]
    assert [s.info["label_program_version"] for s in new] == ["0.1", "0.1", "0.1", "0.2"]
    assert "3 label(s) made by tblite 0.1 reused (this is 0.2" in capsys.readouterr().err
    other_method = Versioned("0.3")
    other_method.method = "GFN1-xTB"
    label_structures(frames[:1], other_method, LabelStore(tmp_path / "store"), progress=False)
    assert other_method.calls == 1  # another method is another label, whatever the version


def test_a_recipe_whose_sampling_settings_changed_refuses_to_orphan_its_labels(tmp_path):
    """The labels of a recipe are keyed by its sampled frames: changed sampling settings (a seed, a sampler, the
    SMILES file's bytes) make new frames that none of them fit, so the run stops and says so, unless resample is
    set; another recipe (another `out`) may share the store."""
    import yaml

    from ffspace.errors import ConfigError
    from ffspace.reference.config import LabelConfig
    from ffspace.reference.job import run_label_job

    base = yaml.safe_load(_config(tmp_path).read_text())
    base["samplers"][0]["n_frames"] = 2
    run_label_job(LabelConfig(**base))
    with pytest.raises(ConfigError, match="resample: true"):
        run_label_job(LabelConfig(**{**base, "seed": 5}))
    assert len(list((tmp_path / "store").glob("samples-*.extxyz"))) == 1  # refused before sampling
    run_label_job(LabelConfig(**{**base, "seed": 5, "out": str(tmp_path / "other.extxyz")}))  # another recipe
    run_label_job(LabelConfig(**{**base, "seed": 6, "resample": True}))
    assert len(list((tmp_path / "store").glob("samples-*.extxyz"))) == 3


def test_max_new_labels_time_boxes_a_run_and_zero_writes_what_the_store_holds(tmp_path, capsys):
    """A long recipe labelled a few frames at a time: each run labels at most max_new_labels missing frames, in
    the samples' order, and writes every label the store holds; 0 labels nothing and only writes the set."""
    import yaml

    from ffspace.reference.config import LabelConfig
    from ffspace.reference.job import run_label_job

    base = yaml.safe_load(_config(tmp_path).read_text())
    base["samplers"][0]["n_frames"] = 6
    first = run_label_job(LabelConfig(**base, max_new_labels=2))
    assert len(first) == 2 and len(LabelStore(tmp_path / "store")) == 2
    assert "4 left for a later run" in capsys.readouterr().err
    export = run_label_job(LabelConfig(**base, max_new_labels=0))
    assert len(LabelStore(tmp_path / "store")) == 2  # nothing labelled
    assert [s.energy for s in export] == [s.energy for s in first]
    assert len(read_extxyz(tmp_path / "data.extxyz")) == 2
    full = run_label_job(LabelConfig(**base))
    assert len(full) == 6 and len(LabelStore(tmp_path / "store")) == 6
    np.testing.assert_array_equal(full[0].positions, first[0].positions)  # the first two kept their place
    assert full[1].energy == first[1].energy


def test_labels_made_before_frames_knew_their_molecule_get_its_identity_from_the_frames(tmp_path):
    frames = rattle(from_smiles("CCO")[0], 2, 0.05, seed=0)
    anonymous = [f.copy(info={k: v for k, v in f.info.items() if k not in ("smiles", "name")}) for f in frames]
    store = LabelStore(tmp_path / "store")
    assert "smiles" not in label_structures(anonymous, XTBLabeler(), store, progress=False)[0].info
    again = label_structures(frames, XTBLabeler(), LabelStore(tmp_path / "store"), progress=False)
    assert [s.info["smiles"] for s in again] == [f.info["smiles"] for f in frames]
