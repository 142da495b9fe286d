"""Water in a field: dipoles of a field-dependent model on held-out frames, and its IR spectrum from MD against the
harmonic spectrum of the reference level (issue 33, acceptance 1 and 2).

    OMP_NUM_THREADS=2 python benchmarks/ir_water.py [--data benchmarks/data/water_field/water_field_pbe0_def2svpd.extxyz]
        [--out runs/ir_water] [--minutes 10] [--family mace] [--field true|input] [--copies 128] [--ps 4]

1. The labels of `benchmarks/configs/label_water_field.yaml` (PBE0/def2-SVPD, each geometry without a field and in
   two random fields ≤ 0.2 V/Å) are split by geometry (a geometry's frames in all its fields stay together) into
   80 % training, 10 % validation, 10 % test, seeded.
2. A model of ``--family`` with the field response (`model.field=true`) is trained for ``--minutes`` on energies,
   forces and dipoles (weights 1, 10, 100 in (eV/atom)², (eV/Å)², (e·Å)²); its test errors, the dipole MAE in debye
   among them, are printed.
3. Harmonic reference: the geometry optimised with the reference labeler (ASE BFGS to 1e-4 eV/Å), its Hessian and
   dipole derivatives by central differences of the labeler's forces and dipoles (±0.005 Å, 18 labels), normal
   modes and intensities (km/mol). The model's harmonic spectrum at its own minimum, the same way.
4. MD: ``--copies`` independent runs of ``--ps`` ps NVE at 300 K, each after 0.5 ps of Langevin (friction
   0.02 fs⁻¹), 0.5 fs steps, all copies in one batched model call per step, the model's dipole at every step; the
   classical lineshape |FT μ̇|² averaged over the runs; each band's peak and area between the midpoints of the
   harmonic frequencies. Many short runs rather than a few long ones: an isolated molecule in NVE keeps each mode's
   energy from the moment the thermostat let go (exponentially distributed around kT), and band areas follow it;
   4 runs put the relative areas off by up to 2.5× (stop 45). The relative areas' spread is given by a bootstrap
   over the copies.
Writes ``<out>/ir_water.json`` and ``<out>/ir_water.png``, prints markdown tables. Model and spectra need no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "water_field" / "water_field_pbe0_def2svpd.extxyz"


def split_by_geometry(data, seed: int = 0, fractions=(0.8, 0.1, 0.1)):
    """Train / validation / test lists in which all frames of one geometry (any field) stay together."""
    keys = {}
    for s in data:
        keys.setdefault(np.round(s.positions, 6).tobytes(), []).append(s)
    groups = list(keys.values())
    order = np.random.default_rng(seed).permutation(len(groups))
    n_train = int(round(fractions[0] * len(groups)))
    n_val = int(round(fractions[1] * len(groups)))
    parts = (order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:])
    return [[s for g in part for s in groups[g]] for part in parts]


def optimise(evaluate, structure, fmax: float = 1e-4, steps: int = 200):
    """BFGS (ASE) on ``evaluate(structure) -> (energy, forces)``."""
    from ase.calculators.calculator import Calculator, all_changes
    from ase.optimize import BFGS

    class _Calc(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            e, f = evaluate(structure.copy(positions=self.atoms.positions))
            self.results = {"energy": e, "forces": f}

    atoms = structure.to_ase()
    atoms.calc = _Calc()
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=steps)
    return structure.copy(positions=atoms.positions, energy=None, forces=None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=None, help="default: runs/ir_water (runs/ir_water_input with "
                   "--field input)")
    p.add_argument("--family", default="mace")
    p.add_argument("--field", choices=["true", "input"], default="true",
                   help="model.field: the response term (true), or also the field as an equivariant input (input)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--copies", type=int, default=128, help="independent NVE runs, integrated as one batch")
    p.add_argument("--ps", type=float, default=4.0, help="NVE length of each run, ps")
    p.add_argument("--equilibration-ps", type=float, default=0.5, help="Langevin before each NVE run, ps")
    p.add_argument("--timestep", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = ROOT / "runs" / ("ir_water" if args.field == "true" else "ir_water_input")

    import torch

    from ffspace import units
    from ffspace.data import Dataset, read_dataset
    from ffspace.evaluate.metrics import error_metrics
    from ffspace.evaluate.spectra import bands, dipole_spectrum, dipole_trajectories, finite_difference_response, \
        harmonic_modes
    from ffspace.potential import Potential
    from ffspace.reference.dft import PySCFLabeler
    from ffspace.train import Trainer, TrainConfig, build_model_for_data

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = read_dataset(args.data)
    method = data[0].info.get("label_method", "?")
    train, val, test = (Dataset(x, name=n) for x, n in zip(split_by_geometry(data), ("train", "val", "test")))
    print(f"{args.data}: {len(data)} frames ({method}); train {len(train)}, val {len(val)}, test {len(test)} "
          "(split by geometry)\n", flush=True)

    # -- 1. the field-dependent model -------------------------------------------------------------------------
    sizes = {"mace": {"channels": 32, "hidden_lmax": 1, "lmax": 2, "layers": 2, "correlation": 3},
             "painn": {"features": 64, "layers": 3}, "schnet": {"features": 64, "layers": 3}}
    spec = {"family": args.family, "cutoff": 4.0, "field": True if args.field == "true" else "input",
            **sizes.get(args.family, {})}
    package = args.out / "train" / "model.safetensors"
    made_with = args.out / "model_spec.json"
    if package.exists() and (not made_with.exists() or json.loads(made_with.read_text()) != spec):
        sys.exit(f"{package} was trained with other settings than {spec} ({made_with}): give another --out")
    made_with.write_text(json.dumps(spec))
    if not package.exists():
        model = build_model_for_data(spec, train, seed=0)
        cfg = TrainConfig(epochs=100000, max_time_min=args.minutes, batch_size=8, lr=5e-3, schedule="cosine",
                          dipole_weight=100.0, progress=False, early_stop_patience=100000)
        Trainer(model, train, val, cfg, run_dir=args.out / "train").fit()
    pot = Potential.load(package, dtype="float64")
    pred = pot.predict(list(test))
    m = error_metrics(pred, list(test))
    print("| test frames | E MAE (meV) | F MAE (meV/Å) | μ MAE (D) | μ RMSE (D) | |μ| mean (D) |\n|---|---|---|---|---|---|")
    mean_mu = np.mean([np.linalg.norm(s.info["dipole"]) for s in test]) / units.DEBYE_E_A
    print(f"| {len(test)} | {m['energy_mae_meV']:.2f} | {m['forces_mae_meV_A']:.2f} | {m['dipole_mae_D']:.4f} | "
          f"{m['dipole_rmse_D']:.4f} | {mean_mu:.3f} |\n", flush=True)

    # -- 2. harmonic spectra: reference labeler and model ----------------------------------------------------
    functional, basis = method.split("/", 1)  # the labels' own level ("PBE0/def2-SVPD")
    labeler = PySCFLabeler(functional, basis)
    start = min((s for s in data if s.info.get("field") is None), key=lambda s: s.energy).copy(info={})

    def ref_forces(s):
        out = labeler.label(s)
        return out.energy, out.forces

    def ref_response(s):
        out = labeler.label(s)
        return out.forces, out.info["dipole"]

    def model_forces(s):
        out = pot.compute(pot.batch([s]), forces=True)
        return float(out["energy"][0]), out["forces"].numpy()

    def model_response(s):
        out = pot.compute(pot.batch([s]), forces=True, dipole=True)
        return out["forces"].numpy(), out["dipole"][0].numpy()

    t0 = time.perf_counter()
    harmonic = {}
    for name, fn, resp in (("reference", ref_forces, ref_response), ("model", model_forces, model_response)):
        minimum = optimise(fn, start)
        hess, dmu = finite_difference_response(resp, minimum)
        modes = harmonic_modes(hess, minimum.to_ase().get_masses(), dmu, minimum.positions)
        harmonic[name] = {"frequencies_cm": modes["frequencies"].tolist(), "intensities_km_mol":
                          modes["intensities"].tolist(), "positions": minimum.positions.tolist()}
    print(f"harmonic analyses: {time.perf_counter() - t0:.0f} s", flush=True)

    # -- 3. MD spectrum ----------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    steps = int(round(args.ps * 1000 / args.timestep))
    minimum = start.copy(positions=np.array(harmonic["reference"]["positions"]))
    run = dipole_trajectories(pot, minimum, args.copies, steps, args.timestep, 300.0, friction=0.02,
                              equilibration_steps=int(round(args.equilibration_ps * 1000 / args.timestep)), seed=0)
    excursions = np.ptp(run["etot_eV"], axis=1)  # each copy's total-energy range over its NVE run, eV
    drift = float(excursions.max())
    spectrum = dipole_spectrum(run["dipoles"], args.timestep, smoothing_cm=5.0)
    ref_freq = np.array(harmonic["reference"]["frequencies_cm"])
    edges = [0.5 * ref_freq[0]] + [0.5 * (a + b) for a, b in zip(ref_freq[:-1], ref_freq[1:])] + [1.15 * ref_freq[-1]]
    windows = list(zip(edges[:-1], edges[1:]))
    found = bands(spectrum, windows)
    print(f"MD: {args.copies} copies × {args.ps:g} ps NVE at 300 K, {time.perf_counter() - t0:.0f} s; largest "
          f"total-energy excursion of a copy {drift * 1000:.2f} meV (median {np.median(excursions) * 1000:.2f})\n",
          flush=True)

    ref_int = np.array(harmonic["reference"]["intensities_km_mol"])
    md_area = np.array([b["area"] for b in found])
    strongest = int(np.argmax(ref_int))
    # Band areas are linear in the spectrum, and the spectrum is the mean of the copies' spectra: resampling the
    # copies' own band areas gives the spread of the relative areas.
    per_copy = np.array([[b["area"] for b in bands(dipole_spectrum(d, args.timestep, smoothing_cm=5.0), windows)]
                         for d in run["dipoles"]])
    picks = np.random.default_rng(0).integers(0, args.copies, (1000, args.copies))
    sums = per_copy[picks].sum(1)
    spread = (sums / sums[:, strongest:strongest + 1]).std(0)
    print("| band | reference harmonic (cm⁻¹) | model harmonic (cm⁻¹) | MD peak (cm⁻¹) | MD / ref. harmonic | "
          "ref. intensity (km/mol) | ref. relative | MD relative (± bootstrap σ) | MD / ref. relative |\n"
          "|---|---|---|---|---|---|---|---|---|")
    rows = []
    for k, b in enumerate(found):
        rel_ref, rel_md = ref_int[k] / ref_int[strongest], md_area[k] / md_area[strongest]
        rows.append({"reference_cm": float(ref_freq[k]), "model_cm": harmonic["model"]["frequencies_cm"][k],
                     "md_peak_cm": b["peak_cm"], "md_over_reference": b["peak_cm"] / ref_freq[k],
                     "reference_km_mol": float(ref_int[k]), "reference_relative": float(rel_ref),
                     "md_relative": float(rel_md), "md_relative_bootstrap_std": float(spread[k])})
        print(f"| {k + 1} | {ref_freq[k]:.0f} | {harmonic['model']['frequencies_cm'][k]:.0f} | {b['peak_cm']:.0f} | "
              f"{b['peak_cm'] / ref_freq[k]:.3f} | {ref_int[k]:.1f} | {rel_ref:.3f} | {rel_md:.3f} ± {spread[k]:.3f} | "
              f"{rel_md / rel_ref:.2f} |")
    result = {"data": str(args.data), "method": method, "split": [len(train), len(val), len(test)],
              "model": spec, "minutes": args.minutes, "test": m, "harmonic": harmonic, "bands": rows,
              "md": {"copies": args.copies, "ps": args.ps, "equilibration_ps": args.equilibration_ps,
                     "friction_per_fs": 0.02, "timestep_fs": args.timestep, "max_etot_excursion_eV": drift,
                     "median_etot_excursion_eV": float(np.median(excursions))}}
    (args.out / "ir_water.json").write_text(json.dumps(result, indent=1))
    _plot(spectrum, harmonic, args.out / "ir_water.png", method)
    return 0


def _plot(spectrum, harmonic, path: Path, method: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    inten = spectrum["intensity"] / spectrum["intensity"].max()
    ax.plot(spectrum["frequencies"], inten, color="C0", label="ffspace model, MD 300 K (|FT μ̇|²)")
    for name, color in (("reference", "k"), ("model", "C3")):
        f = np.array(harmonic[name]["frequencies_cm"])
        i = np.array(harmonic[name]["intensities_km_mol"])
        ax.vlines(f, 0, i / i.max(), colors=color, linestyles="-" if name == "reference" else "--",
                  label=f"{'PySCF ' + method if name == 'reference' else 'model'} harmonic")
    ax.set_xlim(500, 4500)
    ax.set_xlabel("wavenumber (cm⁻¹)")
    ax.set_ylabel("intensity (normalised)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
