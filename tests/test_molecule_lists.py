"""Lists of molecules to label (issue 31): SMILES files, the test molecules left out, bad entries recorded while
the others go on, and sampling that resumes molecule by molecule."""

import json
from pathlib import Path

import pytest

from ffspace.errors import DataError
from ffspace.reference import job
from ffspace.reference.config import LabelConfig
from ffspace.reference.molecules import RMD17, excluded_by, problem, read_smiles_file

pytest.importorskip("rdkit")


def test_every_rmd17_molecule_is_recognised_however_it_is_written():
    for name, smiles in RMD17.items():
        assert excluded_by(smiles, ["rmd17"]) is not None, name
    # other spellings: Kekulé aspirin, paracetamol from the other end, the enol tautomer of malonaldehyde
    assert excluded_by("CC(=O)OC1=CC=CC=C1C(O)=O", ["rmd17"]) == "rmd17: aspirin"
    assert excluded_by("Oc1ccc(NC(C)=O)cc1", ["rmd17"]) == "rmd17: paracetamol"
    assert excluded_by("O/C=C/C=O", ["rmd17"]).startswith("rmd17: malonaldehyde")
    assert excluded_by("c1ccc(cc1)/N=N/c1ccccc1", ["rmd17"]) == "rmd17: azobenzene"
    assert excluded_by("CCCO", ["rmd17"]) is None and excluded_by("Cc1ccccc1C", ["rmd17"]) is None
    # a salt, a charged form, a cluster, a keto tautomer of the phenol: still the test molecules
    assert excluded_by("CC(=O)Oc1ccccc1C(=O)[O-].[Na+]", ["rmd17"]) == "rmd17: aspirin"
    assert excluded_by("CCO.O", ["rmd17"]) == "rmd17: ethanol"
    assert excluded_by("CC(=O)NC1=CCC(=O)C=C1", ["rmd17"]) == "rmd17: paracetamol"
    assert excluded_by("CC(O)=Nc1ccc(O)cc1", ["rmd17"]) == "rmd17: paracetamol"
    assert excluded_by("CC(=O)Nc1ccc(O)cc1C", ["rmd17"]) is None  # a methylated paracetamol is another molecule
    with pytest.raises(DataError, match="unknown exclusion set 'md22'"):
        excluded_by("CCO", ["md22"])


def test_problems_name_what_is_wrong():
    assert problem("C1CC", None, []) == "RDKit cannot parse it"
    assert "['Br']" in problem("CCBr", ["H", "C", "N", "O"], [])
    assert problem("CCO", None, ["rmd17"]) == "a test molecule (rmd17: ethanol), excluded"
    assert problem("CCN", ["H", "C", "N"], ["rmd17"]) is None


