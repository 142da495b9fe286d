"""benchmarks/bench_snapshot.py keeps only finished steps, and restores everything but the timings."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_snapshot import main  # noqa: E402

FILES = ["config.yaml", "report.md", "systems/water_192.npz", "openmm_water/tip3p_192.json",
         "aspirin/openmm_molecule.json",
         "aspirin/mm/accuracy.json", "aspirin/mm/train/model.safetensors", "aspirin/mm/train/checkpoint.pt",
         "aspirin/mm/speed_molecule_float32.json", "aspirin/mm/stability_300K.json", "aspirin/mm/stability_600K.tmp",
         "aspirin/painn/train/checkpoint.pt", "aspirin/painn/train/metrics.jsonl"]  # painn: still training


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_save_keeps_finished_steps_and_restore_leaves_timings_out(tmp_path):
    run, kept, again = tmp_path / "run", tmp_path / "kept", tmp_path / "again"
    for name in FILES:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(name)
    main(["save", str(run), str(kept)])
    assert _tree(kept) == {"config.yaml", "report.md", "openmm_water/tip3p_192.json", "aspirin/openmm_molecule.json",
                           "aspirin/mm/accuracy.json", "aspirin/mm/train/model.safetensors",
                           "aspirin/mm/speed_molecule_float32.json", "aspirin/mm/stability_300K.json"}
    main(["restore", str(again), str(kept)])
    assert _tree(again) == {"config.yaml", "report.md", "aspirin/mm/accuracy.json",
                            "aspirin/mm/train/model.safetensors", "aspirin/mm/stability_300K.json"}
    assert (again / "aspirin/mm/train/model.safetensors").read_text() == "aspirin/mm/train/model.safetensors"


def test_a_snapshot_pruned_against_another_restores_onto_it(tmp_path):
    """A snapshot kept without the files it shares with another (the families run keeps only what differs from
    bench_aspirin's: no copy of a model's accuracy.json) restores that model's other files once the other snapshot
    is restored first; a model trained in neither is still left out."""
    base, extra, again = tmp_path / "base", tmp_path / "extra", tmp_path / "again"
    for name in ["aspirin/mm/accuracy.json", "aspirin/mm/train/model.safetensors"]:
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(name)
    for name in ["aspirin/mm/stability_300K.json", "aspirin/ace/stability_300K.json"]:
        (extra / name).parent.mkdir(parents=True, exist_ok=True)
        (extra / name).write_text("long")
    main(["restore", str(again), str(base)])
    main(["restore", str(again), str(extra)])
    assert (again / "aspirin/mm/stability_300K.json").read_text() == "long"
    assert not (again / "aspirin/ace").exists()


ACTIVE_FILES = ["test_store/labels.jsonl", "test.extxyz", "active/store/labels.jsonl",
                "active/store/labels-0000.jsonl.gz", "active/store/.labels-0001.jsonl.tmp-123.gz",  # sealing
                "active/round_00/summary.json", "active/round_00/explored.json", "active/round_00/picked.extxyz",
                "active/round_00/committee/member_0/model.safetensors", "active/round_00/committee/member_0/done",
                "active/round_00/committee/member_0/checkpoint.pt",
                "active/round_01/committee/member_0/model.safetensors",  # still training: no `done`
                "active/round_01/committee/member_0/checkpoint.pt", "random_store/labels.jsonl.tmp"]


def test_active_kind_keeps_labels_and_finished_members_only(tmp_path):
    run, kept, again = tmp_path / "run", tmp_path / "kept", tmp_path / "again"
    for name in ACTIVE_FILES:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(name)
    main(["save", str(run), str(kept), "--kind", "active"])
    expected = {"test_store/labels.jsonl", "test.extxyz", "active/store/labels.jsonl",
                "active/store/labels-0000.jsonl.gz", "active/round_00/summary.json",
                "active/round_00/picked.extxyz", "active/round_00/committee/member_0/model.safetensors",
                "active/round_00/committee/member_0/done"}
    assert _tree(kept) == expected
    main(["restore", str(again), str(kept), "--kind", "active"])
    assert _tree(again) == expected


def test_an_atomic_write_in_flight_is_never_kept(tmp_path):
    from ffspace.outputs import atomic_path, is_atomic_temporary

    with atomic_path(tmp_path / "store" / "labels-0001.jsonl.gz") as tmp:
        assert is_atomic_temporary(tmp)
    assert not is_atomic_temporary(tmp_path / "store" / "labels-0001.jsonl.gz")
