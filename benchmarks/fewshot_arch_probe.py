"""Which MACE settings learn most from a few frames: trained from scratch on N frames of one rMD17 molecule.

    python benchmarks/fewshot_arch_probe.py --variant base='{}' --variant lmax3='{"lmax": 3}' [--epochs 300]

Each variant is version 3's drug-like architecture (``BASE`` below: MACE, 64 channels, lmax 2, vector hidden
features, 2 layers, correlation 3, 5 Å) with the given settings changed, trained from fresh weights on the same N
frames of ``--molecule``'s train_01 file (seeded) for a fixed number of epochs (cosine to zero, lr 0.005, the
few-shot benchmark's scratch settings), and scored on ``--n-val`` other train_01 frames. test_01 is never read: this
chooses an architecture for the pretrained model (issue 31, acceptance 2) on a molecule the few-shot table does
not report (salicylic acid), so the choice is not tuned on aspirin. Epochs rather than minutes: the question is
what each architecture can learn from the frames, not how fast (a larger one costs more per step; the cost is
reported as wall_s, measured on a shared CPU unless the machine is idle). ``params`` counts the weights for the
molecule's elements only (a model for more elements has more).

Results go to ``--out``/results.json, keyed by the whole model's settings, molecule, N, epochs and seed; a rerun skips
what is done.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import DATA, evaluate, few_shot_sets  # noqa: E402

from ffspace.potential.package import versions  # noqa: E402
from ffspace.train import Trainer, TrainConfig, build_model_for_data  # noqa: E402

BASE = {"family": "mace", "channels": 64, "hidden_lmax": 1, "lmax": 2, "layers": 2, "correlation": 3, "cutoff": 5.0}


def probe(settings: dict, molecule: str, n: int, n_val: int, epochs: int, seed: int, data: Path, run: Path) -> dict:
    """One variant from scratch on ``n`` frames for ``epochs`` epochs, scored on ``n_val`` other train_01 frames."""
    train, score_on = few_shot_sets(molecule, n, seed, data, n_val=n_val)
    cfg = {**BASE, **settings}
    model = build_model_for_data(cfg, train, seed=seed)
    tc = TrainConfig(epochs=epochs, batch_size=8, schedule="cosine", warmup_epochs=1, early_stop_patience=10**6,
                     lr=0.005, seed=seed, progress=False, keep="last", val_every=10)
    t0 = time.perf_counter()
    Trainer(model, train, train, tc, run_dir=run, overwrite=True).fit()
    return {"model": cfg, "params": sum(p.numel() for p in model.parameters()), "wall_s": time.perf_counter() - t0,
            **evaluate(run / "model.safetensors", score_on)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True, metavar="NAME=JSON",
                   help="a name and the settings changed from BASE, e.g. lmax3='{\"lmax\": 3}' (repeatable)")
    p.add_argument("--molecule", default="salicylic")
    p.add_argument("--shots", type=int, default=50)
    p.add_argument("--n-val", type=int, default=200)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("runs/arch_probe"))
    args = p.parse_args(argv)
    if args.n_val < 1:
        raise SystemExit("--n-val must be at least 1: the variants are scored on other train_01 frames, never test_01")
    if not args.data.is_dir():
        raise SystemExit(f"rMD17 not found at {args.data} (../shared/data/rmd17)")
    variants = {}
    for item in args.variant:
        name, _, value = item.partition("=")
        try:
            variants[name] = json.loads(value or "{}")
        except json.JSONDecodeError as e:
            raise SystemExit(f"--variant {item!r}: the settings are not JSON ({e})") from None
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name, settings in variants.items():
        model = json.dumps({**BASE, **settings}, sort_keys=True)  # the whole model: a changed BASE is another key
        key = f"{args.molecule}/{args.shots}/val{args.n_val}/{args.epochs}ep/seed{args.seed}/{model}"
        if key not in results:
            results[key] = {"name": name, **probe(settings, args.molecule, args.shots, args.n_val, args.epochs,
                                                  args.seed, args.data, args.out / name)}
            path.write_text(json.dumps({**results, "versions": versions()}, indent=1))
        r = results[key]
        print(f"{name:12s} {r['params']:8d} params  force MAE {r['forces_mae_meV_A']:6.1f} meV/Å  "
              f"energy MAE (offset-free) {r['energy_mae_meV_offset_free']:5.1f} meV  {r['wall_s']:6.0f} s")


if __name__ == "__main__":
    main()
