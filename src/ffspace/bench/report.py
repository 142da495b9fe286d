"""The benchmark report: ``report.json`` (every figure), ``report.md`` (tables) and plots.

Plots: ``pareto_<dataset>.png`` (force MAE against µs per atom-step, both log scale, with the Pareto
front) and ``scaling.png`` (ms per step against atoms on water boxes, log-log, with fitted exponents).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np

from ..evaluate.plots import pyplot, save_figure
from ..models import peers
from .curves import curves_markdown, curves_plot


def write_report(results: dict, out: Path) -> None:
    out = Path(out)
    (out / "report.json").write_text(json.dumps(results, indent=2))
    plots = []
    for name, ds in results["datasets"].items():
        if _pareto_plot(name, ds, out / f"pareto_{name}.png"):
            plots.append(f"pareto_{name}.png")
        if _survival_plot(name, ds, out / f"survival_{name}.png"):
            plots.append(f"survival_{name}.png")
        if _sampling_plot(name, ds, out / f"sampling_{name}.png"):
            plots.append(f"sampling_{name}.png")
        if curves_plot(name, ds, _ok(ds), out / f"curves_{name}.png"):
            plots.append(f"curves_{name}.png")
    if results.get("water") and _scaling_plot(results["water"], out / "scaling.png"):
        plots.append("scaling.png")
    (out / "report.md").write_text(markdown(results, plots))


def _f(x, digits=1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _speed(entry: dict, dtype: str = "float32"):
    row = (entry.get("speed_molecule") or {}).get(dtype) or {}
    return row.get("us_per_atom_step") if row.get("status") == "ok" else None


def _md_speed(entry: dict, dtype: str = "float32"):
    """µs per atom-step of full MD steps (the bench's `md_steps`), or None."""
    row = (entry.get("speed_molecule") or {}).get(dtype) or {}
    return row.get("md_us_per_atom_step") if row.get("status") == "ok" and row.get("md_status") == "ok" else None


CHEMICAL_ACCURACY = 43.0  # meV/Å (1 kcal/mol/Å)


def _md_against_openmm(ds: dict, ref: dict) -> list[str]:
    """The cheapest of our models under chemical accuracy as full MD steps, against OpenMM's MD step (same run)."""
    if ref.get("status") != "ok":
        return []
    under = [(_md_speed(m), n, m) for n, m in _ok(ds).items() if not peers.is_peer(m["family"]) and _md_speed(m)
             and (m["test"].get("forces_mae_meV_A") or float("inf")) < CHEMICAL_ACCURACY]
    if not under:
        return ["- As full MD steps: none of our models under chemical accuracy (43 meV/Å) has an MD timing here."]
    us, name, m = min(under, key=lambda t: t[0])
    row = m["speed_molecule"]["float32"]
    return [f"- As full MD steps (velocity Verlet, Verlet list, blow-up monitor; float32; fast path "
            f"{row.get('fast_path', 'off')}), our cheapest model under chemical accuracy is **{name}** "
            f"({m['test']['forces_mae_meV_A']:.1f} meV/Å): {us:.1f} µs/atom-step, "
            f"{us / ref['us_per_atom_step']:.3g}× classical MM in OpenMM ({ref['us_per_atom_step']:.1f})."]


def _ok(ds: dict) -> dict:
    """The models of a dataset that trained and were evaluated (the others are reported as errors)."""
    return {n: m for n, m in ds["models"].items() if m.get("status", "ok") == "ok"}


def _passes_note(rows) -> str:
    """Says how many timing passes a table's costs are the fastest of (nothing when there was one), and whether
    the timing processes kept freed memory for reuse."""
    rows = list(rows)
    n = max((len(r.get("passes_ms_per_step", ())) for r in rows), default=0)
    kept = any(r.get("freed_memory_kept") for r in rows)
    return ((f" Each cost is the fastest of {n} timing passes, made one after another over every model and size "
             "(on a shared machine contention only slows calls down, for minutes at a time)." if n > 1 else "")
            + (" The timing processes keep freed memory for reuse, as the `ffspace` command does "
               "(`speed.keep_freed_memory`; glibc returns large blocks to the kernel by default, and every call "
               "then page-faults its working memory again)." if kept else ""))


def _interleaved_note(water: dict) -> str:
    """Says how the water costs were timed when they come from interleaved passes (nothing otherwise)."""
    how = water.get("interleaved")
    if not how:
        return ""
    passes, cycles = how["passes"], how["cycles"]
    return (f" Each cost is the geometric mean of {passes * cycles} calls: {passes} timing pass(es), an entire pass "
            f"over every model apart, each a process per model and dtype that cycled through every size in turn "
            f"({cycles} cycle(s) after a warm-up cycle, smallest to largest and back), so that the sizes of one "
            "model met the same machine (on a shared machine contention slows calls down for minutes at a time); "
            "the exponent is fitted on these means, which is the least-squares slope through every call, and its "
            "95 % bootstrap interval over the calls is given with the linear-scaling check. Every call, the "
            "fastest, and the median of a process per size (which gives peak memory) are in report.json.")


def best_model(ds: dict, ours_only: bool = True) -> str | None:
    """The model with the lowest test force MAE; by default among ffspace's own families (not the peers)."""
    scored = [(m["test"].get("forces_mae_meV_A"), name) for name, m in _ok(ds).items()
              if m["test"].get("forces_mae_meV_A") is not None and not (ours_only and peers.is_peer(m["family"]))]
    return min(scored)[1] if scored else None


def _best_model_costs(ds: dict, best: str | None, ref: dict) -> list[str]:
    """Our most accurate model's cost relative to the peers' and to classical MM in OpenMM, same run."""
    if not (best and _speed(ds["models"][best])):
        return []
    cost, m_best = _speed(ds["models"][best]), ds["models"][best]
    lines = ["", f"Our most accurate model: **{best}** ({m_best['family']}, test force MAE "
             f"{m_best['test']['forces_mae_meV_A']:.1f} meV/Å, {cost:.0f} µs/atom-step float32)."]
    for n, m in ds["models"].items():
        if not peers.is_peer(m["family"]):
            continue
        if m.get("status", "ok") == "ok" and _speed(m):
            lines.append(f"- It costs {cost / _speed(m):.3g}× the peer {n} ({m['family']}, "
                         f"{m['test']['forces_mae_meV_A']:.1f} meV/Å, {_speed(m):.0f} µs/atom-step).")
        else:  # say why the ratio is missing rather than leave it out
            why = m.get("status", "ok") if m.get("status", "ok") != "ok" else "its float32 timing failed"
            lines.append(f"- No ratio to the peer {n} ({m['family']}): {why}.")
    if ref.get("status") == "ok":
        lines.append(f"- It costs {cost / ref['us_per_atom_step']:.3g}× classical MM in OpenMM on the same molecule "
                     f"({ref['us_per_atom_step']:.1f} µs/atom-step: MD steps of the exported graph-learned MM, CPU "
                     "platform, same threads).")
        lines += _md_against_openmm(ds, ref)
    else:
        lines.append("- No ratio to classical MM in OpenMM: " + (
            f"{ref.get('status')}: {ref.get('detail', '')}" if ref else "no reference in this run (OpenMM not "
            "installed, timing disabled, or no graph-learned MM model trained)") + ".")
    others = [f"{cost / _speed(m):.2g}× {n}" for n, m in _ok(ds).items()
              if n != best and not peers.is_peer(m["family"]) and _speed(m)]
    if others:
        lines.append("- Against our other models (float32, same run): " + ", ".join(others) + ".")
    return lines


def _epochs(training: dict) -> str:
    """Epochs and the training's wall-clock minutes (a model may have a budget of its own: `train.max_time_min`)."""
    minutes = training.get("time_s")
    return f"{training['epochs']}" + (f" ({minutes / 60:.0f})" if minutes is not None else "")


def markdown(results: dict, plots: list[str]) -> str:
    lines = [f"# ffspace bench: {results['name']}", "",
             f"Command: `{results['command']}`  ", f"Training budget: {results['budget_min']:g} min of training steps per "
             f"model and dataset, unless a model sets its own `train.max_time_min` (the epochs column gives each "
             f"model's minutes; a model with `train.init_from` also had its pretraining's).  ", f"Machine: {results['machine']['platform']}, "
             f"{results['machine']['torch_threads']} torch threads, device {results['machine']['device']}.  ",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if isinstance(v, str)), ""]
    for name, ds in results["datasets"].items():
        train_files = "` + `".join(ds["train"]) if isinstance(ds["train"], list) else ds["train"]
        lines += [f"## {name}: accuracy and cost", "",
                  f"{ds['n_train']} training / {ds['n_val']} validation / {ds['n_test']} test structures "
                  f"(`{train_files}`" + (f", test `{ds['test']}`" if ds.get("test") else "")
                  + (f"; {ds['test_dropped_as_seen_in_training']} test structures also in the training or validation "
                     "set left out" if ds.get("test_dropped_as_seen_in_training") else "") + "). "
                  "Errors are test-set MAE; cost is warm energy + forces on one test structure (a call on a torch batch; "
                  "the MD step: a full step of `ffspace md`, where timed); peak memory is "
                  "the timing process's peak resident memory (Python, torch, the model and its calls; for a "
                  "molecule the calls rarely add to what loading took)."
                  + _passes_note(row for m in ds["models"].values() for row in (m.get("speed_molecule") or {}).values()),
                  "",
                  "| model | family | E MAE (meV) | F MAE (meV/Å) | F MAE (kcal/mol/Å) | F RMSE (meV/Å) | "
                  "F MAE per element (meV/Å) | epochs (training min) | µs/atom-step float32 | float64 | "
                  "MD step float32 (µs/atom-step) | peak memory (MB) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for mname, m in ds["models"].items():
            if m.get("status", "ok") != "ok":
                lines.append(f"| {mname} | {m['family']} | {m['status']}: {m.get('detail', '')[:120]} ||||||||||")
                continue
            t = m["test"]
            per_el = ", ".join(f"{el} {v['forces_mae_meV_A']:.1f}" for el, v in m.get("per_element", {}).items())
            row = (m.get("speed_molecule") or {}).get("float32") or {}
            mem = row["peak_memory_mb"] if row.get("status") == "ok" else None
            family = m["family"] + (f" + {m['model']['prior']} prior" if m["model"].get("prior") else "")
            lines.append(f"| {mname} | {family} | {_f(t.get('energy_mae_meV'))} | "
                         f"{_f(t.get('forces_mae_meV_A'))} | {_f(t.get('forces_mae_kcal_mol_A'), 2)} | "
                         f"{_f(t.get('forces_rmse_meV_A'))} | {per_el} | {_epochs(m['training'])} | "
                         f"{_f(_speed(m), 0)} | {_f(_speed(m, 'float64'), 0)} | {_f(_md_speed(m), 0)} | "
                         f"{_f(mem, 0)} |")
        ref = ds.get("openmm_reference") or {}
        if ref.get("status") == "ok":
            lines.append(f"| OpenMM: {ref['exported_model']} exported (classical MM) | MM reference | | | | | | | "
                         f"{ref['us_per_atom_step']:.1f} | | | |")
        best = best_model(ds)
        lines += _best_model_costs(ds, best, ref)
        sets = ds.get("extrapolation_sets") or {}
        for set_name, info in sets.items():
            dropped = info.get("dropped_as_seen_in_training", 0)
            lines += ["", f"### {name}: extrapolation to `{set_name}` ({info['n']} structures, `{info['file']}`"
                      + (f"; {dropped} structures also in the training or validation set left out" if dropped else "")
                      + ")", "", "| model | E MAE (meV) | E RMSE (meV) | mean E error (meV) | E RMSE, mean removed "
                      "(meV) | F MAE (meV/Å) | F RMSE (meV/Å) | F MAE here / on the test set | validation F RMSE (meV/Å) |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for mname, m in _ok(ds).items():
                e = m["extrapolation"].get(set_name, {})
                here, test_mae = e.get("forces_mae_meV_A"), m["test"].get("forces_mae_meV_A")
                ratio = f"×{here / test_mae:.2f}" if here and test_mae else "—"
                lines.append(f"| {mname} | {_f(e.get('energy_mae_meV'))} | {_f(e.get('energy_rmse_meV'))} | "
                             f"{_f(e.get('energy_mean_error_meV'))} | {_f(e.get('energy_rmse_offset_removed_meV'))} | "
                             f"{_f(here)} | {_f(e.get('forces_rmse_meV_A'))} | {ratio} | "
                             f"{_f(m.get('validation', {}).get('forces_rmse_meV_A'))} |")
        lines += curves_markdown(name, ds, _ok(ds))
        if f"curves_{name}.png" in plots:
            lines += ["", f"![energy along paths and scans](curves_{name}.png)"]
        if f"pareto_{name}.png" in plots:
            lines += ["", f"![accuracy vs cost](pareto_{name}.png)"]
        lines += _stability_markdown(name, ds)
        if f"survival_{name}.png" in plots:
            lines += ["", f"![survival](survival_{name}.png)"]
        if f"sampling_{name}.png" in plots:
            lines += ["", f"![bond lengths and dihedral of the surviving runs](sampling_{name}.png)"]
        lines.append("")
    water = results.get("water")
    if water and water.get("status", "ok") != "ok":
        lines += ["## Cost against system size (periodic water)", "",
                  f"Not measured: {water['status']}: {water.get('detail', '')}"]
    elif water:
        lines += _water_markdown(water, _molecule_costs(results))
        if "scaling.png" in plots:
            lines += ["", "![cost vs size](scaling.png)"]
    return "\n".join(lines) + "\n"


def _stability_markdown(name: str, ds: dict) -> list[str]:
    rows = {n: m["stability"] for n, m in _ok(ds).items() if m.get("stability")}
    if not rows:
        return []
    temps = list(next(iter(rows.values()))["runs"])
    first = next(iter(next(iter(rows.values()))["runs"].values()))
    lines = ["", f"### {name}: MD stability", "",
             f"Langevin MD ({first['timestep_fs']} fs steps, {first['seeds']} seeds per temperature, from the first "
             "test structure). A seed fails when "
             + (f"a covalent bond deviates more than {first['bond_tolerance_A']} Å from its starting length, "
                if first.get("bond_tolerance_A") is not None else "(reactive mode: bonds may break and form) ")
             + "two atoms come closer than the minimum distance or the energy is not finite. Cells: seeds surviving / seeds, and the median "
             "time to failure (ps) of those that failed. NVE: velocity Verlet from 300 K, largest |energy drift| of "
             "the seeds, and the largest one-step change of a seed's total energy (meV; a smooth surface moves it "
             "by a few meV, a discontinuous one by eV).", "",
             "| model | run length (ps) | " + " | ".join(f"{t} K" for t in temps)
             + " | NVE drift (meV/atom/ps) | NVE largest step (meV) |",
             "|---|---|" + "---|" * len(temps) + "---|---|"]
    for mname, st in rows.items():
        cells = []
        lengths = sorted({r["time_ps"] for r in st["runs"].values()})
        for t in temps:
            r = st["runs"].get(t)
            if r is None:
                cells.append("")
                continue
            failed = [f for f in r["failure_ps"] if f is not None]
            # a row whose temperatures ran for different times says which ran how long, in each cell
            length = f" × {r['time_ps']:g} ps" if len(lengths) > 1 else ""
            cells.append(f"{r['survived']}/{r['seeds']}{length}"
                         + (f" ({statistics.median(failed):.2g})" if failed else ""))
        nve = st.get("nve") or {}
        # two significant figures: a float64 run's drift is ~1e-4 meV/atom/ps, which three decimals would show as 0
        worst = nve.get("max_abs_drift_meV_per_atom_ps")
        drift = ("—" if worst is None else f"{worst:.2g}") if nve.get("status") == "ok" else nve.get("status", "—")
        step = nve.get("max_abs_step_change_meV")  # absent from results made before it was recorded
        lines.append(f"| {mname} | {', '.join(f'{x:g}' for x in lengths)} | " + " | ".join(cells)
                     + f" | {drift} | {'—' if step is None else f'{step:.0f}'} |")
    causes = [f"{mname}: {why}" for mname, st in rows.items() if (why := _failure_causes(st))]
    if causes:
        lines += ["", "What failed (the bond furthest from its start length when the seed failed, or the two atoms "
                  "that came too close, counted over seeds):", ""] + [f"- {c}" for c in causes]
    return lines + _sampling_markdown(rows, temps)


def _sampling_markdown(rows: dict, temps: list) -> list[str]:
    """The surviving runs' bond-length and dihedral histograms against the training frames', as overlaps."""
    sampled = {m: st for m, st in rows.items() if any((r or {}).get("sampled", {}).get("overlap")
                                                      for r in st["runs"].values())}
    if not sampled:
        return []
    ref = next(iter(sampled.values())).get("reference") or {}
    atoms = ref.get("dihedral_atoms")
    lines = ["", "What the surviving runs sample, against the training frames: the overlap Σ min(p, q) of "
             "histograms (1: the same distribution) of bond lengths (the least-overlapping element pair, 0.01 Å bins) "
             f"and of the dihedral {atoms} (5° bins; the torsion that varies most in the training data), over the "
             "seeds that survived to the end.", "",
             "| model | " + " | ".join(f"{t} K bonds | {t} K dihedral" for t in temps) + " |",
             "|---|" + "---|---|" * len(temps)]
    for mname, st in sampled.items():
        cells = []
        for t in temps:
            o = ((st["runs"].get(t) or {}).get("sampled") or {}).get("overlap")
            if not o:
                cells += ["—", "—"]
                continue
            worst = min(o["bonds"], key=o["bonds"].get) if o["bonds"] else None
            cells += [f"{o['bonds_min']:.2f} ({worst})" if worst else "—", f"{o['dihedral']:.2f}"]
        lines.append(f"| {mname} | " + " | ".join(cells) + " |")
    return lines


def _failure_causes(st: dict) -> str:
    """'1200 K: 3× C-H stretched, 2× non-finite; ...' for one model's stability runs."""
    parts = []
    for t, r in st["runs"].items():
        counts: dict[str, int] = {}
        for f in r.get("failure") or []:
            if f:
                # one label per element pair whatever the atoms' order in the record (C-O and O-C are one bond kind)
                pair = "-".join(sorted(f["elements"].split("-"))) if f.get("elements") else "?"
                label = "non-finite" if f["reason"] == "non-finite" else f"{pair} {f['reason']}"
                counts[label] = counts.get(label, 0) + 1
        if counts:
            parts.append(f"{t} K: " + ", ".join(f"{n}× {label}" for label, n in sorted(counts.items(),
                                                                                    key=lambda x: -x[1])))
    return "; ".join(parts)


def _survival_plot(name: str, ds: dict, path: Path) -> bool:
    rows = {n: m["stability"] for n, m in _ok(ds).items() if m.get("stability")}
    if not rows:
        return False
    plt = pyplot()

    temps = list(next(iter(rows.values()))["runs"])
    fig, axes = plt.subplots(1, len(temps), figsize=(4 * len(temps), 3.6), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], temps):
        for mname, st in rows.items():
            r = st["runs"].get(t)
            if r is None:
                continue
            times = sorted(f for f in r["failure_ps"] if f is not None)
            xs, ys = [0.0], [1.0]
            for k, f in enumerate(times):
                xs += [f, f]
                ys += [ys[-1], 1.0 - (k + 1) / r["seeds"]]
            xs.append(r["time_ps"])
            ys.append(ys[-1])
            ax.plot(xs, ys, label=mname)
        ax.set_title(f"{t} K")
        ax.set_xlabel("time (ps)")
        ax.set_ylim(-0.05, 1.05)
    axes[0][0].set_ylabel("fraction of seeds still stable")
    axes[0][-1].legend(fontsize=7)
    save_figure(plt, fig, path, f"{name}: MD survival")
    return True


def _sampling_plot(name: str, ds: dict, path: Path) -> bool:
    """Histograms of the surviving runs' bond lengths (per element pair) and dihedral, per temperature, with the
    training frames' in black."""
    from .stability import BOND_BINS, DIHEDRAL_BINS

    rows = {n: m["stability"] for n, m in _ok(ds).items() if m.get("stability") and m["stability"].get("reference")}
    if not rows or not any(r.get("sampled") for st in rows.values() for r in st["runs"].values()):
        return False
    ref = next(iter(rows.values()))["reference"]
    pairs = sorted(ref["bonds"])
    temps = list(next(iter(rows.values()))["runs"])
    plt = pyplot()
    fig, axes = plt.subplots(len(temps), len(pairs) + 1, figsize=(2.8 * (len(pairs) + 1), 2.3 * len(temps)),
                             squeeze=False)
    centres = {"bond": 0.5 * (BOND_BINS[1:] + BOND_BINS[:-1]), "dihedral": 0.5 * (DIHEDRAL_BINS[1:] + DIHEDRAL_BINS[:-1])}
    for row, t in zip(axes, temps):
        for ax, pair in zip(row, pairs + ["dihedral"]):
            is_dihedral = pair == "dihedral"
            x = centres["dihedral" if is_dihedral else "bond"]
            ax.plot(x, ref["dihedral"] if is_dihedral else ref["bonds"][pair], color="black", lw=1.5,
                    label="training frames")
            for mname, st in rows.items():
                sampled = (st["runs"].get(t) or {}).get("sampled")
                if sampled:
                    ax.plot(x, sampled["dihedral"] if is_dihedral else sampled["bonds"].get(pair, [0] * len(x)),
                            lw=1, label=mname)
            if not is_dihedral:  # the populated range only
                ys = np.asarray(ref["bonds"][pair])
                nz = np.nonzero(ys)[0]
                if len(nz):
                    ax.set_xlim(x[max(nz[0] - 15, 0)], x[min(nz[-1] + 15, len(x) - 1)])
            ax.set_title(f"{t} K: " + (f"dihedral {ref.get('dihedral_atoms')}" if is_dihedral else f"{pair} (Å)"),
                         fontsize=8)
            ax.set_yticks([])
    axes[0][-1].legend(fontsize=6)
    save_figure(plt, fig, path, f"{name}: what surviving MD samples")
    return True


def _molecule_costs(results: dict) -> dict:
    """{model: {dtype: (atoms, ms per step)}} on the first dataset's molecule (the left end of the size table)."""
    ds = next(iter(results["datasets"].values()), {"models": {}})
    out = {}
    for name, m in _ok(ds).items():
        for dtype, row in (m.get("speed_molecule") or {}).items():
            if row.get("status") == "ok":
                out.setdefault(name, {})[dtype] = (row["n_atoms"], row["ms_per_step"])
    return out


def _water_markdown(water: dict, molecule: dict | None = None) -> list[str]:
    models = water["models"]
    molecule = molecule or {}
    mol_atoms = sorted({a for per in molecule.values() for a, _ in per.values()})
    sizes = sorted({r["n_atoms"] for m in models.values() for d in m.values() for r in d["rows"]})
    lines = ["## Cost against system size (periodic water)", "",
             f"Base cell: {water['cell']}; models trained on {water['trained_on']}. Milliseconds per energy + forces "
             "call (warm, graph built once); the exponent is the least-squares slope of log(cost) against "
             "log(atoms) on water, over all sizes and over sizes ≥ 3000 atoms."
             + _interleaved_note(water)
             + _passes_note(r for m in models.values() for d in m.values() for r in d["rows"])
             + (f" The first column is the {water['trained_on']} molecule ({', '.join(map(str, mol_atoms))} atoms, "
                "not periodic) from the accuracy table." if mol_atoms else ""), "",
             "| model | dtype | " + ("molecule | " if mol_atoms else "") + " | ".join(f"{n} atoms" for n in sizes)
             + " | exponent | exponent ≥ 3000 | neighbour list, largest size timed (ms) |",
             "|---|---|" + ("---|" if mol_atoms else "") + "---|" * len(sizes) + "---|---|---|"]
    notes = []
    for mname, per_dtype in models.items():
        for dtype, d in per_dtype.items():
            by_size = {r["n_atoms"]: r for r in d["rows"]}
            cells = []
            for n in sizes:
                r = by_size.get(n)
                if r is None:
                    cells.append("")
                elif r["status"] == "ok":  # "cold": one call alone took longer than max_call_s, not repeated
                    cells.append(f"{r['ms_per_step']:.3g}" + (" (cold)" if r.get("warm") is False else ""))
                else:
                    cells.append(r["status"])
                    if r["status"] == "out of memory" and r.get("requested_bytes"):
                        notes.append(f"{mname} ({dtype}) at {n} atoms asked for {r['requested_bytes'] / 2**30:.1f} GiB "
                                     f"more with a cap of {r['memory_limit_bytes'] / 2**30:.1f} GiB.")
                    elif r["status"] not in ("skipped",):
                        notes.append(f"{mname} ({dtype}) at {n} atoms: {r['status']}: {r.get('detail', '')}")
            ok = [r for r in d["rows"] if r["status"] == "ok"]
            nl = ok[-1]["neighbor_list_ms"] if ok else None
            if mol_atoms:
                mol = molecule.get(mname, {}).get(dtype)
                cells.insert(0, f"{mol[1]:.3g}" if mol else "")
            lines.append(f"| {mname} | {dtype} | " + " | ".join(cells) + f" | {_f(d['exponent'], 2)} | "
                         f"{_f(d['exponent_3000_plus'], 2)} | {_f(nl, 1)} |")
    mm = water.get("openmm_tip3p")
    if mm:
        by_size = {r["n_atoms"]: r for r in mm["rows"]}
        cells = [f"{by_size[n]['ms_per_step']:.3g}" if by_size.get(n, {}).get("status") == "ok"
                 else by_size.get(n, {}).get("status", "") for n in sizes]
        if mol_atoms:
            cells.insert(0, "")
        lines.append("| OpenMM TIP3P/PME (MM reference, MD step incl. SETTLE) | OpenMM CPU | " + " | ".join(cells)
                     + f" | {_f(mm['exponent'], 2)} | {_f(mm['exponent_3000_plus'], 2)} | |")
    lines += _exponent_check(water)
    mem_lines = ["", "Peak resident memory of the timing process (MB; it includes Python, torch and the model, "
                 "a few hundred MB at the smallest size):", "",
                 "| model | dtype | " + " | ".join(f"{n} atoms" for n in sizes) + " |",
                 "|---|---|" + "---|" * len(sizes)]
    for mname, per_dtype in models.items():
        dtype = "float32" if "float32" in per_dtype else next(iter(per_dtype))
        by_size = {r["n_atoms"]: r for r in per_dtype[dtype]["rows"]}
        mem_lines.append(f"| {mname} | {dtype} | " + " | ".join(_f(by_size.get(n, {}).get("peak_memory_mb"), 0)
                                                               for n in sizes) + " |")
    return lines + ([""] + [f"- {n}" for n in notes] if notes else []) + mem_lines


def _exponent_check(water: dict, limit: float = 1.1, min_atoms: int = 3000) -> list[str]:
    """Linear scaling, per model: the float32 exponent over the sizes ≥ ``min_atoms``, judged only when every such
    size was timed (a size that ran out of memory or was skipped makes the check incomplete, not passed); then
    one verdict over ffspace's own models (the peers are listed apart, and a model that does not apply to
    periodic water at all is named and left out)."""
    families = water.get("families", {})
    ours, theirs, excluded, failing = [], [], [], []
    for mname, per_dtype in water["models"].items():
        d = per_dtype.get("float32") or next(iter(per_dtype.values()))
        big = [r for r in d["rows"] if r["n_atoms"] >= min_atoms]
        if not big:
            continue
        na = next((r for r in d["rows"] if r["status"] == "not applicable"), None)
        if na is not None:  # e.g. a molecules-only model: the larger boxes are then skipped
            excluded.append(f"{mname} ({na.get('detail', 'not applicable')[:120]})")
            continue
        missing = [r for r in big if r["status"] != "ok"]
        x = d.get("exponent_3000_plus")
        if missing or x is None or len(big) < 2:
            text = f"{mname}: incomplete (" + (", ".join(f"{r['n_atoms']} atoms {r['status']}" for r in missing)
                                               or f"{len(big)} size(s) ≥ {min_atoms}") + ")"
            ok = False
        else:
            ok = x <= limit
            ci = d.get("exponent_3000_plus_ci95")
            text = (f"{mname}: {x:.2f} over {len(big)} sizes, {big[0]['n_atoms']}–{big[-1]['n_atoms']} atoms"
                    + (f", 95 % interval over the calls {ci[0]:.2f}–{ci[1]:.2f}" if ci else "")
                    + f" ({'ok' if ok else 'ABOVE'})")
        if peers.is_peer(families.get(mname, "")):
            theirs.append(text)
        else:
            ours.append(text)
            if not ok:
                failing.append(mname)
    if not (ours or theirs or excluded):
        return ["", f"Linear scaling: no water box of ≥ {min_atoms} atoms in this run."]
    lines = ["", f"Linear scaling (float32 exponent ≤ {limit} over every size ≥ {min_atoms} atoms):", ""]
    lines += [f"- {t}" for t in ours]
    if theirs:
        lines += [f"- peer {t}" for t in theirs]
    if excluded:
        lines += [f"- not applicable to periodic water, left out: {'; '.join(excluded)}"]
    if ours:
        lines += ["", "Every ffspace model timed on water scales linearly: " + (
            "**yes**." if not failing else f"**no** ({', '.join(failing)}).")]
    return lines


def _pareto_plot(name: str, ds: dict, path: Path) -> bool:
    pts = [(n, _speed(m), m["test"].get("forces_mae_meV_A"), peers.is_peer(m["family"])) for n, m in _ok(ds).items()]
    pts = [p for p in pts if p[1] and p[2]]
    if not pts:
        return False
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for n, x, y, peer in pts:  # peers (other projects' models) as open squares
        ax.scatter(x, y, s=36, marker="s" if peer else "o", facecolors="none" if peer else None,
                   edgecolors="black" if peer else None)
        ax.annotate(n + (" (peer)" if peer else ""), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front, best = [], float("inf")
    for n, x, y, _ in sorted(pts, key=lambda p: p[1]):  # cheapest first: a point is on the front if more accurate
        if y < best:
            front.append((x, y))
            best = y
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", lw=1, label="Pareto front")
    ax.axhline(43.4, color="tab:red", ls=":", lw=1, label="chemical accuracy (1 kcal/mol/Å)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cost (µs per atom per step, float32)")
    ax.set_ylabel("test force MAE (meV/Å)")
    ax.set_title(f"{name}: accuracy against cost")
    ax.legend(fontsize=8)
    save_figure(plt, fig, path)
    return True


def _scaling_plot(water: dict, path: Path) -> bool:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4.5))
    drawn = False
    for mname, per_dtype in water["models"].items():
        d = per_dtype.get("float32") or next(iter(per_dtype.values()))
        ok = [r for r in d["rows"] if r["status"] == "ok"]
        if not ok:
            continue
        label = mname + (f" (slope {d['exponent']:.2f})" if d["exponent"] is not None else "")
        ax.plot([r["n_atoms"] for r in ok], [r["ms_per_step"] for r in ok], "o-", label=label)
        drawn = True
    mm = water.get("openmm_tip3p")
    ok = [r for r in (mm or {}).get("rows", []) if r["status"] == "ok"]
    if ok:
        ax.plot([r["n_atoms"] for r in ok], [r["ms_per_step"] for r in ok], "k--", label="OpenMM TIP3P/PME (MM)")
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("atoms (periodic water)")
    ax.set_ylabel("ms per energy + forces call")
    ax.set_title("cost against system size")
    ax.legend(fontsize=8)
    save_figure(plt, fig, path)
    return True
