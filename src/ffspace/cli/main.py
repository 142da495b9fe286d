"""``ffspace <command> [config.yaml] [key=value ...]``: train, eval, md, and run (the main job)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import FFSpaceError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ffspace: machine-learning force fields from MM to ML. Every command takes an optional "
                       "YAML config and key=value overrides with dotted keys, e.g. "
                       "`ffspace train my.yaml train.epochs=50 model.features=128`. "
                       "CPU threads: set OMP_NUM_THREADS.")

ARGS_HELP = ("An optional config.yaml followed by key=value overrides (dotted keys: data.train=file.xyz, "
             "model.family=schnet, train.max_time_min=5, md.steps=1000, out=runs/x). Without a config file "
             "the shipped configs/run_default.yaml is the base.")


DEFAULT_RUN = Path(__file__).resolve().parents[1] / "configs" / "run_default.yaml"


def _config(args: list[str] | None, default_file: Path | None = DEFAULT_RUN):
    from ..config import load_config

    args = list(args or [])
    files = [a for a in args if "=" not in a]
    if len(files) > 1:
        from ..errors import ConfigError

        raise ConfigError(f"at most one config file, got {files} (overrides look like key=value)")
    return load_config(files[0] if files else default_file, [a for a in args if "=" in a])


def _guard(fn):
    """Run a command: an ffspace error (bad input, config or file) or a file-system error ends it with one line
    on stderr and exit status 2, an interrupt with status 130; neither prints a traceback."""
    try:
        return fn()
    except FFSpaceError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except OSError as exc:  # a full disk, a folder that became read-only mid-run...
        where = f" {exc.filename}" if exc.filename else ""
        typer.secho(f"error: cannot access{where}: {exc.strerror or exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.secho("interrupted: rerun the same command to resume", fg=typer.colors.RED, err=True)
        raise typer.Exit(130) from None


@app.command()
def train(args: Optional[List[str]] = typer.Argument(None, help=ARGS_HELP)):
    """Train a model; writes <out>/train/{model.safetensors, checkpoint.pt, metrics.jsonl, config.yaml}.

    Running the same command again resumes from the last checkpoint.
    """
    from .. import workflow

    _guard(lambda: workflow.train(_config(args)))


@app.command("eval")
def eval_(args: Optional[List[str]] = typer.Argument(None, help=ARGS_HELP)):
    """Evaluate a model package on the test set: MAE/RMSE (meV, meV/Å, kcal/mol) and a parity plot.

    The model is <out>/train/model.safetensors unless model_path=... is given.
    """
    from .. import workflow

    _guard(lambda: workflow.evaluate(_config(args)))


@app.command()
def md(args: Optional[List[str]] = typer.Argument(None, help=ARGS_HELP)):
    """Run MD (NVE velocity Verlet or NVT Langevin) with a model package; writes trajectory.extxyz,
    thermo.csv and a plot to <out>/md, or blowup.json if the run leaves physical territory."""
    from .. import workflow

    _guard(lambda: workflow.md(_config(args)))


@app.command()
def run(args: Optional[List[str]] = typer.Argument(None, help=ARGS_HELP)):
    """The main job: train on the shipped GFN2-xTB ethanol set (or your data), evaluate, run MD,
    and write a report folder <out>/report (metrics.json, parity.png, md_energy_temperature.png, report.md).

    With no config file it uses the shipped configs/run_default.yaml (a few minutes on a laptop CPU);
    key=value overrides apply on top.
    """
    from .. import workflow

    _guard(lambda: workflow.run(_config(args)))


@app.command()
def label(config: Path = typer.Argument(..., help="label config YAML (input, samplers, labeler, workers, ...)"),
          overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. workers=2")):
    """Make reference data: structures from SMILES or files, sampled (MD, normal modes, rattling),
    labeled with GFN2-xTB (tblite) or DFT (PySCF) into a crash-safe store, written as an extxyz dataset
    (REF_energy / REF_forces) that `ffspace train` reads. Rerunning a killed job labels only what is missing.
    """

    def go():
        from pydantic import ValidationError

        from ..config import apply_override, parse_value, read_yaml_mapping
        from ..errors import ConfigError
        from ..reference.config import LabelConfig
        from ..reference.job import run_label_job

        tree = read_yaml_mapping(config, "label config")
        for item in overrides or []:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like key=value")
            key, value = item.split("=", 1)
            apply_override(tree, key.strip(), parse_value(value))
        try:
            cfg = LabelConfig(**tree)
        except ValidationError as exc:
            lines = [f"  {'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise ConfigError("invalid label config:\n" + "\n".join(lines)) from None
        run_label_job(cfg)

    _guard(go)


@app.command("export-openmm")
def export_openmm(model: Path = typer.Argument(..., help="graph-learned MM model package (.safetensors)"),
                  structure: Path = typer.Argument(..., help="the molecule: any file ASE reads (xyz, extxyz, pdb, sdf)"),
                  out: Optional[Path] = typer.Option(None, help="System XML to write (default: <structure>.openmm.xml)"),
                  frame: int = typer.Option(0, help="frame of the structure file that fixes the topology")):
    """Export a graph-learned MM model (family graph_mm) for one molecule to an OpenMM System XML built from
    standard forces (harmonic bonds and angles, periodic torsions and impropers, NonbondedForce without cutoff),
    then check that OpenMM reproduces ffspace's energy and forces at that frame. A JSON sidecar holds the
    constant energy offset (reference energies) that standard forces cannot carry.
    """

    def go():
        import numpy as np
        import torch

        from ..errors import ConfigError, DataError
        from ..potential import Potential
        from ..reference.inputs import read_structures

        try:
            from ..interfaces.openmm import export_openmm as export
        except ImportError:
            raise ConfigError("OpenMM export needs the openmm package: pip install 'ffspace[openmm]'") from None
        frames = read_structures(structure)
        if not 0 <= frame < len(frames):
            raise DataError(f"no frame {frame} ({len(frames)} frames)", file=str(structure), field="frame")
        s = frames[frame]
        pot = Potential.load(model, dtype=torch.float64)
        try:
            result = export(pot, s)
        except ImportError:
            raise ConfigError("OpenMM export needs the openmm package: pip install 'ffspace[openmm]'") from None
        path = result.save(out or structure.with_suffix(".openmm.xml"))
        e, f = result.energy_forces(s.positions)
        ref = pot([s])
        typer.echo(f"wrote {path} and {path.with_suffix('.json')}: " +
                   ", ".join(f"{v} {k}" for k, v in result.n_terms.items()))
        typer.echo(f"OpenMM vs ffspace at frame {frame}: energy {e:.6f} vs {float(ref['energy'][0]):.6f} eV, "
                   f"max force difference {np.abs(f - ref['forces']).max():.2e} eV/Å")

    _guard(go)


@app.command()
def compress(model: Path = typer.Argument(..., help="trained package with a Deep Potential (family deep_potential)"),
             out: Optional[Path] = typer.Option(None, help="package to write (default: <model>.compressed.safetensors)"),
             table_step: Optional[float] = typer.Option(None, help="table interval in s = 1/r units (default: the "
                                                                     "model's table_step, 0.005 Å⁻¹)")):
    """Compress a Deep Potential package (what `dp compress` does): its embedding nets are then evaluated as
    piecewise quintic tables, built from the same weights when the package is loaded. `ffspace eval` on both
    packages compares them on your data."""

    def go():
        from ..models.deep_potential import compress_package

        target = out or model.with_name(model.name.replace(".safetensors", "") + ".compressed.safetensors")
        typer.echo(f"wrote {compress_package(model, target, table_step)}")

    _guard(go)


@app.command()
def bench(config: Path = typer.Argument(..., help="bench config YAML (datasets, models, budget_min, speed)"),
          overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. budget_min=5 out=runs/b")):
    """Train every model of the config on every dataset under the same budget of training minutes, then measure test
    and extrapolation errors (per element), speed on the molecule and on water boxes up to 24 000 atoms
    (float32 and float64, fitted scaling exponent, neighbour-list time) and peak memory. Writes
    <out>/report.json, report.md and plots. Running it again resumes: finished steps are read back.
    Training uses this process's threads (set OMP_NUM_THREADS); timing processes and OpenMM use `threads`.
    """

    def go():
        from ..bench import load_bench_config, run_bench

        cfg = load_bench_config(config, list(overrides or []))
        run_bench(cfg, command="ffspace bench " + " ".join([str(config), *(overrides or [])]))
        typer.echo(f"report: {Path(cfg.out) / 'report.md'}")

    _guard(go)


@app.command()
def active(config: Path = typer.Argument(..., help="active-learning config YAML (input, labeler, model, explore, "
                                                    "select, max_labels, ...)"),
           overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides, e.g. max_labels=100")):
    """Active learning: label a few sampled frames, then repeat (train a committee, explore with MD, label the
    frames it is unsure of) until exploration stays below the threshold or the label budget is spent. Every
    round writes what it explored, picked and why under `out`; running it again resumes after a kill."""

    def go():
        from ..active.config import load_active_config
        from ..active.loop import run_active

        cfg = load_active_config(config, list(overrides or []))
        result = run_active(cfg)
        typer.echo(f"{result['labels']} labels, {len(result['rounds'])} rounds ({result['stop_reason']}); "
                   f"rounds: {Path(cfg.out) / 'rounds.json'}")

    _guard(go)


@app.command()
def convert(source: Path = typer.Argument(..., help="labelled structures: extxyz, MD17 npz, DeePMD folder, ASE db or "
                                          "ffspace HDF5"),
            target: Path = typer.Argument(..., help="new file: .h5/.hdf5 (chunked, streamed by training) or .xyz"),
            energy_key: Optional[str] = typer.Option(None, help="the source's energy key (default: its reader's)"),
            forces_key: Optional[str] = typer.Option(None, help="the source's forces key"),
            energy_unit: Optional[str] = typer.Option(None, help="the source's energy unit (default: its format's)"),
            block: int = typer.Option(256, min=1, help="HDF5: structures per block, the unit of streaming")):
    """Write labelled structures in another format, in eV and Å: an HDF5 set (`data.train=set.h5`) trains with
    only a capped cache of it in memory (`data.cache_mb`); extxyz gets REF_energy / REF_forces."""

    def go():
        from ..data import read_dataset
        from ..data.hdf5 import write_hdf5
        from ..data.writers import write_extxyz
        from ..errors import ConfigError

        if target.exists():
            raise ConfigError(f"{target} exists: ffspace convert never overwrites a file")
        data = read_dataset(source, energy_key=energy_key, forces_key=forces_key, energy_unit=energy_unit)
        if target.suffix.lower() in (".h5", ".hdf5"):
            n = write_hdf5(target, data, block_structures=block, name=data.name)
        elif target.suffix.lower() in (".xyz", ".extxyz"):
            write_extxyz(target, list(data))
            n = len(data)
        else:
            raise ConfigError(f"{target}: the target's name must end in .h5, .hdf5, .xyz or .extxyz")
        typer.echo(f"{n} structures: {source} -> {target}")

    _guard(go)


@app.command()
def info():
    """What this ffspace runs with: versions, CPU threads, devices, and the process settings the command applies."""
    import torch

    from .. import runtime
    from ..models import MODEL_REGISTRY, peers
    from ..potential.package import versions

    for name, version in versions().items():
        typer.echo(f"{name:<22}{version}")
    typer.echo(f"{'cpu threads':<22}{torch.get_num_threads()} (set OMP_NUM_THREADS to change)")
    cuda = f"{torch.cuda.device_count()} GPU(s)" if torch.cuda.is_available() else "not available"
    typer.echo(f"{'cuda':<22}{cuda}")
    typer.echo(f"{'keep freed memory':<22}{'on' if runtime.freed_memory_kept() else 'off'} (glibc malloc setting, "
               "faster on large systems)")
    families = sorted(set(MODEL_REGISTRY) - {"sum", "reference"})
    typer.echo(f"{'model families':<22}{', '.join(families)}")
    missing = [f for f in peers.PEERS if not peers.installed(f)]
    if missing:
        typer.echo(f"{'peers not installed':<22}{', '.join(missing)}")


def main():
    """The ``ffspace`` command (console script and ``python -m ffspace.cli``): process settings, then the app."""
    from ..runtime import keep_freed_memory

    keep_freed_memory()  # large systems run about 2x faster on glibc (ffspace/runtime.py says why)
    app(prog_name="ffspace")
