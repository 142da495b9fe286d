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
