"""``ffspace bench``: the small config end to end (< 2 min), resumption, and the parts measured alone."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ffspace.bench import load_bench_config, run_bench
from ffspace.bench import openmm_reference, speed, stability, systems
from ffspace.errors import ConfigError
from ffspace.models import peers
from ffspace.models.composite import AtomicReference, Sum
from ffspace.potential import Potential

SMALL = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "bench_small.yaml"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    cfg = load_bench_config(SMALL, [f"out={out}"])
    results = run_bench(cfg, command="test")
    return out, results


@pytest.mark.slow
def test_small_bench_reports_every_figure(small_run):
    out, results = small_run
    ds = results["datasets"]["ethanol"]
    assert set(ds["models"]) == {"mm", "graph_mm", "schnet", "ani_peer"}
    peer = ds["models"]["ani_peer"]  # checked below: the others are ours
    for name, m in ((k, v) for k, v in ds["models"].items() if k != "ani_peer"):
        assert m["status"] == "ok", m
        assert np.isfinite(m["test"]["forces_mae_meV_A"]) and m["test"]["forces_mae_meV_A"] > 0
        assert set(m["per_element"]) == {"H", "C", "O"}
        assert m["training"]["time_s"] <= 0.05 * 60 + 10  # the budget (an epoch never starts past it)
        assert set(m["speed_molecule"]) == {"float32"}  # the config's dtypes
        assert m["speed_molecule"]["float32"]["status"] == "ok", m["speed_molecule"]["float32"]
        assert m["speed_molecule"]["float32"]["us_per_atom_step"] > 0
        row = m["speed_molecule"]["float32"]  # full MD steps beside the calls (speed.md_steps)
        assert row["md_status"] == "ok" and row["md_steps"] == 300, row
        assert row["md_us_per_atom_step"] > 0.5 * row["us_per_atom_step"]  # a step holds a call
        runs = m["stability"]["runs"]
        assert set(runs) == {"300", "1200"}
        slow = m["stability"]["ms_per_step_float32"] > 2.0
        assert runs["1200"]["time_ps"] == (0.025 if slow else 0.03)  # stability.time_ps_at
        assert runs["300"]["time_ps"] == (0.025 if slow else 0.05)
        reference = m["stability"]["reference"]  # the training frames' bond lengths and most flexible dihedral
        assert len(reference["dihedral_atoms"]) == 4 and set(reference["bonds"]) == {"C-C", "C-H", "C-O", "H-O"}
        for r in runs.values():
            assert all(t is None or 0 < t <= r["time_ps"] for t in r["failure_ps"]), r
            assert r["survived"] == sum(t is None for t in r["failure_ps"])
            assert r["min_distance_A"] == 0.6
            if r["survived"]:  # what the survivors sampled, every 5 fs, against the training frames
                sampled = r["sampled"]
                assert sampled["samples"] == r["survived"] * round(r["time_ps"] * 1000 / 5)
                assert sampled["dihedral_atoms"] == reference["dihedral_atoms"]
                assert 0 <= sampled["overlap"]["dihedral"] <= 1 and 0 <= sampled["overlap"]["bonds_min"] <= 1
            else:
                assert "sampled" not in r
        nve = m["stability"]["nve"]
        assert nve["status"] in ("ok", "all failed") and len(nve["drift_meV_per_atom_ps"]) == 2
    assert results["datasets"]["ethanol"]["extrapolation_sets"]["pbe"]["n"] > 0
    water = results["water"]["models"]
    assert water["graph_mm"]["float32"]["rows"][0]["status"] == "not applicable"
    if openmm_reference.available():
        assert ds["openmm_reference"]["status"] == "ok" and ds["openmm_reference"]["us_per_atom_step"] > 0
        assert [r["status"] for r in results["water"]["openmm_tip3p"]["rows"]] == ["ok", "ok"]
        assert "As full MD steps" in (out / "report.md").read_text()
    for name in ("mm", "schnet"):
        per_dtype = water[name]
        rows = per_dtype["float32"]["rows"]
        assert [r["n_atoms"] for r in rows] == [192, 1536]
        assert all(r["status"] == "ok" for r in rows), rows
        assert rows[1]["n_edges"] > 7 * rows[0]["n_edges"]
        # 8× the atoms: a cutoff model costs about 8× (a generous band: timings on a shared machine are noisy)
        assert 0.5 < per_dtype["float32"]["exponent"] < 1.7, (name, rows)
        for row in rows:  # one pass of the default 2 interleaved cycles: each cost is the geometric mean of 2 calls
            assert len(row["interleaved_calls_ms"]) == 2
            assert row["ms_per_step"] == pytest.approx(np.sqrt(np.prod(row["interleaved_calls_ms"])))
            assert row["fastest_ms"] == min(row["interleaved_calls_ms"])
            assert row["single_process_ms_per_step"] > 0 and row["peak_memory_mb"] > 0
        assert (out / "ethanol" / name / "speed_water_interleaved_float32.json").exists()
    report = (out / "report.md").read_text()
    if peers.installed("torchani"):
        assert peer["status"] == "ok" and peer["speed_molecule"]["float32"]["status"] == "ok", peer
        assert "× the peer ani_peer" in report  # our best model's cost relative to the peer, same run
    else:
        assert peer["status"] == "not installed" and "install_peers.sh" in peer["detail"]
        assert "ani_peer | torchani | not installed" in report
    assert "Our most accurate model: **" in report and "ani_peer**" not in report  # a peer is never "ours"
    saved = json.loads((out / "report.json").read_text())
    assert saved["datasets"]["ethanol"]["n_test"] == 30
    for text in ("accuracy and cost", "MD stability", "Cost against system size", "exponent",
                 "geometric mean of 2 calls: 1 timing pass(es)"):
        assert text in report
    for plot in ("pareto_ethanol.png", "survival_ethanol.png", "scaling.png"):
        assert (out / plot).stat().st_size > 1000


@pytest.mark.slow
def test_rerun_resumes_without_repeating_finished_steps(small_run):
    out, results = small_run
    forgotten = out / "ethanol" / "schnet" / "speed_water_1536_float32.json"
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")
              and p.parent.name != "out"}
    forgotten.unlink()
    again = run_bench(load_bench_config(SMALL, [f"out={out}"]), command="test")
    assert forgotten.exists()  # redone
    redone = [p for p, t in stamps.items() if p != forgotten and p.stat().st_mtime_ns != t]
    assert redone == [], redone  # nothing else
    assert again["datasets"]["ethanol"]["models"]["mm"]["test"] == results["datasets"]["ethanol"]["models"]["mm"]["test"]
    # A changed MD setting redoes the MD steps of every model and nothing else.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.parent.parent.name == "ethanol"}
    run_bench(load_bench_config(SMALL, [f"out={out}", "stability.bond_tolerance=0.6"]), command="test")
    changed = sorted(p.name for p, t in stamps.items() if p.stat().st_mtime_ns != t)
    n_models = 4 if peers.installed("torchani") else 3  # the peer trains only where it is installed
    assert changed == sorted(["stability_300K.json", "stability_1200K.json", "stability_nve.json"] * n_models), changed
    # An extrapolation set added later (a hot test set labelled after the training) is evaluated alone.
    cfg = load_bench_config(SMALL, [f"out={out}", "stability.bond_tolerance=0.6"])
    cfg.datasets[0].extrapolation["pbe_again"] = "builtin:ethanol_pbe_def2svp"
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.parent.name == "ethanol"
              and p.suffix in (".json", ".safetensors")}  # (the saved molecule is rewritten every run)
    added = run_bench(cfg, command="test")["datasets"]["ethanol"]
    assert [p for p, t in stamps.items() if p.stat().st_mtime_ns != t] == []
    new_files = sorted(p.name for p in out.rglob("*.json") if p.parent.parent.name == "ethanol" and p not in stamps)
    assert new_files == ["extrapolation_pbe_again.json"] * n_models, new_files
    assert added["models"]["mm"]["extrapolation"]["pbe_again"] == added["models"]["mm"]["extrapolation"]["pbe"]


@pytest.mark.slow
def test_a_second_timing_pass_keeps_the_fastest(small_run):
    """speed.rounds=2: a second pass over the molecule timings (and OpenMM's water), in files of its own; each
    figure is the faster pass; the water costs come from both passes' interleaved cycles."""
    out, _ = small_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.name.startswith(("speed_", "openmm_", "tip3p_"))}
    again = run_bench(load_bench_config(SMALL, [f"out={out}", "speed.rounds=2"]), command="test")
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # the first pass is read back
    second = {p.name for p in (out / "ethanol" / "schnet").glob("*_r1.json")}
    assert second == {"speed_molecule_float32_r1.json", "speed_water_interleaved_float32_r1.json"}
    assert sorted(p.name for p in (out / "ethanol" / "graph_mm").glob("speed_water_*")) == [
        "speed_water_192_float32.json"]  # "not applicable": nothing to re-time
    water = again["water"]["models"]["schnet"]["float32"]
    for row in water["rows"]:  # the water costs: over both passes' 2 cycles
        assert len(row["interleaved_calls_ms"]) == 4 and row["fastest_ms"] == min(row["interleaved_calls_ms"])
    assert len(water["exponent_3000_plus_per_cycle"]) == 4
    rows = [again["datasets"]["ethanol"]["models"]["mm"]["speed_molecule"]["float32"]]
    if openmm_reference.available():
        rows.append(again["water"]["openmm_tip3p"]["rows"][0])
    for row in rows:
        assert len(row["passes_ms_per_step"]) == 2 and row["ms_per_step"] == min(row["passes_ms_per_step"]), row


