"""Regenerate the dataset that ships with ffspace and that `ffspace run` trains on.

    python -m ffspace.reference.default_dataset          # same as:
    ffspace label src/ffspace/configs/label_ethanol_xtb.yaml out=src/ffspace/datasets/ethanol_gfn2xtb.extxyz

Ethanol from SMILES, frames from GFN2-xTB Langevin MD at 300 K and 600 K (200 each, 10 fs apart),
labeled with GFN2-xTB (tblite) energies and forces in eV and eV/Å under REF_energy / REF_forces.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from .config import LabelConfig
from .job import run_label_job

HERE = Path(__file__).resolve().parents[1]
RECIPE = HERE / "configs" / "label_ethanol_xtb.yaml"
DEFAULT_PATH = HERE / "datasets" / "ethanol_gfn2xtb.extxyz"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = p.parse_args(argv)
    tree = yaml.safe_load(RECIPE.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tree.update(out=str(args.out), store=str(Path(tmp) / "store"))
        run_label_job(LabelConfig(**tree))


if __name__ == "__main__":
    main()