def test_smiles_file_entries_and_duplicates(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("# header\nCCN ethylamine\n\nCOC  # dimethyl ether\nCC#N acetonitrile # a triple bond\n")
    assert read_smiles_file(path) == [("CCN", "ethylamine", 2), ("COC", "COC", 4), ("CC#N", "acetonitrile", 5)]
    path.write_text("CCN ethylamine\nNCC again\n")
    with pytest.raises(DataError, match="line 1 again") as info:
        read_smiles_file(path)
    assert "mols.smi, frame 2, field 'smiles'" in str(info.value)  # the file and the line it names


def _config(tmp_path, smiles_file, **extra):
    return LabelConfig(input={"smiles_file": str(smiles_file), "elements": ["H", "C", "N", "O"],
                              "exclude": ["rmd17"], **extra},
                       samplers=[{"kind": "rattle", "n_frames": 2, "sigma": 0.02}], labeler={"method": "xtb"},
                       store=str(tmp_path / "store"), out=str(tmp_path / "out.extxyz"), progress=False)


def test_bad_and_excluded_molecules_are_recorded_and_the_others_go_on(tmp_path):
    path = tmp_path / "mols.smi"
    path.write_text("CCN ethylamine\nC1CC broken\nCCBr bromoethane\nCC(=O)Nc1ccc(O)cc1 paracetamol\nCOC ether\n")
    cfg = _config(tmp_path, path)
    frames = job.sampled_frames(cfg, cfg.store)
    assert [f.info["name"] for f in frames] == ["ethylamine"] * 2 + ["ether"] * 2
    left_out = [json.loads(x) for x in (tmp_path / "store" / "input_failures.jsonl").read_text().splitlines()]
    assert [(x["name"], x["line"]) for x in left_out] == [("broken", 2), ("bromoethane", 3), ("paracetamol", 4)]
    assert "rmd17: paracetamol" in left_out[2]["reason"]
    path.write_text("C1CC broken\n")
    with pytest.raises(DataError, match="no usable molecule"):
        job.start_structures(_config(tmp_path / "b", path), [])


def test_several_smiles_files_are_read_in_turn(tmp_path):
    """input.smiles_file as a list: the molecules of each file in turn, a failure named with its own file and line,
    and the first file's molecules sampled as when it was read alone (a file added at the end changes none)."""
    first, second = tmp_path / "a.smi", tmp_path / "b.smi"
    first.write_text("CCN ethylamine\nCOC ether\n")
    second.write_text("CC=O acetaldehyde\nC1CC broken\n")
    alone = job.sampled_frames(_config(tmp_path / "alone", first), tmp_path / "alone" / "store")
    cfg = _config(tmp_path / "both", first).model_copy(deep=True)
    cfg.input.smiles_file = [str(first), str(second)]
    both = job.sampled_frames(cfg, cfg.store)
    assert [f.info["name"] for f in both] == ["ethylamine"] * 2 + ["ether"] * 2 + ["acetaldehyde"] * 2
    for a, b in zip(alone, both):
        assert (a.positions == b.positions).all()
    [failure] = [json.loads(x) for x in (Path(cfg.store) / "input_failures.jsonl").read_text().splitlines()]
    assert (failure["name"], failure["line"], failure["file"]) == ("broken", 2, str(second))
    with pytest.raises(DataError, match="b.smi"):
        job.start_structures(cfg)  # no list to record it in: the error names the file
    one = cfg.model_copy(deep=True)
    one.input.smiles_file = [str(first)]  # a one-file list is the file: the same samples
    assert job.samples_path(one, "x") == job.samples_path(_config(tmp_path, first), "x")
    second.write_text("CC=O acetaldehyde\nNCC ethylamine-again\n")  # (CCN written another way)
    with pytest.raises(DataError, match=r"a.smi, line 1, again"):
        job.start_structures(cfg, [])
    twice = cfg.model_copy(deep=True)  # one file named twice, another way: each molecule would be sampled twice
    twice.input.smiles_file = [str(first), str(first.parent / "." / first.name)]
    with pytest.raises(DataError, match="listed twice"):
        job.start_structures(twice, [])


def test_sampling_resumes_with_the_next_molecule(tmp_path, monkeypatch):
    """Killed while sampling the third molecule, the rerun samples only the third and later ones, and the
    frames are those of an uninterrupted run."""
    path = tmp_path / "mols.smi"
    path.write_text("CCN\nCOC\nCC=O\nCCC\n")
    whole = job.sampled_frames(_config(tmp_path / "whole", path), tmp_path / "whole" / "store")
    cfg = _config(tmp_path / "killed", path)
    real, calls = job.sample_start, []

    def dies_at_the_third(cfg, start, k):
        calls.append(k)
        if k == 2 and len(calls) < 4:
            raise KeyboardInterrupt
        return real(cfg, start, k)

    monkeypatch.setattr(job, "sample_start", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        job.sampled_frames(cfg, cfg.store)
    assert calls == [0, 1, 2]
    again = job.sampled_frames(cfg, cfg.store)
    assert calls == [0, 1, 2, 2, 3]
    assert len(again) == len(whole) == 8
    for a, b in zip(whole, again):
        assert (a.positions == b.positions).all() and a.info == b.info
    assert not list(Path(cfg.store).glob("*.parts"))


def test_the_shipped_drug_like_list_is_clean():
    """benchmarks/data/druglike/molecules.smi: every entry parses, has only the allowed elements, is no rMD17
    molecule and appears once; the recipes use it with the exclusion on."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    lists = root / "benchmarks" / "data" / "druglike"
    entries = read_smiles_file(lists / "molecules.smi")
    extra = read_smiles_file(lists / "molecules_extra.smi")  # stop 63's additions
    assert len(entries) >= 100 and len(extra) >= 200
    for smiles, name, line in entries + extra:
        assert problem(smiles, ["H", "C", "N", "O", "F", "S", "Cl"], ["rmd17"]) is None, (name, line)
    from rdkit import Chem

    canonical = [Chem.MolToSmiles(Chem.MolFromSmiles(smiles)) for smiles, _, _ in entries + extra]
    assert len(set(canonical)) == len(canonical)  # no molecule in both lists
    # the added list's own rule (its header): no isomer of an rMD17 molecule, none holding one of six of them whole
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    formulas = {CalcMolFormula(Chem.MolFromSmiles(s)) for s in RMD17.values()}
    whole = [Chem.MolFromSmiles(RMD17[k]) for k in ("aspirin", "azobenzene", "naphthalene", "paracetamol",
                                                     "salicylic acid", "uracil")]
    for smiles, name, line in extra:
        mol = Chem.MolFromSmiles(smiles)
        assert CalcMolFormula(mol) not in formulas, (name, line)
        assert not any(mol.HasSubstructMatch(q) for q in whole), (name, line)
        assert mol.GetNumHeavyAtoms() <= 20 and Chem.AddHs(mol).GetNumAtoms() <= 35, (name, line)
    for recipe in ("label_druglike_xtb.yaml", "label_druglike_pbe.yaml"):
        cfg = LabelConfig(**yaml.safe_load((root / "benchmarks" / "configs" / recipe).read_text()))
        assert cfg.input.exclude == ["rmd17"] and cfg.input.smiles_file.endswith("molecules.smi")
    cfg = LabelConfig(**yaml.safe_load((root / "benchmarks" / "configs" / "label_druglike_xtb_extended.yaml").read_text()))
    assert cfg.input.exclude == ["rmd17"] and [Path(f).name for f in cfg.input.smiles_file] == [
        "molecules.smi", "molecules_extra.smi"]


def test_a_label_job_writes_hdf5_when_asked(tmp_path):
    from ffspace.data import read_dataset

    path = tmp_path / "mols.smi"
    path.write_text("CCN\nCOC\n")
    cfg = _config(tmp_path, path).model_copy(update={"out": str(tmp_path / "set.h5")})
    labelled = job.run_label_job(cfg)
    back = read_dataset(tmp_path / "set.h5")
    assert len(back) == len(labelled) == 4
    assert [s.energy for s in back] == [s.energy for s in labelled]
    job.run_label_job(cfg)  # a rerun remakes the file from the store
    assert len(read_dataset(tmp_path / "set.h5")) == 4


def test_charge_tabs_and_a_molecule_the_sampler_cannot_handle(tmp_path):
    """A charged SMILES for a neutral labeler is left out; a tab may separate the name; a molecule that a sampler
    fails on (a torsion scan of water: no rotatable bond) is recorded with the reason and the others go on, also
    after a rerun; editing the SMILES file samples anew."""
    assert "net formal charge 1" in problem("C[NH3+]", None, [], charge=0)
    path = tmp_path / "mols.smi"
    path.write_text("CCCC\tbutane\nO water\nC[NH3+] methylammonium\n")
    assert read_smiles_file(path)[0] == ("CCCC", "butane", 1)
    cfg = LabelConfig(input={"smiles_file": str(path)}, samplers=[{"kind": "torsion_scan", "n_frames": 3}],
                      labeler={"method": "xtb"}, store=str(tmp_path / "store"), out=str(tmp_path / "o.extxyz"),
                      progress=False)
    frames = job.sampled_frames(cfg, cfg.store)
    assert {f.info["name"] for f in frames} == {"butane"} and len(frames) == 3
    failures = (tmp_path / "store" / "input_failures.jsonl").read_text()
    assert "methylammonium" in failures and "net formal charge" in failures
    assert "water" in failures and "sampling failed" in failures
    first = job.samples_path(cfg, cfg.store)
    path.write_text("CCCC\tbutane\nCCCCC pentane\n")
    assert job.samples_path(cfg, cfg.store) != first  # the molecules changed, not the file's name
