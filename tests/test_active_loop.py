"""``ffspace active``: selection rules, and the loop killed during labeling and during training, then resumed."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ffspace.active import select
from ffspace.active.config import load_active_config
from ffspace.errors import ConfigError
from ffspace.reference.store import LabelStore

SMALL = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "active_small.yaml"


def _record(traj, step, dev, stopped=None):
    return {"trajectory": traj, "start": 0, "temperature_K": 300.0, "copy": 0, "step": step, "deviation_eV_A": dev,
            "positions": np.zeros((1, 3)), "stopped": stopped}


def test_selection_takes_uncertain_frames_spread_over_trajectories():
    records = [_record("a", s, 0.5 + s / 1000) for s in range(10, 210, 10)]  # the most uncertain trajectory
    records += [_record("b", s, 0.2) for s in range(10, 110, 10)]
    records += [_record("c", s, 0.01) for s in range(10, 110, 10)]  # known: below `lower`
    records += [_record("d", 10, 0.3), _record("d", 20, 3.0, "uncertain")]  # lost above `upper`
    picked, stats = select(records, lower=0.05, upper=1.0, per_round=6, per_trajectory=2, min_separation=3,
                           record_every=10)
    trajs = [p["trajectory"] for p in picked]
    assert trajs.count("a") == 2 and trajs.count("b") == 2 and "c" not in trajs and trajs.count("d") == 1
    a_steps = sorted(p["step"] for p in picked if p["trajectory"] == "a")
    assert a_steps == [170, 200]  # the two highest deviations at least 3 recorded frames apart
    assert all("deviation" in p["reason"] for p in picked)
    assert stats == {"recorded": 42, "known": 10, "candidates": 31, "lost": 1, "trajectories": 4,
                     "stopped_uncertain": 1, "stopped_collapsed": 0, "stopped_bond_broken": 0,
                     "stopped_non_finite": 0, "picked": 5, "picked_broken": 0, "picked_before_loss": 0,
                     "picked_trajectories": 3}


def test_random_selection_is_seeded_and_keeps_the_diversity_rules():
    records = [_record(t, s, 0.05 + s / 1000) for t in "abc" for s in range(10, 310, 10)]
    records += [_record("d", 10, 0.01)]  # known: never picked
    first, stats = select(records, lower=0.05, upper=1.0, per_round=6, per_trajectory=2, min_separation=3,
                          record_every=10, strategy="random", seed=4)
    again, _ = select(records, lower=0.05, upper=1.0, per_round=6, per_trajectory=2, min_separation=3,
                      record_every=10, strategy="random", seed=4)
    assert [(p["trajectory"], p["step"]) for p in first] == [(p["trajectory"], p["step"]) for p in again]
    trajs = [p["trajectory"] for p in first]
    assert len(first) == 6 and all(trajs.count(t) == 2 for t in "abc")
    for t in "abc":
        a, b = sorted(p["step"] for p in first if p["trajectory"] == t)
        assert b - a >= 30
    highest, _ = select(records, lower=0.05, upper=1.0, per_round=6, per_trajectory=2, min_separation=3,
                        record_every=10)
    assert sorted(p["deviation_eV_A"] for p in first) != sorted(p["deviation_eV_A"] for p in highest)
    assert all("at random" in p["reason"] for p in first)


def test_weighted_selection_draws_in_proportion_to_the_squared_deviation():
    # 100 single-frame trajectories: 50 at deviation 0.2, 50 at 0.1 eV/Å. Weights 4:1, so over many seeded
    # draws of one frame the 0.2 group is picked 4/5 of the time (highest would pick it always).
    records = [_record(f"t{i}", 10, 0.2 if i < 50 else 0.1) for i in range(100)]
    high = [select(records, lower=0.05, upper=1.0, per_round=1, strategy="weighted", seed=s)[0][0]["deviation_eV_A"]
            == 0.2 for s in range(2000)]
    assert abs(np.mean(high) - 0.8) < 0.03
    first, _ = select(records, lower=0.05, upper=1.0, per_round=10, strategy="weighted", seed=7)
    again, _ = select(records, lower=0.05, upper=1.0, per_round=10, strategy="weighted", seed=7)
    assert [p["trajectory"] for p in first] == [p["trajectory"] for p in again]
    assert len({p["trajectory"] for p in first}) == 10 and all("∝ deviation²" in p["reason"] for p in first)


def test_diverse_selection_prefers_uncertain_frames_far_from_the_labels():
    from ffspace.data.structure import Structure

    base = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    numbers = np.array([8, 1, 1])
    labeled = [Structure(numbers=numbers, positions=base)]
    rng = np.random.default_rng(0)

    def frames(traj, dev, centre, noise):
        return [{**_record(traj, s, dev), "positions": centre + noise * rng.normal(size=(3, 3)), "numbers": numbers}
                for s in range(10, 110, 10)]

    stretched = base * 1.4
    records = (frames("a", 0.9, base, 1e-3) + frames("b", 0.3, stretched, 0.0)
               + frames("c", 0.29, stretched, 0.0))
    picked, _ = select(records, lower=0.05, upper=1.0, per_round=2, per_trajectory=1, strategy="diverse",
                       labeled=labeled)
    # b: less uncertain than a but far from the label; then a (near the label) beats c (a copy of b's region).
    assert [p["trajectory"] for p in picked] == ["b", "a"]
    assert "distance to the nearest labeled or picked frame" in picked[0]["reason"]
    assert picked[1]["distance_1_A"] < 0.01 < picked[0]["distance_1_A"]
    highest, _ = select(records, lower=0.05, upper=1.0, per_round=2, per_trajectory=1, labeled=labeled)
    assert highest[0]["trajectory"] == "a"


def test_selection_falls_back_to_the_edge_of_what_the_model_knows():
    records = [_record("a", 10, 0.01), _record("a", 20, 0.02), _record("a", 30, 5.0, "uncertain")]
    picked, stats = select(records, lower=0.05, upper=1.0, per_round=4)
    assert [p["step"] for p in picked] == [20] and "before trajectory a was lost" in picked[0]["reason"]


def test_stability_goal_labels_the_frames_where_bonds_broke_first():
    """The committee may agree on a dissociation (low deviation): with ``broken_first`` the frame where the bond
    broke is picked anyway, before the uncertain frames, and its reason names the bond; a collapsed frame never."""
    broken = {**_record("b", 40, 0.01, "bond broken"), "time_ps": 0.02,
              "failure": {"reason": "stretched", "atoms": [2, 8], "elements": "O-H", "start_length_A": 0.97,
                          "length_A": 1.52}}
    records = [_record("a", s, 0.5) for s in range(10, 110, 10)] + [_record("b", 10, 0.01), broken]
    records += [_record("c", 10, 0.01), _record("c", 20, 0.01, "collapsed")]
    picked, stats = select(records, lower=0.05, upper=1.0, per_round=3, per_trajectory=2, broken_first=True)
    assert picked[0]["trajectory"] == "b" and picked[0]["step"] == 40
    assert "O-H bond 2–8 stretched to 1.52 Å" in picked[0]["reason"]
    assert [p["trajectory"] for p in picked[1:]] == ["a", "a"] and "c" not in {p["trajectory"] for p in picked}
    assert stats["picked_broken"] == 1 and stats["stopped_bond_broken"] == 1
    plain, _ = select(records, lower=0.05, upper=1.0, per_round=3, per_trajectory=2)
    assert "b" not in {p["trajectory"] for p in plain}  # the accuracy goal ignores it (deviation below lower)


def test_stability_goal_labels_the_last_known_frame_before_a_trajectory_was_lost():
    """A trajectory lost to the committee (deviation past ``upper``) gives its last frame below ``upper``, even a
    calm one (below ``lower``: the jump came between two records), after the broken bonds and before the rest."""
    records = [_record("a", s, 0.5) for s in range(10, 110, 10)]
    records += [_record("d", 10, 0.2), _record("d", 20, 0.01), _record("d", 30, 3.0, "uncertain")]
    picked, stats = select(records, lower=0.05, upper=1.0, per_round=3, per_trajectory=2, broken_first=True)
    assert (picked[0]["trajectory"], picked[0]["step"]) == ("d", 20)
    assert "before trajectory d was lost" in picked[0]["reason"] and "3.00 eV/Å at step 30" in picked[0]["reason"]
    assert stats["picked_before_loss"] == 1 and stats["stopped_uncertain"] == 1
    assert [p["kind"] for p in picked] == ["before_loss", "candidate", "candidate"]
    plain, _ = select(records, lower=0.05, upper=1.0, per_round=3, per_trajectory=2)
    assert ("d", 20) not in {(p["trajectory"], p["step"]) for p in plain}  # the accuracy goal: by deviation only
    # an edge frame that is also the top candidate is picked once, even with no separation asked
    hot = [_record("e", 10, 0.9), _record("e", 20, 5.0, "uncertain"), _record("f", 10, 0.1)]
    for records in (hot, hot[:2]):  # with other candidates, and with none left but the edge
        picked, stats = select(records, lower=0.05, upper=1.0, per_round=3, per_trajectory=3, min_separation=0,
                               broken_first=True)
        keys = [(p["trajectory"], p["step"]) for p in picked]
        assert keys[0] == ("e", 10) and len(keys) == len(set(keys)) == len(records) - 1, keys
        assert stats["picked_before_loss"] == 1


def test_pick_counts_read_back_from_written_picks():
    """A resumed round reports the picks it wrote (picked.json), not a new selection's: picks written before they
    carried a ``kind`` count as bond-broken frames or candidates."""
    from ffspace.active.selection import pick_counts

    old = [{"trajectory": "a", "stopped": "bond broken"}, {"trajectory": "a", "stopped": None},
           {"trajectory": "b", "stopped": None}]
    assert pick_counts(old) == {"picked": 3, "picked_broken": 1, "picked_before_loss": 0, "picked_trajectories": 2}
    new = [{"trajectory": "c", "stopped": None, "kind": "before_loss"}]
    assert pick_counts(old + new)["picked_before_loss"] == 1


def test_edge_picks_stay_in_training():
    """Every 10th added label validates, except a pick at the edge (a broken bond, the last frame before a loss):
    that one trains, and validation takes the next one in line only at its own turn."""
    from ffspace.active.loop import split_new_labels
    from ffspace.data.dataset import Dataset
    from ffspace.data.structure import Structure

    def frame(i, kind=None):
        return Structure(numbers=[1], positions=[[0.0, 0.0, float(i)]], info={"step": i, **({"pick_kind": kind}
                                                                                         if kind else {})})

    plain = Dataset([frame(i) for i in range(20)])
    train, val = split_new_labels(plain, 500, 10)
    assert [s.info["step"] for s in val] == [9, 19] and len(train) == 18
    edges = Dataset([frame(i, {9: "before_loss", 19: "broken", 3: "candidate"}.get(i)) for i in range(20)])
    train, val = split_new_labels(edges, 500, 10)
    assert len(val) == 0 and len(train) == 20
    train, val = split_new_labels(Dataset([frame(i, "candidate") for i in range(20)]), 500, 10)
    assert [s.info["step"] for s in val] == [9, 19]


def test_survival_summary_names_what_broke():
    from ffspace.active.explore import survival
    from ffspace.md.failure import describe_failure

    broken = {**_record("b", 40, 0.01, "bond broken"), "time_ps": 0.02,
              "failure": {"reason": "stretched", "atoms": [2, 8], "elements": "O-H", "start_length_A": 0.97,
                          "length_A": 1.52}}
    records = [_record("a", 10, 0.1), _record("a", 20, 0.1), _record("b", 20, 0.1), broken]
    md = survival(records)
    assert md["300"]["runs"] == 2 and md["300"]["survived"] == 1
    assert describe_failure(md["300"]["failures"][0]) == "O-H 2–8 stretched to 1.52 Å at 0.02 ps"


def test_bad_active_config_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: {smiles: CCO}\nselect: {lower: 2.0, upper: 1.0}\n")
    with pytest.raises(ConfigError, match="select"):
        load_active_config(bad)


def _wait(proc, condition, what, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the loop ended (exit {proc.returncode}) before {what}")
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _stamps(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_loop_killed_during_labeling_and_training_resumes_without_loss_or_repeats(tmp_path):
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    out = tmp_path / "active"
    cmd = [sys.executable, "-m", "ffspace.cli", "active", str(SMALL), f"out={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    labels = out / "store" / "labels.jsonl"

    def n_labels():
        return len(labels.read_bytes().splitlines()) if labels.exists() else 0

    # 1. Killed while the 40 initial frames are being labeled.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(proc, lambda: n_labels() >= 5, "5 labels")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = set(LabelStore(out / "store").labels)
    assert 5 <= len(before) < 40, len(before)  # killed in the middle of labeling

    # 2. Rerun, killed while round 1 trains its committee (round 0 finished).
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(proc, lambda: (out / "round_01" / "committee" / "member_0" / "checkpoint.pt").exists(), "round 1 training")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = LabelStore(out / "store")
    assert before <= set(store.labels)  # no finished label lost
    round0 = _stamps(out / "round_00")
    summary0 = json.loads((out / "round_00" / "summary.json").read_text())
    assert summary0["labeled"] > 0 and summary0["explored"]["recorded"] > 0

    # 3. Rerun to the end: round 0 is read back, not redone; every label was computed once.
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _stamps(out / "round_00") == round0
    keys = [json.loads(x)["key"] for x in labels.read_text().splitlines() if x.strip()]  # no torn line left
    assert len(keys) == len(set(keys))  # nothing labeled twice
    result = json.loads((out / "rounds.json").read_text())
    assert [r["round"] for r in result["rounds"]] == list(range(len(result["rounds"])))
    assert result["labels"] == len(keys)  # every label the store holds is in the final training data
    for r in result["rounds"]:
        picked = json.loads((out / f"round_{r['round']:02d}" / "picked.json").read_text())
        assert len(picked) == r["labeled"] and all(p["reason"] for p in picked)  # what and why
    assert len(list((out / "final" / "committee").glob("member_*/model.safetensors"))) == 2

    # 4. The labels each round trained on can be read back (what benchmarks/al_selection_round.py replays).
    from ffspace.active.loop import labels_before_round
    from ffspace.errors import DataError
    from ffspace.reference.config import LabelConfig
    from ffspace.reference.job import start_structures

    cfg = load_active_config(SMALL, [f"out={out}"])
    starts = start_structures(LabelConfig(input=cfg.input, labeler=cfg.labeler, seed=cfg.seed))
    labeler = cfg.labeler.build()
    for r in result["rounds"]:
        train, val = labels_before_round(cfg, r["round"], starts, labeler)
        assert len(train) == r["train_labels"] and len(train) + len(val) == r["labels_total"] - r["labeled"]
    train, val = labels_before_round(cfg, len(result["rounds"]), starts, labeler)
    assert len(train) + len(val) == result["labels"]
    with pytest.raises(DataError, match="has not finished"):
        labels_before_round(cfg, len(result["rounds"]) + 1, starts, labeler)


@pytest.mark.slow
def test_stability_goal_logs_what_broke_and_goes_on_past_a_failing_labeler(tmp_path, monkeypatch):
    """Goal "stability" in miniature (injected blow-ups: a 0.05 Å bond tolerance breaks every trajectory): the
    round's summary names the broken bonds per temperature, the frames where they broke are labeled first, a
    pick the labeler fails on (an SCF that does not converge) is recorded and the round goes on, and a rerun
    computes no label again, the failed one included."""
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    from ffspace.active.loop import run_active
    from ffspace.reference.base import LabelFailure
    from ffspace.reference.config import LabelerConfig

    calls = {"picks": 0, "all": 0}
    build = LabelerConfig.build

    class Flaky:
        """The xTB labeler, except that the first explored frame it sees does not converge."""

        def __init__(self, inner):
            self.inner = inner

        def provenance(self):
            return self.inner.provenance()

        def label(self, s):
            calls["all"] += 1
            if "round" in s.info:
                calls["picks"] += 1
                if calls["picks"] == 1:
                    raise LabelFailure("SCF not converged in 100 cycles (injected)", s)
            return self.inner.label(s)

    monkeypatch.setattr(LabelerConfig, "build", lambda self: Flaky(build(self)))
    out = tmp_path / "active"
    cfg = load_active_config(SMALL, [f"out={out}", "goal=stability", "explore.bond_tolerance=0.05", "max_rounds=1"])
    result = run_active(cfg)
    summary = result["rounds"][0]
    md = summary["md"]["300"]  # round 0 of the ramp explores the first temperature only
    assert md["runs"] == 2 and md["survived"] == 0
    assert all(f["stopped"] == "bond broken" and len(f["atoms"]) == 2 and f["time_ps"] > 0 for f in md["failures"])
    picked = json.loads((out / "round_00" / "picked.json").read_text())
    assert all("ended here" in p["reason"] for p in picked[:2]) and len(picked) >= 2
    assert summary["label_failures"] == 1 and summary["labeled"] == len(picked) - 1
    assert len(LabelStore(out / "store").failures) == 1
    assert result["stop_reason"] == "max_rounds (1) reached"  # not "stable": the hottest temperature is not reached
    # benchmarks/al_added_labels.py exports the labelled picks from the store (the failed one left out), and
    # --last-round leaves out later rounds; it labels nothing (the calls are counted below)
    spec = importlib.util.spec_from_file_location("al_added_labels", SMALL.parents[1] / "al_added_labels.py")
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    before = dict(calls)
    added = export.added_labels(cfg)
    assert len(added) == summary["labeled"] and all(s.info["round"] == 0 for s in added)
    assert all(np.isfinite(s.forces).all() and s.energy is not None for s in added)
    assert len(export.added_labels(cfg, last_round=0)) == len(added) and export.added_labels(cfg, last_round=-1) == []
    # the loop knows each label's kind of pick (picked.json), so the broken-bond frames stay in training
    from ffspace.active.loop import _labeled_picks
    kinds = [s.info.get("pick_kind") for s in _labeled_picks(out / "round_00", cfg.labeler.build(),
                                                              LabelStore(out / "store"))]
    assert len(kinds) == summary["labeled"] and kinds.count("broken") >= 1 and None not in kinds
    assert calls == before
    run_active(cfg)  # the finished round is read back: nothing labeled again, the failed frame not retried
    assert calls == before
    # A second run on the same folder while this one holds it is refused (it would label the same picks).
    from ffspace.active.loop import _exclusive
    from ffspace.errors import ConfigError, DataError
    with _exclusive(out), pytest.raises(ConfigError, match="in use by another `ffspace active` run"):
        run_active(cfg)
    # A labeler that changed since (here its program version) finds the finished round's picks missing from the
    # store: a clear error, not hours of labelling them again one by one.
    monkeypatch.setattr(Flaky, "provenance", lambda self: {**self.inner.provenance(), "program_version": "9.9"})
    with pytest.raises(DataError, match="not in .* under the labeler"):
        run_active(cfg)
    assert calls["picks"] == before["picks"]  # (the sampled start frames are labelled again: seconds of xTB)
    monkeypatch.undo()
    # A round whose picked.extxyz was lost (empty after a crash) while picked.json lists its picks is an error.
    (out / "round_00" / "picked.extxyz").write_text("")
    with pytest.raises(DataError, match="is empty but .* lists picks"):
        _labeled_picks(out / "round_00", cfg.labeler.build(), LabelStore(out / "store"), finished=True)


@pytest.mark.slow
def test_stability_goal_stops_once_the_hottest_exploration_survives(tmp_path):
    """The miniature committee (SchNet, 10 epochs on 36 rattled frames) breaks O–H and C–O bonds within 0.05 ps
    at 300 K; labelling where they broke, round after round, makes it run to the end, and the loop stops there."""
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    from ffspace.active.loop import run_active

    cfg = load_active_config(SMALL, [f"out={tmp_path / 'active'}", "goal=stability", "explore.temperatures=[300]",
                                     "max_rounds=10", "max_labels=200"])
    result = run_active(cfg)
    rounds = result["rounds"]
    assert rounds[0]["md"]["300"]["survived"] < 2  # it did break at first
    assert result["stop_reason"].startswith("stable: every exploration trajectory"), result["stop_reason"]
    assert rounds[-1]["md"] == {"300": {"runs": 2, "survived": 2, "failures": []}}
    assert all(r["md"]["300"]["survived"] < 2 for r in rounds[:-1])


def test_an_anion_explored_at_the_labelers_charge(tmp_path):
    """The starts of a charged run (the labeler's charge, SMILES naming no `charge`) are explored at that charge:
    the committee learned and recorded labels at -1 e, and its charge-blind members refuse any other charge."""
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    from ffspace.active.loop import run_active

    cfg = load_active_config(SMALL, [f"out={tmp_path / 'active'}", "input.smiles=CC[O-]", "labeler.charge=-1",
                                     "explore.temperatures=[300]", "max_rounds=1"])
    result = run_active(cfg)
    assert result["rounds"][0]["explored"]["recorded"] > 0


def test_labels_in_two_processes_equal_those_in_one(tmp_path):
    """``label_workers: 2``: the start labels and a round's picks labelled by two processes side by side are the
    labels of one process, frame for frame."""
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    from ffspace.active.loop import run_active

    stores = []
    for workers in (1, 2):
        out = tmp_path / f"workers_{workers}"
        run_active(load_active_config(SMALL, [f"out={out}", "max_rounds=1", f"label_workers={workers}"]))
        stores.append({json.loads(line)["key"]: json.loads(line)["energy"]
                       for line in (out / "store" / "labels.jsonl").read_text().splitlines()})
    assert len(stores[0]) > 40 and stores[0].keys() == stores[1].keys()
    np.testing.assert_allclose([stores[1][k] for k in stores[0]], list(stores[0].values()), rtol=0, atol=1e-8)