def test_interleaved_timing_cycles_every_size_in_one_process(tmp_path, trained_package):
    """Every size gets one timed call per cycle, after a warm-up cycle, all in one process."""
    box = systems.generated_water_box(64)
    small = speed.save_system(box, tmp_path / "small.npz")
    big = speed.save_system(systems.replicate(box, 2), tmp_path / "big.npz")
    result = speed.measure_interleaved(trained_package, [big, small], "float32", threads=1, cycles=4, timeout_s=300)
    assert result["status"] == "ok", result
    assert [r["n_atoms"] for r in result["systems"]] == [1536, 192]  # in the order given
    for r in result["systems"]:
        assert r["status"] == "ok" and len(r["calls_ms"]) == 4 and r["fastest_ms"] == min(r["calls_ms"]) > 0
    assert result["peak_memory_mb"] > 0


def test_bad_bench_config_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [{name: a, train: x.xyz}]\nmodels: [{name: m, model: {cutoff: 4}}]\n")
    with pytest.raises(ConfigError, match=r"models\.0\.model"):
        load_bench_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_bench_config(tmp_path / "missing.yaml")


def test_generated_water_box_and_replicas():
    box = systems.generated_water_box(64)
    assert box.n_atoms == 192 and box.formula == "H128O64"
    from ase.data import atomic_masses

    grams = atomic_masses[box.numbers].sum() / 6.02214076e23
    assert grams / (box.volume * 1e-24) == pytest.approx(1.0, rel=1e-3)  # g/cm³, from the atoms' own masses
    big = systems.replicate(box, 3)
    assert big.n_atoms == 192 * 27 and np.allclose(big.cell, box.cell * 3)
    from ffspace.graph.neighbors import neighbor_list

    i, j, s = neighbor_list(big.positions, big.cell, big.pbc, 1.2)
    d = np.linalg.norm(big.positions[j] - big.positions[i] + s @ big.cell, axis=1)
    assert len(i) == 2 * 2 * 64 * 27 and d.max() < 0.96  # only the O–H bonds: no close intermolecular contact


def test_fit_exponent():
    sizes = [192, 1536, 5184, 24000]
    assert speed.fit_exponent(sizes, [2e-3 * n**1.07 for n in sizes]) == pytest.approx(1.07)
    assert speed.fit_exponent(sizes, [n**2 for n in sizes], min_atoms=3000) == pytest.approx(2.0)
    assert speed.fit_exponent([192], [1.0]) is None


def test_exponent_interval_brackets_the_slope_of_noisy_calls():
    rng = np.random.default_rng(1)
    sizes = [5184, 12288, 24000]
    calls = [list(1e-3 * n * rng.lognormal(0.0, 0.15, 6)) for n in sizes]  # linear cost, 15 % noise per call
    lo, hi = speed.exponent_interval(sizes, calls)
    means = [speed.geometric_mean(c) for c in calls]
    assert lo < speed.fit_exponent(sizes, means) < hi and lo < 1.0 < hi and hi - lo < 0.4
    exact = speed.exponent_interval(sizes, [[1e-3 * n**1.2] * 3 for n in sizes])  # no noise: no width
    assert exact == pytest.approx([1.2, 1.2])
    assert speed.exponent_interval([192, 24000], calls[:2], min_atoms=3000) is None


def test_molecule_timing_in_float64(tmp_path, trained_package, ethanol_data):
    """The timing child in float64 (bench_small.yaml times float32 only, to keep the suite short)."""
    path = speed.save_system(ethanol_data[0], tmp_path / "molecule.npz")
    row = speed.measure(trained_package, path, "float64", threads=1, repeats=3)
    assert row["status"] == "ok" and row["dtype"] == "float64" and row["calls"] == 3, row
    assert row["n_atoms"] == 9 and row["us_per_atom_step"] > 0 and row["warm"]


def test_out_of_memory_is_reported_with_what_was_asked(tmp_path, trained_package):
    big = systems.replicate(systems.generated_water_box(64), 4)  # 12 288 atoms
    path = speed.save_system(big, tmp_path / "w.npz")
    # A limit barely above what the loaded model takes: the first call cannot fit.
    row = speed.measure(trained_package, path, "float32", threads=1, repeats=1, memory_limit_bytes=600 * 2**20)
    assert row["status"] == "out of memory", row


def test_a_model_that_raises_fails_its_copies_instead_of_the_benchmark(ethanol_data):
    class Refusing(Potential):
        def compute(self, batch, **kwargs):
            raise ValueError("an atom has more than 6 bonds")

    pot = Refusing(Sum([AtomicReference({1: -10.0, 6: -40.0, 8: -60.0})]), dtype=torch.float64)
    r = stability.survival(pot, ethanol_data[0], 300.0, seeds=2, time_ps=0.01)
    assert r["survived"] == 0 and r["failure_ps"] == [0.0005, 0.0005]
    refused = "ValueError: an atom has more than 6 bonds"
    assert r["failure"] == [{"reason": "non-finite", "error": refused}] * 2
    assert stability.verdict(r) == (f"0/2 survived 0.01 ps; lost: non-finite ({refused}) at 0.00 ps, "
                                    f"non-finite ({refused}) at 0.00 ps")


