"""Where structures to label come from: SMILES (RDKit conformers) and structure files (xyz, extxyz, PDB, SDF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.structure import Structure
from ..errors import DataError


def from_smiles(smiles: str, n_conformers: int = 1, seed: int = 0) -> list[Structure]:
    """3D conformers of a SMILES string with hydrogens (ETKDG embedding, MMFF relaxation)."""
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import AllChem
    except ImportError:
        raise ImportError("SMILES input needs RDKit: pip install rdkit") from None
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"cannot parse SMILES {smiles!r}", file="<smiles>", field="smiles")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
    if not ids:
        raise DataError(f"RDKit could not embed a 3D conformer for {smiles!r}", file="<smiles>", field="smiles")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=500)
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    charge = Chem.GetFormalCharge(mol)
    return [Structure(numbers=numbers, positions=mol.GetConformer(c).GetPositions(),
                      info={"smiles": smiles, "formal_charge": charge, "conformer": k},
                      source=f"smiles:{smiles}", frame=k) for k, c in enumerate(ids)]


def read_structures(path) -> list[Structure]:
    """Every frame of a structure file ASE can read (xyz, extxyz, pdb, sdf, ...); labels are not needed."""
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:
        raise DataError(f"cannot read structures: {exc}", file=str(path)) from None
    if not frames:
        raise DataError("file holds no structures", file=str(path))
    return [Structure.from_ase(a, source=str(path), frame=k) for k, a in enumerate(frames)]
