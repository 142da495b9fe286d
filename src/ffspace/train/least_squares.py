"""Regularised linear least squares for the families that are linear in their weights (linear ACE).

The objective is the `Trainer`'s mean-squared loss: w_E · mean over structures of (ΔE/N)² + w_F · mean over force
components of ΔF² (a Huber loss or a stress weight is refused: neither is a linear least-squares problem here), plus a ridge penalty λ Σ_f G_ff (1 + degree_f)^p w_f² relative to each column's own size (G = AᵀA), so that λ is
dimensionless, and larger for features of higher polynomial degree (the model's ``ridge_power`` p, a smoothness
prior; rescaled to the same mean strength as p = 0). The fixed terms of the model (reference energies, ZBL, a frozen Δ prior, dispersion) are the
model's predictions with the linear weights at zero; the linear term fits what they leave.

Each training structure adds one energy row and 3N force rows to the normal equations AᵀA w = Aᵀy; the force
rows, −∂(Σ_i B_i)/∂r, come from forward-mode differentiation of the features (one tangent per coordinate): by the
C kernel of `ffspace.train.ace_design`, or by ``torch.func.jacfwd`` where it cannot be built. AᵀA is accumulated on
one triangle by BLAS's symmetric rank-k update (`add_gram`).
The fit tries every λ of the model's ``ridge`` on the accumulated equations and keeps the one whose validation loss
(the trainer's) is lowest. The equations are checkpointed every minute: a killed fit resumes from its last
checkpoint and loses at most a minute of work.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import replace

import numpy as np
import torch

from ..errors import ConfigError
from ..graph.batch import collate
from ..outputs import write_json
from ..potential import Potential
from ..potential.package import save_package
from ..progress import progress as progress_bar

CHECKPOINT_EVERY_S = 60.0
ROWS_PER_PRODUCT = 1024


def linear_term(model):
    """The model's term that is fitted by least squares (a family with ``linear = True``), or None. A model with
    such a term must have no other trainable parameter: those would need gradient descent."""
    terms = list(model.terms) if hasattr(model, "terms") else [model]
    linear = [t for t in terms if getattr(t, "linear", False)]
    if not linear:
        return None
    if len(linear) > 1:
        raise ConfigError("a model may hold one linear (least-squares) term, it holds "
                          f"{[t.family for t in linear]}")
    others = [t.family for t in terms if t is not linear[0] and any(p.requires_grad for p in t.parameters())]
    if others:
        raise ConfigError(f"model family {linear[0].family!r} is fitted by linear least squares, but the model also "
                          f"has trainable term(s) {others} (prior: mm, mm_morse, morse or coulomb need gradient "
                          "descent); use a frozen package as the prior (model.prior: path/to/model.safetensors) instead")
    return linear[0]


def _design(term, graph, dtype, atoms=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One structure's energy row (F·elements,) and force rows (3·len(atoms), F·elements) of the linear term: the
    derivatives with respect to the coordinates of ``atoms`` (default: all), one forward-mode tangent each."""
    batch = collate([graph], dtype=dtype, labels=False)
    species = term.species(batch.numbers)
    onehot = torch.nn.functional.one_hot(species, len(term.elements)).to(dtype)  # (N, elements)
    scale = float(term.energy_scale)
    positions = batch.positions
    atoms = torch.arange(positions.shape[0]) if atoms is None else torch.as_tensor(atoms, dtype=torch.long)

    def summed(moved):
        b = term.features(replace(batch, positions=positions.index_put((atoms,), moved)))
        return (onehot.T @ b).reshape(-1) * scale

    moved = positions[atoms]
    row = summed(moved)
    jac = torch.func.jacfwd(summed)(moved)  # (F·elements, len(atoms), 3)
    return row, -jac.reshape(row.shape[0], -1).T


def _design_rows(term, dtype):
    """``(graph, atoms) → (row, force rows)``: by the C kernel of `ffspace.train.ace_design` where it builds (5-20x
    faster), else by forward-mode autograd (`_design`), after one warning."""
    from ..kernels.build import KernelUnavailable
    from .ace_design import DesignKernel

    try:
        kernel = DesignKernel(term)
    except KernelUnavailable as exc:
        warnings.warn(f"linear ACE design rows by forward-mode autograd (slower): {exc}", stacklevel=3)
        return lambda graph, atoms: _design(term, graph, dtype, atoms)

    def rows(graph, atoms):
        batch = collate([graph], dtype=dtype, labels=False)
        return kernel(batch, torch.as_tensor(atoms, dtype=torch.long))
    return rows


def _force_atoms(structures, per_structure: int | None, seed: int) -> list[np.ndarray]:
    """The atoms whose forces enter the fit, per structure: all, or ``per_structure`` drawn without replacement."""
    rng = np.random.default_rng(seed)
    return [np.arange(s.n_atoms) if per_structure is None or per_structure >= s.n_atoms
            else np.sort(rng.choice(s.n_atoms, per_structure, replace=False)) for s in structures]


