"""Typed settings of a labeling job (``ffspace label config.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    smiles: list[str] | str | None = Field(None, description="one or more SMILES (RDKit conformers)")
    smiles_file: str | list[str] | None = Field(None, description="text file: one SMILES per line, a name after it, "
                                                "# comments; or a list of such files, read in turn")
    file: str | None = Field(None, description="structure file (xyz, extxyz, pdb, sdf): every frame is a start")
    dataset: str | None = Field(None, description="existing dataset to relabel at another level of theory")
    n_conformers: int = Field(1, ge=1)
    elements: list[str] | None = Field(None, description="SMILES input: the elements allowed (e.g. [H, C, N, O]); a "
                                       "molecule with another is recorded and left out")
    exclude: list[str] = Field(default_factory=list, description="SMILES input: molecule sets left out, recognised "
                               "in any fragment by canonical SMILES, InChIKey (also with keto-enol tautomerism) or "
                               "canonical tautomer (known: rmd17)")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("smiles", "smiles_file", "file", "dataset") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(f"give exactly one of input.smiles, input.smiles_file, input.file, input.dataset "
                             f"(got {given or 'none'})")
        return self


class SamplerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    kind: Literal["md", "normal_modes", "rattle", "torsion_scan", "dimers", "none"] = "md"
    n_frames: int = Field(100, ge=1, description="frames per start structure")
    temperature: float = Field(300.0, ge=0, description="K (md, normal_modes)")
    interval: int = Field(20, ge=1, description="md: steps between frames")
    timestep_fs: float = Field(0.5, gt=0)
    equilibration_steps: int = Field(200, ge=0)
    sigma: float = Field(0.05, gt=0, description="rattle: displacement σ, Å")
    driver: str = Field("xtb", description="md: 'xtb', or the path of a trained ffspace model package")
    dihedral: list[int] | None = Field(None, description="torsion_scan: 4 atom indices (default: first rotatable bond)")
    distances: list[float] = Field([3.0, 4.0, 5.0, 6.0, 8.0], description="dimers: centre-of-mass distances, Å")


class FieldSamplingConfig(BaseModel):
    """Uniform external fields for the sampled geometries (field-dependent models, issue 33): each geometry is
    labelled in ``copies`` random fields (isotropic directions, strengths uniform in [0, ``max_v_per_a``]) and, with
    ``keep_zero``, without one."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    copies: int = Field(2, ge=1, description="random fields per geometry")
    max_v_per_a: float = Field(0.1, gt=0, le=5.0, description="largest field strength, V/Å (0.1 V/Å ≈ 0.002 a.u.)")
    keep_zero: bool = Field(True, description="also label each geometry without a field")


class LabelerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Literal["xtb", "dft"] = "xtb"
    charge: int = 0
    multiplicity: int = Field(1, ge=1, description="2S + 1")
    # xTB
    xtb_method: str = "GFN2-xTB"
    accuracy: float = Field(1.0, gt=0)
    # DFT (PySCF)
    functional: str = "PBE"
    basis: str = "def2-SVP"
    density_fit: bool = True
    dispersion: Literal["d3bj", "d3zero", "d4"] | None = None
    conv_tol: float = Field(1e-10, gt=0, description="SCF energy convergence, Hartree")
    max_cycle: int = Field(100, ge=1)
    grid_level: int = Field(3, ge=0, le=9)
    unrestricted: bool = Field(False, description="UKS for a closed shell too (open shells are UKS anyway)")
    broken_symmetry: bool = Field(False, description="UKS from two starts, the HOMO and LUMO mixed at 45° and the "
                                  "triplet with one spin flipped, the lower kept: homolytic bond breaking "
                                  "(dissociation curves)")

    def build(self):
        if self.method == "xtb":
            from .xtb import XTBLabeler

            return XTBLabeler(self.xtb_method, charge=self.charge, multiplicity=self.multiplicity,
                              accuracy=self.accuracy)
        from .dft import PySCFLabeler

        return PySCFLabeler(self.functional, self.basis, density_fit=self.density_fit, dispersion=self.dispersion,
                            charge=self.charge, multiplicity=self.multiplicity, conv_tol=self.conv_tol,
                            max_cycle=self.max_cycle, grid_level=self.grid_level, unrestricted=self.unrestricted,
                            broken_symmetry=self.broken_symmetry)


class LabelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    input: InputConfig
    samplers: list[SamplerConfig] = [SamplerConfig()]
    fields: FieldSamplingConfig | None = Field(None, description="label the geometries in external fields too")
    labeler: LabelerConfig = LabelerConfig()
    workers: int = Field(1, ge=1, description="local worker processes")
    scheduler: str | None = Field(None, description="Dask scheduler address, e.g. tcp://host:8786")
    store: str = Field("runs/label/store", description="crash-safe label store folder")
    out: str = Field("runs/label/dataset.extxyz", description="labeled dataset: extxyz (REF_energy/REF_forces), or "
                     "chunked HDF5 when the name ends in .h5 (streamed by training)")
    seed: int = 0
    progress: bool = True
    retry_failed: bool = Field(False, description="label again the frames recorded as failed (e.g. after raising "
                               "labeler.max_cycle, which the store's keys do not include)")
    max_new_labels: int | None = Field(None, ge=0, description="label at most this many missing frames in this "
                                       "run, in the samples' order, then write `out` with every frame of the "
                                       "recipe labelled so far (0: label nothing, only write those; None: all)")
    resample: bool = Field(False, description="sample new frames into a store that holds labels of frames sampled "
                           "under other settings (without it that is an error: the labels would not be reused)")

    @model_validator(mode="after")
    def _fields_need_dft(self):
        if self.fields is not None and self.labeler.method != "dft":
            raise ValueError(f"fields: labels in an external field need labeler.method: dft (PySCF); the "
                             f"{self.labeler.method} labeler would give every field copy the zero-field label")
        return self
