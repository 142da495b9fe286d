"""Lists of molecules to label: SMILES files, the molecules a dataset must leave out (test sets), and the checks
that say why a SMILES was not used (unparsable, an element outside the allowed set, a test molecule).

A test molecule is recognised, in any fragment of a SMILES (a salt, a cluster, a dimer written with '.'), by its
canonical SMILES (RDKit, stereochemistry removed), by the first block of its standard InChIKey (the skeleton:
connectivity without stereo or protonation, which also joins 1,3 heteroatom-H tautomers), by the first block of
the InChIKey with keto-enol and 1,5 tautomerism (``/KET /15T``), and by RDKit's canonical tautomer of its
neutralised form: a stereoisomer, a salt, a charged form or a tautomer spelled another way is caught too.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..errors import DataError

# The ten molecules of rMD17 (Christensen & von Lilienfeld 2020), the transfer test of issue 31. Malonaldehyde
# appears in both tautomers (rMD17 holds the enol).
RMD17 = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "azobenzene": "c1ccc(cc1)N=Nc1ccccc1",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O=CCC=O",
    "malonaldehyde (enol)": "OC=CC=O",
    "naphthalene": "c1ccc2ccccc2c1",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "salicylic acid": "OC(=O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=c1cc[nH]c(=O)[nH]1",
}
EXCLUSION_SETS = {"rmd17": RMD17}


def read_smiles_file(path) -> list[tuple[str, str, int]]:
    """``(smiles, name, line)`` of every entry of a text file: one SMILES per line, an optional name after it,
    ``#`` at the start of a line or after a space starts a comment (in a SMILES it is a triple bond). Duplicates (the same canonical SMILES twice) are an error naming both lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError("SMILES file not found", file=str(path))
    entries, seen = [], {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        # A comment starts a line or follows a space: '#' inside a SMILES is a triple bond.
        text = re.split(r"\s#", raw.strip(), maxsplit=1)[0].strip()
        if not text or text.startswith("#"):
            continue
        smiles, *rest = text.split(maxsplit=1)  # a space or a tab before the name
        name = rest[0].strip() if rest else smiles
        key = canonical(smiles)
        if key is not None and key in seen:
            raise DataError(f"{smiles!r} ({name}) is the molecule of line {seen[key]} again", file=str(path),
                            frame=number, field="smiles")
        if key is not None:
            seen[key] = number
        entries.append((smiles, name, number))
    if not entries:
        raise DataError("the SMILES file lists no molecule", file=str(path))
    return entries


def read_smiles_files(paths) -> list[tuple[str, str, int, str]]:
    """``(smiles, name, line, file)`` of every entry of several SMILES files read in turn (`read_smiles_file`); a
    molecule in two files is an error naming both places, as within one file, and so is a file listed twice."""
    entries, seen, listed = [], {}, {}
    for path in paths:
        where = Path(path).resolve()
        if where in listed:  # (else every molecule of it would be sampled and labelled twice, with other seeds)
            raise DataError(f"the SMILES file is listed twice (as {listed[where]!r} and {str(path)!r})",
                            file=str(path), field="smiles_file")
        listed[where] = str(path)
        for smiles, name, line in read_smiles_file(path):
            key = canonical(smiles)
            if key is not None and key in seen:
                raise DataError(f"{smiles!r} ({name}) is the molecule of {seen[key][0]}, line {seen[key][1]}, again",
                                file=str(path), frame=line, field="smiles")
            if key is not None:
                seen.setdefault(key, (str(path), line))
            entries.append((smiles, name, line, str(path)))
    return entries


def _mol(smiles: str):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    return Chem.MolFromSmiles(smiles)


def canonical(smiles: str) -> str | None:
    """RDKit's canonical SMILES without stereochemistry (None when RDKit cannot parse it)."""
    from rdkit import Chem

    mol = _mol(smiles)
    if mol is None:
        return None
    Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(mol)


@lru_cache(maxsize=4096)
def _identities(smiles: str) -> frozenset[tuple[str, str]]:
    """(kind, key) of every fragment of ``smiles``: canonical SMILES, skeleton InChIKey block, the same with
    keto-enol/1,5 tautomerism, canonical tautomer of the neutralised fragment (empty when RDKit cannot parse it)."""
    from rdkit import Chem
    from rdkit.Chem.MolStandardize import rdMolStandardize

    mol = _mol(smiles)
    if mol is None:
        return frozenset()
    out = set()
    for fragment in Chem.GetMolFrags(mol, asMols=True):
        Chem.RemoveStereochemistry(fragment)
        out.add(("smiles", Chem.MolToSmiles(fragment)))
        out.add(("inchikey", Chem.MolToInchiKey(fragment).split("-")[0]))
        out.add(("inchikey-ket-15t", Chem.MolToInchiKey(fragment, options="/KET /15T").split("-")[0]))
        neutral = rdMolStandardize.Uncharger().uncharge(fragment)
        out.add(("tautomer", Chem.MolToSmiles(rdMolStandardize.TautomerEnumerator().Canonicalize(neutral))))
    return frozenset(x for x in out if x[1])  # (an InChI that failed is "": no match with anything)


def excluded_by(smiles: str, sets: list[str]) -> str | None:
    """The name of the excluded molecule ``smiles`` is or holds as a fragment (e.g. "rmd17: aspirin"), or None."""
    mine = _identities(smiles)
    for set_name in sets:
        if set_name not in EXCLUSION_SETS:
            raise DataError(f"unknown exclusion set {set_name!r}; known: {sorted(EXCLUSION_SETS)}",
                            field="input.exclude")
        for name, other in EXCLUSION_SETS[set_name].items():
            if mine & _identities(other):
                return f"{set_name}: {name}"
    return None


def problem(smiles: str, elements: list[str] | None, exclude: list[str], charge: int | None = None,
            multiplicity: int | None = None) -> str | None:
    """Why ``smiles`` cannot be used (unparsable, an element outside ``elements``, a net charge other than the
    labeler's ``charge``, an electron count that the labeler's ``multiplicity`` cannot have, a test molecule), or
    None."""
    from rdkit import Chem

    mol = _mol(smiles)
    if mol is None:
        return "RDKit cannot parse it"
    if charge is not None and Chem.GetFormalCharge(mol) != charge:
        return f"net formal charge {Chem.GetFormalCharge(mol)}, but the labeler's charge is {charge}"
    if multiplicity is not None:  # e.g. [CH3] or [CH2] with a singlet labeler: caught before any sampling
        with_h = Chem.AddHs(mol)
        electrons = sum(a.GetAtomicNum() for a in with_h.GetAtoms()) - Chem.GetFormalCharge(mol)
        if (electrons - (multiplicity - 1)) % 2 or multiplicity - 1 > electrons:
            return f"{electrons} electrons cannot have the labeler's multiplicity {multiplicity}"
        # An even count can still be a radical ([CH2], a carbene: two unpaired electrons), which a closed-shell
        # labeler would put in the wrong spin state. (Not the other way round: O=O is written without radicals.)
        from rdkit.Chem import Descriptors

        unpaired = Descriptors.NumRadicalElectrons(mol)
        if unpaired and multiplicity == 1:
            return (f"{unpaired} unpaired electrons (a radical as written), but the labeler's multiplicity is 1 "
                    "(closed shell)")
    if elements is not None:
        outside = sorted({a.GetSymbol() for a in Chem.AddHs(mol).GetAtoms()} - set(elements))
        if outside:
            return f"element(s) {outside} outside the allowed {sorted(elements)}"
    hit = excluded_by(smiles, exclude)
    if hit:
        return f"a test molecule ({hit}), excluded"
    return None