def _residual_labels(trainer, potential) -> tuple[list, list]:
    """Energies and forces the linear term must fit: the labels minus the fixed terms' predictions (None where a
    structure has no such label: the trainer has checked that every label with a weight > 0 exists)."""
    pred = potential.predict(trainer.train_graphs, batch_size=trainer.config.eval_batch_size)
    cuts = np.cumsum([s.n_atoms for s in trainer.train_set])[:-1]
    energies = [None if s.energy is None else s.energy - e for s, e in zip(trainer.train_set, pred["energy"])]
    forces = [None if s.forces is None else s.forces - f
              for s, f in zip(trainer.train_set, np.split(pred["forces"], cuts))]
    return energies, forces


def fit_least_squares(trainer) -> dict:
    """Fit ``trainer``'s linear term (see the module docstring); writes what `Trainer.fit` writes and returns the
    same summary."""
    cfg = trainer.config
    term = linear_term(trainer.model)
    if cfg.loss != "mse" or cfg.stress_weight > 0:
        raise ConfigError(f"model family {term.family!r} is fitted by linear least squares on energies and forces: "
                          f"train.loss must be mse (got {cfg.loss}) and train.stress_weight 0 (got {cfg.stress_weight})")
    trainer.ema = None  # one solution per ridge strength: no weight averaging
    dtype = torch.float64  # normal equations square the condition number: float32 would lose the fit
    f64 = Potential(trainer.model, dtype=dtype)  # on the CPU: the fit runs there whatever train.device is  # a float64 copy; its linear weights are zero for now
    lin64 = linear_term(f64.model)
    with torch.no_grad():
        lin64.weights.zero_()
    trainer._write_run_files()
    if cfg.progress:
        print(f"{term.family}: {term.weights.numel()} weights fitted by linear least squares on "
              f"{len(trainer.train_set)} structures (the SGD settings epochs, lr, batch_size, schedule and val_every do "
              f"not apply; ridge strengths tried: {sorted(term.config['ridge'])})", file=sys.stderr)
    t_start = time.perf_counter()
    state = _load_equations(trainer)
    n_cols = lin64.weights.numel()
    if state is None:
        state = {"done": 0, "gram": torch.zeros(n_cols, n_cols, dtype=dtype), "rhs": torch.zeros(n_cols, dtype=dtype),
                 "elapsed": 0.0}
    elif state["done"]:
        print(f"resuming {trainer.run_dir}: {state['done']}/{len(trainer.train_set)} structures already in the "
              "normal equations", file=sys.stderr)
    energies, forces = _residual_labels(trainer, f64)
    n_frames = len(trainer.train_set)
    # With fit_force_atoms, each structure contributes the forces of that many atoms drawn at random (seeded): each
    # force row costs ~N, a frame's rows ~N², and a water frame's 576 forces are highly redundant.
    chosen = _force_atoms(trainer.train_set, term.config["fit_force_atoms"], cfg.seed)
    n_components = 3 * sum(len(c) for c in chosen)
    w_e = math.sqrt(cfg.energy_weight / n_frames)
    w_f = math.sqrt(cfg.forces_weight / n_components)
    bar = progress_bar(total=n_frames, initial=state["done"], desc="least squares: design rows",
                       enabled=cfg.progress, unit="structure")
    last_save = time.perf_counter()
    pending_rows, pending_targets = [], []

    def flush():  # AᵀA from ~1000 rows at a time: larger matrix products run closer to the CPU's peak
        if pending_rows:
            a, y = torch.cat(pending_rows), torch.cat(pending_targets)
            add_gram(state["gram"], a)
            state["rhs"].addmv_(a.T, y)
            pending_rows.clear()
            pending_targets.clear()

    design = _design_rows(lin64, dtype)
    for k in range(state["done"], n_frames):
        row, force_rows = design(trainer.train_graphs[k], chosen[k])
        n_atoms = trainer.train_set[k].n_atoms
        if w_e:
            pending_rows.append(row[None] * (w_e / n_atoms))
            pending_targets.append(torch.tensor([energies[k] / n_atoms * w_e], dtype=dtype))
        if w_f:
            pending_rows.append(force_rows * w_f)
            pending_targets.append(torch.as_tensor(forces[k][chosen[k]], dtype=dtype).reshape(-1) * w_f)
        bar.update(1)
        if sum(r.shape[0] for r in pending_rows) >= ROWS_PER_PRODUCT or k + 1 == n_frames:
            flush()
            state["done"] = k + 1
            if time.perf_counter() - last_save > CHECKPOINT_EVERY_S:
                _save_equations(trainer, state, t_start)
                last_save = time.perf_counter()
    bar.close()
    _save_equations(trainer, state, t_start)
    return _select_ridge(trainer, term, state, t_start)