def test_survival_detects_atoms_that_come_too_close(ethanol_data):
    """Two atoms closer than ``min_distance`` fail a run even when every bond is within its tolerance; the failure
    names the pair (here a generous 1.2 Å fails the C-H bonds of the start at the first step)."""
    pot = Potential(Sum([AtomicReference({1: -10.0, 6: -40.0, 8: -60.0})]), dtype=torch.float64)
    r = stability.survival(pot, ethanol_data[0], 300.0, seeds=2, time_ps=0.002, min_distance=1.2)
    assert r["survived"] == 0 and r["failure_ps"] == [0.0005, 0.0005]
    for f in r["failure"]:
        assert f["reason"] == "too close" and f["distance_A"] < 1.2 and f["elements"] in ("C-H", "H-C", "O-H", "H-O")
        assert len(f["atoms"]) == 2
    assert stability.verdict(r).count("too close (") == 2


def test_surviving_runs_are_compared_with_the_training_frames(ethanol_data, trained_package):
    """The surviving seeds' bond lengths and dihedral, sampled every ``sample_fs``, as histograms beside the
    training frames': the dihedral is the torsion that varies most in those frames, the overlap of a distribution
    with itself is 1, and a short 300 K run of a trained model overlaps its training data."""
    frames = list(ethanol_data)
    start = frames[0]
    quad = stability.choose_dihedral(start, frames)
    candidates = stability.torsions(start)
    assert quad in candidates and len(candidates) >= 2  # ethanol: about C-C and C-O
    pos = np.stack([s.positions for s in frames])
    spread = {q: 1 - abs(np.exp(1j * np.radians(stability.dihedral_angles(pos, q))).mean()) for q in candidates}
    assert spread[quad] == max(spread.values())
    reference = stability.reference_distributions(start, frames, quad)
    assert stability.distributions(reference, reference) == {"bonds": {k: pytest.approx(1.0) for k in reference["bonds"]},
                                                             "bonds_min": pytest.approx(1.0), "dihedral": pytest.approx(1.0)}
    trans = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.5, -1.0, 0.0]])
    assert abs(stability.dihedral_angles(trans, (0, 1, 2, 3))) == pytest.approx(180.0)
    pot = Potential.load(trained_package, dtype="float64")
    r = stability.survival(pot, start, 300.0, seeds=2, time_ps=0.05, dihedral=quad, sample_fs=5.0, reference=reference)
    assert r["survived"] == 2
    sampled = r["sampled"]
    assert sampled["samples"] == 2 * 10 and sampled["dihedral_atoms"] == list(quad)
    assert sum(sampled["dihedral"]) == pytest.approx(1.0) and sum(sampled["bonds"]["C-H"]) == pytest.approx(1.0)
    assert sampled["overlap"]["bonds_min"] > 0.2, sampled["overlap"]


def test_survival_detects_a_molecule_falling_apart(ethanol_data):
    # Reference energies only: no forces hold the atoms together, so at 1200 K bonds break within ~20 fs.
    pot = Potential(Sum([AtomicReference({1: -10.0, 6: -40.0, 8: -60.0})]), dtype=torch.float64)
    mol = ethanol_data[0]
    assert len(stability.covalent_bonds(mol)) == 8
    r = stability.survival(pot, mol, 1200.0, seeds=3, time_ps=0.2)
    assert r["survived"] == 0 and all(0 < t < 0.1 for t in r["failure_ps"])
    for f in r["failure"]:  # nothing holds the atoms: the culprit bond is 0.5 Å off its start length
        sign = {"stretched": 1, "compressed": -1}[f["reason"]]  # (an H in free flight can pass through its C)
        assert sign * (f["length_A"] - f["start_length_A"]) > 0.5, f
        assert f["elements"] in ("C-H", "H-C", "O-H", "H-O", "C-C", "C-O", "O-C"), f
    # the bench's log line: each loss with its bond, in order of time
    first = min(range(3), key=lambda k: r["failure_ps"][k])
    f = r["failure"][first]
    assert stability.verdict(r).startswith(
        f"0/3 survived 0.2 ps; lost: {f['elements']} {f['atoms'][0]}–{f['atoms'][1]} {f['reason']} to "
        f"{f['length_A']:.2f} Å at {r['failure_ps'][first]:.2f} ps")


def test_reactive_mode_lets_bonds_break_and_still_catches_collisions(ethanol_data):
    """``bond_tolerance=None`` (issue 33's reactive mode): the molecule falling apart above survives, since only
    collisions and non-finite values fail a reactive run; a collision still fails it and is named."""
    pot = Potential(Sum([AtomicReference({1: -10.0, 6: -40.0, 8: -60.0})]), dtype=torch.float64)
    mol = ethanol_data[0]
    r = stability.survival(pot, mol, 1200.0, seeds=3, time_ps=0.05, bond_tolerance=None, min_distance=0.0)
    assert r["survived"] == 3
    r = stability.survival(pot, mol, 300.0, seeds=2, time_ps=0.002, bond_tolerance=None, min_distance=1.2)
    assert r["survived"] == 0 and all(f["reason"] == "too close" for f in r["failure"])


def test_water_molecules_regroups_a_box_listed_element_by_element():
    box = systems.generated_water_box(64)
    order = np.argsort(-box.numbers, kind="stable")  # all O first, then all H, as DeePMD lists them
    shuffled = box.copy(numbers=box.numbers[order], positions=box.positions[order])
    regrouped = openmm_reference.water_molecules(shuffled)
    assert regrouped.shape == (192, 3)
    d = np.linalg.norm(regrouped.reshape(64, 3, 3)[:, 1:] - regrouped.reshape(64, 3, 3)[:, :1], axis=-1)
    np.testing.assert_allclose(d, 0.9572, atol=1e-9)  # every H sits 0.9572 Å from its own O


def test_exponent_check_needs_every_large_size():
    """Linear scaling is judged only on complete evidence: a size that ran out of memory makes it incomplete,
    a molecules-only model is named and left out, and the peers do not count toward our verdict."""
    from ffspace.bench.report import _exponent_check

    def rows(statuses, detail=""):
        return [{"n_atoms": n, "status": s, "ms_per_step": n / 100, "detail": detail}
                for n, s in zip([192, 1536, 5184, 12288, 24000], statuses)]

    water = {"families": {"painn": "painn", "mace": "mace", "graph_mm": "graph_mm", "mace_torch": "mace_torch"},
             "models": {"painn": {"float32": {"rows": rows(["ok"] * 5), "exponent_3000_plus": 1.0}},
                        "mace_torch": {"float32": {"rows": rows(["ok"] * 4 + ["out of memory"]),
                                                   "exponent_3000_plus": 1.0}},
                        "graph_mm": {"float32": {"rows": rows(["not applicable"] + ["skipped"] * 4, "molecules only"),
                                                 "exponent_3000_plus": None}}}}
    text = "\n".join(_exponent_check(water))
    assert "painn: 1.00 over 3 sizes, 5184–24000 atoms (ok)" in text
    assert "peer mace_torch: incomplete (24000 atoms out of memory)" in text
    assert "left out: graph_mm (molecules only)" in text
    assert "scales linearly: **yes**" in text
    water["models"]["mace"] = {"float32": {"rows": rows(["ok"] * 4 + ["out of memory"]), "exponent_3000_plus": 1.0}}
    assert "scales linearly: **no** (mace)" in "\n".join(_exponent_check(water))


