"""Every config shipped in benchmarks/configs parses with the loader its command uses: a benchmark that takes hours
must not fail on a setting renamed since it was written. Parsing only: nothing trains, labels or reads data."""

from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.yaml"))


def _load(path: Path):
    name = path.name
    if name.startswith("bench_"):
        from ffspace.bench.config import load_bench_config

        return load_bench_config(path)
    if name.startswith("active_"):
        from ffspace.active.config import load_active_config

        return load_active_config(path)
    if name.startswith("label_"):
        from ffspace.config import read_yaml_mapping
        from ffspace.reference.config import LabelConfig

        return LabelConfig(**read_yaml_mapping(path, "label config"))
    from ffspace.config import load_config

    return load_config(path)


def test_there_are_configs_to_check():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_benchmark_config_parses(path):
    assert _load(path) is not None
