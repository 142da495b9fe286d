"""Typed config of ``ffspace bench``: datasets, models, one training budget, and what to measure."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import load_yaml_config



class TestSet(BaseModel):
    """A test file whose label keys differ from its dataset's (e.g. a set labeled by `ffspace label`, which writes
    REF_energy / REF_forces, next to public data that uses energy / forces)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    file: str
    format: Literal["extxyz", "md17", "deepmd", "ase-db"] | None = None
    energy_key: str | None = None
    forces_key: str | None = None


class BenchDataset(BaseModel):
    """One dataset: training file, test file (or a seeded split) and extra test sets for extrapolation."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    train: str | list[str] = Field(..., description="file/folder, or builtin:<name> for shipped data; a list of them "
                                                   "is one training set (e.g. two temperatures)")
    test: str | None = Field(None, description="separate test file; otherwise split from `train`")
    format: Literal["extxyz", "md17", "deepmd", "ase-db"] | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    n_train: int | None = Field(None, ge=1, description="training structures (default: all not held out)")
    n_val: float = Field(0.05, gt=0, description="validation size: fraction (< 1) or count")
    n_test: float = Field(0.2, gt=0, description="test size when no test file is given: fraction or count")
    extrapolation: dict[str, str | TestSet] = Field(
        default_factory=dict, description="extra test sets, name → file (e.g. a higher temperature), or name → "
                                          "{file, energy_key, forces_key, format} when its keys differ")
    curves: dict[str, str] = Field(default_factory=dict,
                                   description="energy curves, name → file of frames in path order with reference "
                                               "energies (a reaction path, a dihedral scan; forces not needed): "
                                               "each model's energies along it, mean offset removed, and a plot")
    seed: int = 0

    @model_validator(mode="after")
    def _some_training_file(self):
        if isinstance(self.train, list) and not self.train:
            raise ValueError(f"dataset {self.name}: train is an empty list (give a file, or a list of files)")
        return self


class BenchModel(BaseModel):
    """A model entry: a name for the report, the ``model`` section and per-model training overrides."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    model: dict[str, Any] = Field(..., description="as the `model` section of a run config: family + settings")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides for this model")
    stability: bool = Field(True, description="run the stability protocol for this model (false: e.g. a model "
                            "trained only as another's frozen prior)")

    @field_validator("model")
    @classmethod
    def _has_family(cls, v):
        if "family" not in v:
            raise ValueError("model needs a `family` (e.g. {family: painn, features: 64})")
        return v


