"""Wall time of one DFT label (energy + forces) by ffspace's PySCF labeler, for molecules of several sizes.

    OMP_NUM_THREADS=2 python benchmarks/dft_label_cost.py                       # PBE/def2-SVP, density fitting
    OMP_NUM_THREADS=2 python benchmarks/dft_label_cost.py --functional wb97x --basis 6-31G* --smiles "CCO"

Each molecule: an RDKit conformer (MMFF), one label timed cold (the first SCF of the run also pays PySCF's set-up).
Planning figure for the drug-like recipe (issue 31): labels per hour at this machine's thread count.
"""

from __future__ import annotations

import argparse
import time

from ffspace.reference.dft import PySCFLabeler
from ffspace.reference.inputs import from_smiles

DEFAULT = ["CCN", "Oc1ccccc1", "CC(=O)NCC(=O)NC", "CC(C)Cc1ccc(cc1)C(C)C(O)=O"]  # 10, 13, 19, 33 atoms


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smiles", nargs="+", default=DEFAULT)
    p.add_argument("--functional", default="PBE")
    p.add_argument("--basis", default="def2-SVP")
    args = p.parse_args(argv)
    labeler = PySCFLabeler(args.functional, args.basis, density_fit=True)
    print(f"| molecule | atoms | {args.functional}/{args.basis} label (s) |\n|---|---|---|")
    for smiles in args.smiles:
        s = from_smiles(smiles)[0]
        t0 = time.perf_counter()
        labeler.label(s)
        print(f"| {smiles} | {s.n_atoms} | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
