"""Errors of a trained package on its run's validation and test parts, and which molecules (``data.split_by``
groups) each part holds (issue 31): the parts are rebuilt from the run config exactly as `ffspace train` made them.
(`ffspace eval` gives the test part alone.)

    python benchmarks/train_split_errors.py benchmarks/configs/train_druglike_pbe.yaml out=runs/druglike/pbe_499 \\
        --json benchmarks/results/druglike_pbe_499/split_errors.json
"""

from __future__ import annotations

import argparse
import json
import sys

from ffspace.config import load_config
from ffspace.evaluate import error_metrics, predict
from ffspace.potential import Potential
from ffspace.workflow import load_splits, model_path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key=value, as for ffspace train (out=... names the run)")
    p.add_argument("--dtype", default="float64")
    p.add_argument("--json", help="write the errors here")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    _, val, test = load_splits(cfg)
    pot = Potential.load(model_path(cfg), dtype=args.dtype)
    out = {"command": " ".join(["python benchmarks/train_split_errors.py", *sys.argv[1:]]), "dtype": args.dtype}
    by = cfg.data.split_by
    for name, part in (("validation", val), ("test", test)):
        out[name] = {"n_frames": len(part), **error_metrics(predict(pot, part), part)}
        if by:
            out[name]["groups"] = sorted({str(s.info.get(by)) for s in part})
        print(f"{name}: {len(part)} frames, force MAE {out[name]['forces_mae_meV_A']:.1f} meV/Å, energy MAE "
              f"{out[name]['energy_mae_meV']:.1f} meV ({out[name]['energy_mae_meV_per_atom']:.1f} meV/atom)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