class SpeedConfig(BaseModel):
    """Warm energy + forces cost on the dataset's molecule and on replicated periodic water boxes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    water_replicas: list[int] = Field([1, 2, 3, 4, 5], description="n×n×n copies of the 192-atom water cell: "
                                      "192, 1536, 5184, 12288, 24000 atoms")
    water_cell: str = Field("auto", description="DeePMD water system folder; 'auto': ../shared/data/deepmd_water "
                            "when present, else a generated 64-molecule box at 1 g/cm³")
    dtypes: list[Literal["float32", "float64"]] = ["float32", "float64"]
    repeats: int = Field(5, ge=1, description="timed calls per size (median), after warm-up")
    max_call_s: float = Field(300.0, gt=0, description="a model whose call takes longer skips the larger sizes")
    time_budget_s: float = Field(30.0, gt=0, description="timed calls per size stop once they add up to this "
                                 "(at least one after the warm-up): large boxes take seconds per call")
    rounds: int = Field(1, ge=1, description="timing passes, one after another over every model (molecules first, "
                        "then water); each molecule cost is the fastest pass's median, each water cost the geometric mean "
                        "of the calls of all passes (water_cycles). On a shared machine a slow phase lasts minutes, longer "
                        "than one size's calls, and only ever slows calls down. The MD run length is decided by the "
                        "first pass")
    water_cycles: int = Field(2, ge=0, description="water: after one process per size (peak memory, which sizes "
                              "fit), each timing pass runs one process per model and dtype that times every fitted "
                              "size in turn, this many cycles after a warm-up cycle; each cost is the geometric mean "
                              "of the size's calls over all passes, and the exponents are fitted on those (sizes in "
                              "one process meet the same machine phases). 0: each cost is the per-size process's median")
    md_steps: int = Field(300, ge=0, description="molecule: also time this many full MD steps per model and dtype "
                          "(velocity Verlet 0.5 fs from 300 K, Verlet list, blow-up monitor, nothing written, after "
                          "50 warm-up steps), the quantity OpenMM's reference cost is (0: calls only)")
    keep_freed_memory: bool = Field(True, description="timing processes keep freed memory for reuse, as the ffspace "
                                    "command does (ffspace.runtime.keep_freed_memory: large systems run about 2x "
                                    "faster on glibc); false times the C library's default")
    memory_limit_gb: float | None = Field(None, gt=0, description="address-space cap of each timing process "
                                          "(default: 85% of the machine's memory)")


class StabilityConfig(BaseModel):
    """Langevin MD of several seeds per temperature from the first test structure, plus an NVE drift run."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    temperatures: list[float] = Field([300.0, 600.0, 1200.0], description="K")
    seeds: int = Field(5, ge=1, description="independent copies per temperature, run as one batch")
    time_ps: float = Field(20.0, gt=0, description="length of each run for models cheaper than slow_ms_per_step")
    slow_time_ps: float = Field(5.0, gt=0, description="length for models that cost more than slow_ms_per_step")
    slow_ms_per_step: float = Field(2.0, gt=0, description="float32 cost on the molecule that makes a model slow")
    timestep_fs: float = Field(0.5, gt=0)
    friction: float = Field(0.01, ge=0, description="Langevin friction, 1/fs")
    time_ps_at: dict[float, float] = Field(default_factory=dict, description="run length per temperature (K: ps), "
                                           "overriding time_ps, e.g. {1200: 20}; slow models stop at slow_time_ps")
    bond_tolerance: Optional[float] = Field(0.5, gt=0, description="Å a bond may deviate from its start before "
                                            "failure; null: reactive mode (bonds may break and form)")
    min_distance: float = Field(0.6, ge=0, description="Å: two atoms closer than this fail the run (0: no check)")
    dihedral: Optional[list[int]] = Field(None, min_length=4, max_length=4, description="atom indices of the "
                                          "dihedral whose distribution is recorded; default: the torsion about a "
                                          "heavy-atom bond that varies most in the training frames")
    sample_fs: float = Field(20.0, gt=0, description="fs between samples of bond lengths and the dihedral")
    nve_ps: float = Field(2.0, ge=0, description="NVE run (300 K start) for the energy drift; 0 skips it")
    dtype: Literal["float32", "float64"] = "float64"


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = "bench"
    out: str = Field("runs/bench", description="output folder (the run resumes from what is there)")
    budget_min: float = Field(60.0, gt=0, description="training budget per model and dataset, minutes of training "
                              "steps on the clock (validation timed apart)")
    threads: int = Field(2, ge=1, description="CPU threads of the timing processes and OpenMM; training uses the "
                         "process's own (OMP_NUM_THREADS), and the runner warns when they differ")
    device: str = "cpu"
    train: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides for every model")
    datasets: list[BenchDataset]
    models: list[BenchModel]
    speed: SpeedConfig = SpeedConfig()
    stability: StabilityConfig = StabilityConfig()

    @model_validator(mode="after")
    def _unique_names(self):
        for kind, items in (("dataset", self.datasets), ("model", self.models)):
            names = [x.name for x in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{kind} names must be unique, repeated: {dup}")
        return self


def load_bench_config(path, overrides: list[str] = ()) -> BenchConfig:
    """YAML file ← ``key=value`` overrides (dotted keys); errors name the file and the field."""
    return load_yaml_config(BenchConfig, path, overrides, what="bench config")