def test_report_compares_md_steps_with_openmm():
    """The cheapest of our models under chemical accuracy, as full MD steps, against OpenMM's MD step; peers and
    models above 43 meV/Å do not count."""
    from ffspace.bench.report import _md_against_openmm

    def model(family, mae, md_us):
        return {"family": family, "status": "ok", "test": {"forces_mae_meV_A": mae},
                "speed_molecule": {"float32": {"status": "ok", "us_per_atom_step": md_us / 2, "md_status": "ok",
                                               "md_us_per_atom_step": md_us, "fast_path": "checked"}}}

    ds = {"models": {"ace": model("ace", 37.4, 29.2), "mace": model("mace", 18.0, 500.0),
                     "cheap_but_wrong": model("schnet", 60.0, 10.0), "peer": model("torchani", 31.0, 5.0)}}
    [line] = _md_against_openmm(ds, {"status": "ok", "us_per_atom_step": 14.6})
    assert "**ace** (37.4 meV/Å): 29.2 µs/atom-step, 2× classical MM in OpenMM (14.6)" in line
    assert _md_against_openmm(ds, {"status": "error"}) == []


def test_energy_curve_removes_the_mean_offset_and_plots(ethanol_data, tmp_path):
    """A model off by a constant 0.3 eV plus a 2 meV ripple along a 'scan': the offset is removed, the RMSE is the
    ripple's, the barrier of each curve is reported, and the plot and table come out."""
    from ffspace.bench.curves import curve_errors, curves_markdown, curves_plot
    from ffspace.data import Dataset

    frames = Dataset([s.copy(info={**s.info, "dihedral_angle": 10.0 * k}) for k, s in enumerate(ethanol_data[:8])])
    ripple = 0.002 * np.array([1, -1] * 4)

    class Shifted:
        def predict(self, structures):
            return {"energy": [s.energy + 0.3 + r for s, r in zip(structures, ripple)]}

    c = curve_errors(Shifted(), frames)
    ref = np.array([s.energy for s in frames])
    assert c["offset_eV"] == pytest.approx(0.3) and c["rmse_meV"] == pytest.approx(2.0)
    assert c["max_abs_meV"] == pytest.approx(2.0) and c["x"][:3] == [0.0, 10.0, 20.0]
    assert c["reference_barrier_meV"] == pytest.approx(np.ptp(ref) * 1000)
    ds = {"curve_sets": {"scan": {"file": "scan.xyz", "n": 8, "reference_barrier_meV": c["reference_barrier_meV"]}}}
    models = {"shifted": {"curves": {"scan": c}}}
    table = "\n".join(curves_markdown("ethanol", ds, models))
    assert "| shifted | 2.0 | 2.0 |" in table
    assert curves_plot("ethanol", ds, models, tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size


def test_an_extrapolation_set_may_name_its_own_label_keys():
    """A set labeled by `ffspace label` (REF_energy / REF_forces) beside public data read with energy / forces."""
    from ffspace.bench.config import BenchDataset, TestSet
    from ffspace.bench.runner import _read_set
    from ffspace.errors import DataError

    shipped = str(Path(__file__).resolve().parents[1] / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz")
    ds = BenchDataset(name="public", train=shipped, energy_key="energy", forces_key="forces")
    own = _read_set(ds, TestSet(file=shipped, energy_key="REF_energy", forces_key="REF_forces"))
    assert len(own) == 400 and own[0].forces.shape == (9, 3)
    with pytest.raises(DataError, match="energy"):
        _read_set(ds, shipped)


def test_a_training_set_may_be_several_files(tmp_path):
    """train: [a, b] is one set, a's frames then b's, split as one file would be; an empty list names the field."""
    from ffspace.bench.config import BenchDataset
    from ffspace.bench.runner import splits
    from ffspace.data import read_dataset
    from ffspace.data.writers import write_extxyz

    shipped = Path(__file__).resolve().parents[1] / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz"
    data = list(read_dataset(shipped))
    write_extxyz(tmp_path / "a.extxyz", data[:30])
    write_extxyz(tmp_path / "b.extxyz", data[30:50])
    both = BenchDataset(name="two", train=[str(tmp_path / "a.extxyz"), str(tmp_path / "b.extxyz")], n_val=5,
                        n_test=10)
    one = tmp_path / "ab.extxyz"
    write_extxyz(one, data[:50])
    got = [np.concatenate([s.positions for s in part]) for part in splits(both)]
    want = [np.concatenate([s.positions for s in part]) for part in splits(both.model_copy(update={"train": str(one)}))]
    assert [len(g) for g in got] == [9 * 35, 9 * 5, 9 * 10]
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    with pytest.raises(ValueError, match="train is an empty list"):
        BenchDataset(name="none", train=[])


def test_a_test_file_that_repeats_training_frames_is_cut_to_the_others(tmp_path, monkeypatch):
    """A separate test file holding training or validation frames (3BPA's train_mixedT repeats 31 of train_300K):
    the models are tested on the others only, and the report says how many were left out."""
    from ffspace.bench import runner
    from ffspace.bench.config import BenchConfig, BenchDataset, BenchModel
    from ffspace.bench.report import markdown
    from ffspace.data import read_dataset
    from ffspace.data.writers import write_extxyz

    shipped = Path(__file__).resolve().parents[1] / "src" / "ffspace" / "datasets" / "ethanol_gfn2xtb.extxyz"
    data = list(read_dataset(shipped))
    write_extxyz(tmp_path / "train.extxyz", data[:40])
    write_extxyz(tmp_path / "test.extxyz", data[35:60])  # 5 frames of the training file, 20 new
    ds = BenchDataset(name="eth", train=str(tmp_path / "train.extxyz"), test=str(tmp_path / "test.extxyz"), n_val=5)
    cfg = BenchConfig(datasets=[ds], models=[BenchModel(name="m", model={"family": "mm"})])
    seen = {}

    def fake_model(cfg, ds, m, train, val, test, *rest):
        seen.update(train=train, val=val, test=test)
        return {"status": "ok"}

    monkeypatch.setattr(runner, "_bench_model", fake_model)
    monkeypatch.setattr(runner, "_openmm_molecule", lambda *args: None)
    result = runner._bench_dataset(cfg, ds, tmp_path / "out")
    key = lambda s: s.positions.tobytes()  # noqa: E731
    assert len(seen["test"]) == 20 and result["n_test"] == 20 and result["test_dropped_as_seen_in_training"] == 5
    assert not {key(s) for s in seen["test"]} & {key(s) for s in list(seen["train"]) + list(seen["val"])}
    assert [key(s) for s in seen["test"]] == [key(s) for s in data[40:60]]  # the file's order is kept
    report = markdown({"name": "x", "command": "c", "budget_min": 1.0, "versions": {},
                       "machine": {"platform": "p", "torch_threads": 2, "device": "cpu"},
                       "datasets": {"eth": {**result, "models": {}}}}, [])
    assert "5 test structures also in the training or validation set left out" in report


def test_a_kept_training_of_other_data_under_the_same_file_names_is_refused(tmp_path, capsys, ethanol_data):
    """The training frames' content is checked beside the cache key: a file relabelled in place is refused by name;
    a training kept before the content was recorded is reused with a notice."""
    from ffspace.bench.runner import _check_data, _set_digest

    train, val = ethanol_data[:20], ethanol_data[20:25]
    digest = _set_digest(train, val)
    _check_data({"data_digest": digest}, digest, tmp_path, "m", "eth")  # the same frames
    moved = _set_digest(ethanol_data[:19], ethanol_data[19:25])  # one frame moved from training to validation
    assert moved != digest
    relabelled = [dataclasses.replace(s, forces=1.01 * s.forces) for s in train]  # forces of another method
    assert _set_digest(relabelled, val) != digest
    with pytest.raises(ConfigError, match="frames of 'eth' are not those 'm' was trained on"):
        _check_data({"data_digest": moved}, digest, tmp_path, "m", "eth")
    _check_data({}, digest, tmp_path, "m", "eth")
    assert "reused without that check" in capsys.readouterr().err


def test_a_kept_training_is_tested_again_on_the_current_test_set_without_retraining(tmp_path, monkeypatch, capsys,
                                                                                      ethanol_data, trained_package):
    """Test errors are a step of their own: a kept training (accuracy.json, also one kept before the data's content
    was recorded, whose own "test" is stale) is read back, not retrained, and tested on today's test frames."""
    import shutil

    from ffspace.bench import runner
    from ffspace.bench.config import BenchConfig, BenchDataset, BenchModel

    ds = BenchDataset(name="eth", train="builtin:ethanol_gfn2xtb")
    m = BenchModel(name="painn", model={"family": "painn"})
    cfg = BenchConfig(datasets=[ds], models=[m], speed={"enabled": False}, stability={"enabled": False})
    train, val, test = ethanol_data[:40], ethanol_data[40:45], ethanol_data[45:60]
    run_dir = tmp_path / "eth" / "painn"

    def trained(cfg, m, train, val, run_dir):
        (run_dir / "train").mkdir(parents=True, exist_ok=True)
        shutil.copy(trained_package, run_dir / "train" / "model.safetensors")
        return {"training": {"epochs": 1}, "test": {"forces_mae_meV_A": -1.0}}  # an old file's stale test errors

    monkeypatch.setattr(runner, "_train", trained)
    first = runner._bench_model(cfg, ds, m, train, val, test, {}, run_dir)
    assert first["test"]["n_structures"] == 15 and first["test"]["forces_mae_meV_A"] > 0
    monkeypatch.setattr(runner, "_train", lambda *args: pytest.fail("a kept training was redone"))
    assert runner._bench_model(cfg, ds, m, train, val, test, {}, run_dir)["test"] == first["test"]
    fewer = runner._bench_model(cfg, ds, m, train, val, test[:10], {}, run_dir)  # tested again, not retrained
    assert fewer["test"]["n_structures"] == 10
    with pytest.raises(ConfigError, match="not those 'painn' was trained on"):  # other frames, same file names
        runner._bench_model(cfg, ds, m, ethanol_data[1:41], val, test, {}, run_dir)
    stored = json.loads((run_dir / "accuracy.json").read_text())
    del stored["value"]["data_digest"]  # kept before the content was recorded: reused, with a notice
    (run_dir / "accuracy.json").write_text(json.dumps(stored))
    capsys.readouterr()
    runner._bench_model(cfg, ds, m, train, val, test, {}, run_dir)
    assert "reused without that check" in capsys.readouterr().err


def test_the_energy_offset_metrics_remove_a_constant_shift(ethanol_data):
    """A test set labelled by another program differs by a near-constant energy: its mean is reported apart, and
    the errors without it are the model's own."""
    from ffspace import units
    from ffspace.evaluate.metrics import energy_offset_metrics

    frames = list(ethanol_data[:4])
    ref = np.array([s.energy for s in frames])
    scatter = np.array([1.0, -1.0, 2.0, -2.0]) * units.meV
    got = energy_offset_metrics({"energy": ref + 4.0 * units.meV + scatter}, frames)
    assert got["energy_mean_error_meV"] == pytest.approx(4.0)
    assert got["energy_mae_offset_removed_meV"] == pytest.approx(1.5)
    assert got["energy_rmse_offset_removed_meV"] == pytest.approx(np.sqrt(2.5))


def test_a_prior_may_be_a_model_of_the_same_benchmark(tmp_path):
    """``prior: model:NAME`` trains on the package of model NAME of the same dataset (frozen Δ prior); the cache key
    carries that package's hash, so a retrained prior retrains the model; a prior not trained yet is a clear error."""
    from ffspace.bench.config import BenchModel
    from ffspace.bench.runner import _with_bench_prior

    m = BenchModel(name="mace_on_mm", model={"family": "mace", "prior": "model:mm"})
    with pytest.raises(ConfigError, match="needs model 'mm' trained first.*list it before 'mace_on_mm'"):
        _with_bench_prior(m, tmp_path / "aspirin" / "mace_on_mm")
    package = tmp_path / "aspirin" / "mm" / "train" / "model.safetensors"
    package.parent.mkdir(parents=True)
    package.write_bytes(b"weights one")
    resolved, key = _with_bench_prior(m, tmp_path / "aspirin" / "mace_on_mm")
    assert resolved.model == {"family": "mace", "prior": str(package)} and m.model["prior"] == "model:mm"
    package.write_bytes(b"weights two")
    assert _with_bench_prior(m, tmp_path / "aspirin" / "mace_on_mm")[1] != key
    plain = BenchModel(name="mace_mm", model={"family": "mace", "prior": "mm"})
    assert _with_bench_prior(plain, tmp_path / "aspirin" / "mace_mm") == (plain, {})


def test_a_killed_stability_run_resumes_from_its_checkpoint(ethanol_data, trained_package, tmp_path, monkeypatch,
                                                           capsys):
    """Killed after a checkpoint, the survival run goes on from it (its MD state, thermostat noise, failures and
    samples so far) and gives the uninterrupted run's result; a checkpoint of other settings is not used."""
    pot = Potential.load(trained_package, dtype="float64")
    settings = dict(seeds=3, time_ps=0.06, bond_tolerance=0.2, sample_fs=5.0, dihedral=(3, 0, 1, 2))
    whole = stability.survival(pot, ethanol_data[0], 1200.0, **settings)
    assert 0 < whole["survived"] < 3, "the test needs copies that fail and copies that survive"
    # a failure before the kill (at 0.04 ps) must travel through the checkpoint
    assert min(t for t in whole["failure_ps"] if t is not None) < 0.04
    checkpoint = tmp_path / "run.partial.npz"
    save, saves = stability._save, []

    def killed_after_two_saves(*args):
        save(*args)
        saves.append(args[2])
        if len(saves) == 2:
            raise KeyboardInterrupt  # as a kill: nothing after this step runs
    monkeypatch.setattr(stability, "_save", killed_after_two_saves)
    with pytest.raises(KeyboardInterrupt):
        stability.survival(pot, ethanol_data[0], 1200.0, checkpoint=checkpoint, checkpoint_ps=0.02, **settings)
    assert checkpoint.is_file() and saves == [40, 80]
    monkeypatch.setattr(stability, "_save", save)
    capsys.readouterr()
    resumed = stability.survival(pot, ethanol_data[0], 1200.0, checkpoint=checkpoint, checkpoint_ps=0.02, **settings)
    assert "resumed at 0.04 ps" in capsys.readouterr().err  # not a rerun from 0, which would agree as well
    assert resumed["failure_ps"] == whole["failure_ps"] and resumed["failure"] == whole["failure"]
    assert resumed["sampled"] == whole["sampled"]
    assert not checkpoint.exists()  # finished: the result is what is kept
    saves.clear()
    monkeypatch.setattr(stability, "_save", killed_after_two_saves)
    with pytest.raises(KeyboardInterrupt):
        stability.survival(pot, ethanol_data[0], 1200.0, checkpoint=checkpoint, checkpoint_ps=0.01, **settings)
    monkeypatch.setattr(stability, "_save", save)
    capsys.readouterr()
    other = stability.survival(pot, ethanol_data[0], 1200.0, checkpoint=checkpoint, **{**settings, "time_ps": 0.05})
    assert other["time_ps"] == 0.05 and not checkpoint.exists()
    err = capsys.readouterr().err
    assert "written for other settings: starting over" in err and "resumed" not in err


def _two_ethanols(structure):
    """Two ethanol molecules 9 Å apart as one structure: wider than a neighbour list's cutoff + skin, so the list's
    pair order depends on the positions it was built at (one small molecule fits in one cell of the list)."""
    from ffspace.data.structure import Structure

    second = structure.positions + np.array([9.0, 0.0, 0.0])
    return Structure(numbers=np.concatenate([structure.numbers, structure.numbers]),
                     positions=np.concatenate([structure.positions, second]))


def test_md_copies_resume_on_the_verlet_lists_of_the_killed_run(ethanol_data, trained_package):
    """A checkpoint carries each copy's Verlet list (vesin does not promise a pair order, and a list built afresh at
    the resumed geometry holds other pairs within its skin): copies resumed from it hold the killed run's lists and,
    with their Langevin noise, follow the uninterrupted copies to the last bit."""
    from ffspace.md.copies import MoleculeCopies
    from ffspace.md.integrators import Langevin

    pot = Potential.load(trained_package, dtype="float64", fast=False)
    start = _two_ethanols(ethanol_data[0])
    copies = MoleculeCopies.thermal(pot, start, 2, 900.0, np.random.default_rng(0))
    integrator = Langevin(0.5, 900.0, 0.01, seed=np.random.SeedSequence(1), groups=copies.groups())
    for _ in range(120):
        integrator.step(copies.state, copies)
    assert any(vl.n_builds > 1 for vl in copies.lists), "the test needs lists rebuilt along the trajectory"
    lists = [(vl.pairs, vl.built_at.copy()) for vl in copies.lists]
    saved = {**copies.verlet_arrays(), "positions": copies.positions().copy(), "velocities": copies.velocities().copy(),
             "forces": copies.state.forces.copy(), "energy": copies.state.energy,
             "rng": json.dumps(integrator.rng.bit_generator.state)}
    for _ in range(60):
        integrator.step(copies.state, copies)
    again = MoleculeCopies(pot, start, saved["positions"], saved["velocities"])
    again.state.forces, again.state.energy = saved["forces"].copy(), saved["energy"]
    again.restore_verlet(saved)
    for vl, (pairs, built_at) in zip(again.lists, lists):
        assert all(np.array_equal(a, b) for a, b in zip(vl.pairs, pairs)) and np.array_equal(vl.built_at, built_at)
    other = Langevin(0.5, 900.0, 0.01, seed=np.random.SeedSequence(1), groups=again.groups())
    other.rng.bit_generator.state = json.loads(saved["rng"])
    for _ in range(60):
        other.step(again.state, again)
    assert np.array_equal(again.positions(), copies.positions())
    assert np.array_equal(again.velocities(), copies.velocities())
    with pytest.raises(ValueError, match="3 Verlet lists for 2 copies"):
        again.restore_verlet({**saved, "verlet_counts": np.r_[saved["verlet_counts"], 0]})


def test_a_stability_checkpoint_of_another_model_is_not_resumed(ethanol_data, trained_package, tmp_path, monkeypatch,
                                                                capsys):
    """The checkpoint records the weights: another model under the same file name starts over, whoever calls."""
    pot = Potential.load(trained_package, dtype="float64")
    checkpoint, save = tmp_path / "run.partial.npz", stability._save

    def killed(*args):
        save(*args)
        raise KeyboardInterrupt
    monkeypatch.setattr(stability, "_save", killed)
    settings = dict(seeds=2, time_ps=0.02, checkpoint=checkpoint, checkpoint_ps=0.005)
    with pytest.raises(KeyboardInterrupt):
        stability.survival(pot, ethanol_data[0], 300.0, **settings)
    monkeypatch.setattr(stability, "_save", save)
    other = Potential.load(trained_package, dtype="float64")
    with torch.no_grad():
        next(other.model.parameters()).add_(1e-3)
    capsys.readouterr()
    stability.survival(other, ethanol_data[0], 300.0, remove_checkpoint=False, **settings)
    err = capsys.readouterr().err
    assert "written by another model: starting over" in err and "resumed" not in err
    assert checkpoint.exists()  # remove_checkpoint=False: the caller removes it once the result is kept
    capsys.readouterr()
    stability.survival(other, ethanol_data[0], 300.0, **settings)
    assert "resumed at" in capsys.readouterr().err and not checkpoint.exists()


def test_a_copy_the_model_refuses_fails_with_the_reason_and_a_model_error_is_raised(ethanol_data, trained_package,
                                                                                   monkeypatch):
    """A geometry the model refuses (a ValueError) fails only its copy, and the failure says what was raised; an
    error of another kind from every copy (out of memory, a bug) is not the copies' fault: it is raised."""
    from ffspace.md.copies import MoleculeCopies

    pot = Potential.load(trained_package, dtype="float64", fast=False)
    start = ethanol_data[0]
    positions = start.positions + np.random.default_rng(0).normal(0.0, 0.02, (3, start.n_atoms, 3))
    evaluate = MoleculeCopies._evaluate

    def refuses_the_second(self, graphs):
        if len(graphs) > 1:
            raise ValueError("batch")
        if np.allclose(np.asarray(graphs[0].positions), positions[1]):
            raise ValueError("atom 3 has 7 bonded neighbours")
        return evaluate(self, graphs)
    monkeypatch.setattr(MoleculeCopies, "_evaluate", refuses_the_second)
    copies = MoleculeCopies(pot, start, positions, np.zeros_like(positions))
    assert np.isnan(copies.energies[1]) and np.isfinite(copies.energies[[0, 2]]).all()
    assert copies.errors == [None, "ValueError: atom 3 has 7 bonded neighbours", None]

    def broken(self, graphs):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(MoleculeCopies, "_evaluate", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        MoleculeCopies(pot, start, positions, np.zeros_like(positions))


def test_nve_takes_failed_copies_out_of_the_batch(ethanol_data, trained_package, monkeypatch):
    """A copy that fails in NVE leaves the batch (as in the Langevin protocol): what it would do next cannot slow or
    change the copies still running."""
    from ffspace.md.copies import MoleculeCopies

    pot = Potential.load(trained_package, dtype="float64", fast=False)
    sizes, evaluate = [], MoleculeCopies._evaluate

    def counted(self, graphs):
        sizes.append(len(graphs))
        return evaluate(self, graphs)
    monkeypatch.setattr(MoleculeCopies, "_evaluate", counted)
    r = stability.nve_drift(pot, ethanol_data[0], 1500.0, seeds=4, time_ps=0.06, bond_tolerance=0.16)
    failed = [s for s in r["per_seed_status"] if s != "ok"]
    assert 0 < len(failed) < 4, "the test needs copies that fail and copies that survive"
    assert sizes[0] == 4 and sizes[-1] == 4 - len(failed)
    assert all(d is not None for d, s in zip(r["drift_meV_per_atom_ps"], r["per_seed_status"]) if s == "ok")


def test_a_bench_step_removes_its_checkpoint_only_once_its_result_is_on_disk(tmp_path):
    """A kill between the end of the MD and the write of its result must not lose the MD: the bench removes the
    checkpoint after the result file is written, and keeps it when the step fails."""
    from ffspace.bench import runner

    partial, result = tmp_path / "run.partial.npz", tmp_path / "run.json"
    partial.write_bytes(b"state")

    def compute():
        assert partial.exists()
        return {"survived": 3}
    assert runner._cached(result, {"k": 1}, compute, partial=partial) == {"survived": 3}
    assert result.exists() and not partial.exists()
    partial.write_bytes(b"state")

    def killed():
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        runner._cached(tmp_path / "other.json", {"k": 2}, killed, partial=partial)
    assert partial.exists()


def test_a_resumed_stability_run_gets_the_mm_priors_held_bonds_back(ethanol_data):
    """The MM prior holds each copy's bonds along its trajectory; a checkpoint carries them, so a resumed copy keeps
    a held topology that a fresh perception would not give (here: one bond fewer, as after it stretched past the
    perception rule) instead of perceiving it afresh."""
    from ffspace.md.copies import MoleculeCopies
    from ffspace.md.held_bonds import held_terms
    from ffspace.train import build_model_for_data

    def potential():
        return Potential(build_model_for_data({"family": "mm", "cutoff": 5.0}, ethanol_data, seed=0), dtype="float64")

    pot = potential()
    start, rng = ethanol_data[0], np.random.default_rng(0)
    # two copies along their own trajectories (copies at one geometry are one to the store)
    positions = start.positions + rng.normal(0.0, 0.03, (2, start.n_atoms, 3))
    copies = MoleculeCopies(pot, start, positions, np.zeros_like(positions))
    (term,) = held_terms(pot)
    where = (copies.state.numbers, copies.state.positions, np.full(2, copies.atoms))
    held = term.held_bonds().lookup(*where)
    assert all(h is not None and len(h) == 8 for h in held)  # ethanol's eight bonds
    changed = [held[0], held[1][1:]]
    term.held_bonds().remember(*where, changed)
    arrays = stability._held_arrays(pot, copies)
    fresh = potential()  # as in a new process: nothing held
    again = MoleculeCopies(fresh, start, copies.positions(), copies.velocities())
    (fresh_term,) = held_terms(fresh)
    assert [len(h) for h in fresh_term.held_bonds().lookup(*where)] == [8, 8]
    stability._restore_held(fresh, again, arrays["held_counts"], arrays["held_keys"])
    assert [h.tolist() for h in fresh_term.held_bonds().lookup(*where)] == [h.tolist() for h in changed]


def test_a_killed_nve_run_resumes_from_its_checkpoint(ethanol_data, trained_package, tmp_path, monkeypatch, capsys):
    """The NVE drift run too: killed after its second checkpoint, it resumes and gives the uninterrupted slopes."""
    import contextlib

    pot = Potential.load(trained_package, dtype="float64")
    whole = stability.nve_drift(pot, ethanol_data[0], seeds=2, time_ps=0.03)
    checkpoint, real, writes = tmp_path / "nve.partial.npz", stability.atomic_path, []

    @contextlib.contextmanager
    def killed_after_two_writes(path):
        with real(path) as tmp:
            yield tmp
        writes.append(path)
        if len(writes) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(stability, "atomic_path", killed_after_two_writes)
    with pytest.raises(KeyboardInterrupt):
        stability.nve_drift(pot, ethanol_data[0], seeds=2, time_ps=0.03, checkpoint=checkpoint, checkpoint_ps=0.01)
    monkeypatch.setattr(stability, "atomic_path", real)
    capsys.readouterr()
    resumed = stability.nve_drift(pot, ethanol_data[0], seeds=2, time_ps=0.03, checkpoint=checkpoint,
                                  checkpoint_ps=0.01)
    assert resumed == whole and not checkpoint.exists()
    assert "NVE: resumed at 0.02 ps" in capsys.readouterr().err


def test_a_finished_full_length_run_is_kept_when_a_later_timing_calls_the_model_slow(ethanol_data, trained_package,
                                                                                     tmp_path, monkeypatch):
    """Slow models get short runs; but a model whose full-length run has finished keeps it when a rerun times it
    slower (timings vary): the protocol never throws away finished MD. The MD step's cost decides, where timed."""
    import shutil

    from ffspace.bench import runner

    run_dir = tmp_path / "model"
    (run_dir / "train").mkdir(parents=True)
    shutil.copy(trained_package, run_dir / "train" / "model.safetensors")
    cfg = load_bench_config(SMALL, ["stability.temperatures=[300]", "stability.nve_ps=0", "stability.time_ps=0.01",
                                    "stability.slow_time_ps=0.005", "stability.slow_ms_per_step=1.0"])
    frames = list(ethanol_data)[:20]
    weights = runner._file_hash(run_dir / "train" / "model.safetensors")
    fast_row = {"float32": {"status": "ok", "ms_per_step": 5.0, "md_ms_per_step": 0.5}}  # the MD step decides
    full = runner._stability(cfg, run_dir, weights, frames[0], fast_row, frames)
    assert full["runs"]["300"]["time_ps"] == 0.01
    monkeypatch.setattr(stability, "survival", lambda *a, **k: pytest.fail("a finished run was redone"))
    slow_row = {"float32": {"status": "ok", "ms_per_step": 5.0, "md_ms_per_step": 2.0}}
    assert runner._stability(cfg, run_dir, weights, frames[0], slow_row, frames)["runs"] == full["runs"]
    (run_dir / "stability_300K.json").unlink()
    monkeypatch.undo()
    assert runner._stability(cfg, run_dir, weights, frames[0], slow_row, frames)["runs"]["300"]["time_ps"] == 0.005


def test_the_nve_energy_trace_gives_the_full_record_slope_and_largest_change_from_running_sums():
    """The NVE run keeps running sums, not every step's total (a 100 ps checkpoint held 16 MB): the slope equals a
    least-squares fit of the full record, and the largest change (signed, with its time) that of the full record
    taken up to each copy's failing step. What a failed copy does after that step does not count, ties keep the
    earliest change, and a copy whose every change is non-finite has none. A checkpoint round trip resumes exactly."""
    import io

    rng = np.random.default_rng(3)
    times = np.arange(2001) * 0.0005
    totals = -18000.0 + 0.004 * times[:, None] * np.arange(1, 6) + 1e-4 * rng.standard_normal((2001, 5))
    totals[700:, 1] += 0.05  # a jump in copy 1 at step 700
    totals[1500, 2] -= 0.2  # copy 2 breaks at step 1500 ...
    totals[1501:, 2] = totals[1500, 2] + 5.0  # ... and a larger, finite change after it must not count
    totals[:, 3] = -18000.0 + np.r_[0.0, np.tile([0.5, 0.0], 1000)]  # exact ties: the first one is kept
    totals[1:, 4] = np.nan  # no finite change at all
    failed_at = np.array([-1, -1, 1500, -1, 1])
    trace = stability.EnergyTrace(totals[0], times[0])
    half = stability.EnergyTrace(totals[0], times[0])
    for step in range(1, len(times)):
        alive = (failed_at < 0) | (failed_at >= step)
        trace.add(times[step], totals[step], alive)
        if step == 1000:  # a checkpoint through np.savez, resumed
            buffer = io.BytesIO()
            np.savez(buffer, **trace.state())
            buffer.seek(0)
            with np.load(buffer) as z:
                half = stability.EnergyTrace.from_state(z)
            assert type(half.n) is int and type(half.st) is float
        elif step > 1000:
            half.add(times[step], totals[step], alive)
    for k in (0, 1):
        # (the fit of the raw totals near -1.8·10⁴ eV is itself good to ~1e-9 only: shifted, it is exact)
        assert trace.slope()[k] == pytest.approx(np.polyfit(times, totals[:, k] - totals[0, k], 1)[0], rel=1e-9)
    for k in range(4):
        change = np.diff(totals[: failed_at[k] + 1 if failed_at[k] >= 0 else len(times), k])
        at = int(np.argmax(np.abs(change)))
        assert trace.jump[k] == change[at] and trace.jump_at[k] == times[at + 1]
    assert trace.jump_at[1] == times[700] and trace.jump[2] < -0.19 and trace.jump_at[2] == times[1500]
    assert trace.jump[3] == 0.5 and trace.jump_at[3] == times[1]
    assert np.isnan(trace.jump[4]) and np.isnan(trace.jump_at[4])
    assert all(np.array_equal(getattr(half, f), getattr(trace, f), equal_nan=True)
               for f in stability.EnergyTrace.FIELDS)


def test_nve_counts_the_step_that_breaks_a_copy(ethanol_data):
    """A copy that fails on its first step still has that step's change (the step that broke it counts)."""
    from ffspace.models import ClassicalMM

    mm = ClassicalMM([1, 6, 8], cutoff=4.0)
    r = stability.nve_drift(Potential(mm, dtype=torch.float64, fast=False), ethanol_data[0], 300.0, seeds=2,
                            time_ps=0.001, bond_tolerance=1e-6)
    assert r["status"] == "all failed" and r["largest_step_change_at_ps"] == [0.0005, 0.0005]
    assert all(j is not None for j in r["largest_step_change_meV"])


def test_nve_reports_the_largest_one_step_change_and_the_geometry_there(ethanol_data):
    """A discontinuous energy (an injected +1 eV step whenever the C–C bond is longer than at the start, forces
    untouched) shows up as a one-step change of the NVE total of ±1000 meV, which the drift slope hides; the same
    surface without the step changes by meV. The geometry at the change names the bond and the closest contact."""
    from ffspace.models import ClassicalMM

    start = ethanol_data[0]
    c = [k for k, z in enumerate(start.numbers) if z == 6]
    cc = float(np.linalg.norm(start.positions[c[0]] - start.positions[c[1]]))

    class Stepped(Potential):
        def compute(self, batch, **kwargs):
            out = super().compute(batch, **{**kwargs, "fast": False})
            pos = batch.positions.detach().reshape(-1, start.n_atoms, 3)
            step = (torch.linalg.norm(pos[:, c[0]] - pos[:, c[1]], dim=-1) > cc).to(out["energy"].dtype)
            out["energy"] = out["energy"] + step
            out["energies"] = out["energies"].reshape(-1, start.n_atoms).index_add(
                1, torch.tensor([0]), step[:, None]).reshape(-1)
            return out

    mm = ClassicalMM([1, 6, 8], cutoff=4.0)
    smooth = stability.nve_drift(Potential(mm, dtype=torch.float64, fast=False), start, 300.0, seeds=2,
                                 time_ps=0.05)
    assert smooth["max_abs_step_change_meV"] < 50.0
    r = stability.nve_drift(Stepped(mm, dtype=torch.float64, fast=False), start, 300.0, seeds=2, time_ps=0.05)
    assert r["per_seed_status"] == ["ok", "ok"]
    for jump, at, geometry in zip(r["largest_step_change_meV"], r["largest_step_change_at_ps"],
                                  r["geometry_at_largest_change"]):
        assert abs(abs(jump) - 1000.0) < 50.0 and 0 < at <= 0.05
        assert geometry["most_stretched_bond"]["elements"] in ("C-H", "H-C", "O-H", "H-O", "C-C", "C-O", "O-C")
        assert geometry["closest_unbonded"]["of_covalent_reach"] > 1.3
    assert r["max_abs_step_change_meV"] > 900.0


def test_a_fine_tuning_from_a_package_of_another_family_is_refused(trained_package):
    """The report names a model by its `model` section; a fine-tuning takes the package's model instead, so the
    bench refuses a package of another family (a swapped path would otherwise be reported under the wrong name)."""
    from ffspace.bench.config import BenchModel
    from ffspace.bench.runner import _check_init_family

    _check_init_family(BenchModel(name="ok", model={"family": "painn"}), trained_package)
    with pytest.raises(ConfigError, match="mace_torch.*painn"):
        _check_init_family(BenchModel(name="swapped", model={"family": "mace_torch"}), trained_package)


def test_the_report_carries_the_kept_trainings_validation_errors(tmp_path):
    from ffspace.bench.runner import _validation

    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"best": {"epoch": 7, "val_loss": 0.1, "val_forces_rmse_meV_A": 44.0,
                                            "val_s": 1.5, "train_loss": 0.01}}))
    assert _validation(summary) == {"forces_rmse_meV_A": 44.0, "epoch": 7}  # errors only, no timing
    summary.write_text(json.dumps({"best": {"epoch": 7, "val_forces_rmse_meV_A": 44.0},
                                   "kept": {"epoch": 9, "val_forces_rmse_meV_A": 45.0}}))
    assert _validation(summary) == {"forces_rmse_meV_A": 45.0, "epoch": 9}  # train.keep: last packages epoch 9
    assert _validation(tmp_path / "missing.json") == {}