def add_gram(gram: torch.Tensor, rows: torch.Tensor) -> None:
    """gram += rowsᵀ rows on its lower triangle only (`symmetric` completes it): BLAS's symmetric rank-k update
    does half the arithmetic of a matrix product, and AᵀA is most of a large basis's fit. Float64, CPU."""
    from scipy.linalg.blas import dsyrk

    # The Fortran view of the C-ordered gram is its transpose: the upper triangle there is our lower triangle.
    target = gram.numpy().T
    out = dsyrk(1.0, rows.numpy().T, beta=1.0, c=target, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, target):  # scipy copied (it should not for a Fortran-ordered float64 array)
        gram.copy_(torch.from_numpy(np.ascontiguousarray(out.T)))


def symmetric(gram: torch.Tensor) -> torch.Tensor:
    """The full normal matrix from the lower triangle `add_gram` fills."""
    return torch.tril(gram) + torch.tril(gram, -1).T


def _select_ridge(trainer, term, state, t_start) -> dict:
    """Solve for each λ of the model's ``ridge``; keep (and package) the weights with the lowest validation loss."""
    cfg = trainer.config
    gram, rhs = symmetric(state["gram"]), state["rhs"]
    scale = gram.diagonal().clone()
    scale[scale <= 0] = 1.0  # a feature no training atom has (an element pair never seen): its weight stays 0
    power = float(term.config.get("ridge_power", 0.0))
    if power:  # smoothness prior: rougher (higher-degree) features pay more, at the same mean strength
        shaped = scale * (1.0 + term.feature_degrees().repeat(len(term.elements))) ** power
        scale = shaped * (scale.mean() / shaped.mean())
    history, best = [], None
    ridges = sorted(term.config["ridge"])
    for lam in ridges:
        weights = _solve(gram + torch.diag(lam * scale), rhs)
        with torch.no_grad():
            term.weights.copy_(weights.reshape(term.weights.shape).to(term.weights))
        val = trainer.validate()
        row = {"ridge": lam, **{f"val_{k}": v for k, v in val.items() if k != "n_structures"},
               "time_s": round(state["elapsed"] + time.perf_counter() - t_start, 2)}
        history.append(row)
        if cfg.progress:
            print(f"ridge {lam:.0e}  val loss {val['loss']:.4g}  F MAE {val.get('forces_mae_meV_A', float('nan')):.2f} "
                  f"meV/Å  E MAE {val.get('energy_mae_meV', float('nan')):.2f} meV", file=sys.stderr)
        if not math.isfinite(val["loss"]):
            continue
        if best is None or val["loss"] < best[0]["val_loss"]:
            best = (row, weights)
    if best is None:
        raise FloatingPointError("the least-squares fit gave non-finite predictions for every ridge strength; "
                                 f"tried {ridges} (raise the model's ridge)")
    row, weights = best
    with torch.no_grad():
        term.weights.copy_(weights.reshape(term.weights.shape).to(term.weights))
    val = {k[4:]: v for k, v in row.items() if k.startswith("val_")}
    save_package(trainer.run_dir / "model.safetensors", trainer.model,
                 extra={"ridge": row["ridge"], "val": val, "run_config": trainer.resolved,
                        "total_charges_e": trainer.total_charges})
    trainer.history = history
    trainer._write_metrics()
    elapsed = state["elapsed"] + time.perf_counter() - t_start
    summary = {"stop_reason": "least squares", "epochs": 0, "time_s": elapsed, "best": row,
               "model": str(trainer.run_dir / "model.safetensors")}
    write_json(trainer.run_dir / "summary.json", summary, fsync=False)
    return summary


def _solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Cholesky when the regularised matrix is positive definite (it should be), else a least-squares solve."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) == 0:
        return torch.cholesky_solve(rhs[:, None], factor)[:, 0]
    return torch.linalg.lstsq(matrix, rhs[:, None]).solution[:, 0]


def _save_equations(trainer, state, t_start) -> None:
    from .trainer import _atomic_torch_save

    saved = dict(state, elapsed=state["elapsed"] + time.perf_counter() - t_start, fingerprint=trainer.fingerprint,
                 kind="least_squares")
    _atomic_torch_save(saved, trainer.checkpoint_path)


def _load_equations(trainer) -> dict | None:
    if not trainer.checkpoint_path.exists():
        return None
    state = trainer._read_checkpoint()  # refuses foreign or unreadable files with a clear error
    if state["fingerprint"] != trainer.fingerprint or state.get("kind") != "least_squares":
        raise ConfigError(f"{trainer.run_dir} holds a checkpoint of a different configuration; use another run "
                          f"directory (or delete {trainer.checkpoint_path}) to start afresh")
    n_cols = linear_term(trainer.model).weights.numel()
    if tuple(state["gram"].shape) != (n_cols, n_cols):
        raise ConfigError(f"{trainer.checkpoint_path} holds normal equations for {state['gram'].shape[0]} weights, "
                          f"the model has {n_cols}; delete it to fit afresh")
    # the equations are built on the CPU whatever train.device is (the fit runs there; a resume may change device)
    return {"done": int(state["done"]), "gram": state["gram"].cpu().contiguous(), "rhs": state["rhs"].cpu(),
            "elapsed": float(state["elapsed"])}
