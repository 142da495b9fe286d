"""Speed of graph-learned MM: OpenMM running the exported System next to ffspace's own evaluation.

    python benchmarks/openmm_speed.py [--package runs/bench_transfer/transfer_graph_mm/model.safetensors]

For each molecule (rMD17 aspirin, paracetamol and azobenzene, and a 10-residue alanine peptide from
SMILES when RDKit is installed) prints the warm median cost per step, 2 threads:
  - OpenMM, CPU platform (mixed precision): one velocity-Verlet MD step of the exported System;
  - ffspace graph_mm: one energy + forces call, float32, parameters cached for the topology (as in MD);
  - ffspace graph_mm with parameters re-assigned by the graph network on every call;
  - ffspace PaiNN 128×3 (the ML reference point; untrained weights cost the same as trained ones).
Timing does not depend on the weights, so without --package an untrained graph_mm is timed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ffspace.data import read_dataset
from ffspace.evaluate.speed import model_cost, openmm_cost
from ffspace.interfaces.openmm import export_openmm
from ffspace.models import GraphMM, PaiNN
from ffspace.potential import Potential

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rmd17"
PEPTIDE = "CC(=O)" + "NC(C)C(=O)" * 10 + "NC"  # Ace-Ala10-NMe


class _AlwaysReassign(torch.nn.Module):
    """graph_mm held in training mode: the graph network assigns parameters on every call."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.cutoff, self.elements = model, model.cutoff, model.elements

    def forward(self, batch):
        self.inner.train(True)
        return self.inner(batch)


def molecules(data: Path):
    out = {}
    for name in ("aspirin", "paracetamol", "azobenzene"):
        f = data / f"rmd17_{name}_test_01.npz"
        if f.exists():
            out[name] = read_dataset(f)[0]
    try:
        from ffspace.reference.inputs import from_smiles

        out["Ace-Ala10-NMe"] = from_smiles(PEPTIDE)[0]
    except ImportError:
        print("RDKit not installed: skipping the peptide", file=sys.stderr)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", type=Path, default=None, help="a trained graph_mm package (default: untrained)")
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("runs/bench_openmm_speed.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    model = Potential.load(args.package).model if args.package else GraphMM([1, 6, 7, 8])
    torch.manual_seed(0)
    painn = PaiNN([1, 6, 7, 8], cutoff=5.0, features=128, layers=3)
    rows = []
    for name, s in molecules(args.data).items():
        export = export_openmm(model, s)
        row = {"molecule": name, "n_atoms": s.n_atoms,
               "openmm_cpu": openmm_cost(export, s, threads=2),
               "ffspace_graph_mm": model_cost(Potential(model), s),
               "ffspace_graph_mm_reassigned": model_cost(Potential(_AlwaysReassign(model)), s),
               "ffspace_painn": model_cost(Potential(painn), s, repeats=10)}
        rows.append(row)
        print(_line(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "command": "python benchmarks/openmm_speed.py " +
                                    " ".join(sys.argv[1:]), "threads": 2}, indent=2))
    print("\nµs per atom-step (ms per step), warm median, 2 threads\n")
    print("| molecule | atoms | OpenMM CPU, exported graph_mm | ffspace graph_mm (cached parameters) | "
          "ffspace graph_mm (re-assigned every call) | ffspace PaiNN 128×3 |\n|---|---|---|---|---|---|")
    for row in rows:
        print(_line(row))


def _line(r):
    def cell(key):
        c = r[key]
        return f"{c['us_per_atom_step']:.1f} ({c['ms_per_step']:.2f})"

    return (f"| {r['molecule']} | {r['n_atoms']} | {cell('openmm_cpu')} | {cell('ffspace_graph_mm')} | "
            f"{cell('ffspace_graph_mm_reassigned')} | {cell('ffspace_painn')} |")


if __name__ == "__main__":
    main()