def test_the_failure_summary_counts_a_bond_kind_once_whatever_its_atoms_order():
    """A stretched ester C–O recorded as "C-O" by one copy and "O-C" by another is one kind of failure, 2×."""
    from ffspace.bench.report import _failure_causes

    failure = [{"reason": "stretched", "elements": "C-O"}, {"reason": "stretched", "elements": "O-C"},
               {"reason": "non-finite"}, None]
    assert _failure_causes({"runs": {"1200": {"failure": failure}}}) == "1200 K: 2× C-O stretched, 1× non-finite"


def test_a_stability_row_of_mixed_run_lengths_says_which_ran_how_long():
    """A slow model runs shorter at some temperatures: its cells then carry their lengths, not one ambiguous list."""
    from ffspace.bench.report import _stability_markdown

    def run(length, survived, failures=()):
        return {"timestep_fs": 0.5, "seeds": 2, "bond_tolerance_A": 0.5, "time_ps": length, "survived": survived,
                "failure_ps": list(failures) + [None] * survived, "failure": []}

    fast = {"300": run(20, 2), "1200": run(20, 1, [3.0])}
    slow = {"300": run(20, 2), "1200": run(5, 0, [1.0, 2.0])}
    ds = {"models": {"fast": {"status": "ok", "stability": {"runs": fast}},
                     "slow": {"status": "ok", "stability": {"runs": slow}}}}
    rows = {line.split(" | ")[0]: line for line in _stability_markdown("x", ds) if line.startswith("| fast")
            or line.startswith("| slow")}
    assert "| 2/2 | 1/2 (3) |" in rows["| fast"]
    assert "| 2/2 × 20 ps | 0/2 × 5 ps (1.5) |" in rows["| slow"]


def test_a_checkpoint_left_by_a_kill_after_its_result_was_written_is_removed(tmp_path):
    """Killed between writing a stage's result and removing its checkpoint: the next run reads the result back
    and removes the checkpoint (a snapshot would otherwise keep a stale one)."""
    from ffspace.bench.runner import _cached

    result, partial = tmp_path / "stability_300K.json", tmp_path / "stability_300K.abc.partial.npz"
    assert _cached(result, {"k": 1}, lambda: {"survived": 10}, partial=partial) == {"survived": 10}
    partial.write_bytes(b"left by a kill")
    assert _cached(result, {"k": 1}, lambda: pytest.fail("recomputed"), partial=partial) == {"survived": 10}
    assert not partial.exists()
