"""Committees: several models of one family, trained from different seeds and data subsamples; their mean is
the prediction and their disagreement the uncertainty.

The force deviation of atom i is DeePMD-kit's model deviation (Zhang et al., DP-GEN, Comput. Phys. Commun.
2020): σ_i = sqrt( (1/M) Σ_m |F_i^m − F̄_i|² ) in eV/Å, with F̄_i the committee mean. A structure's
uncertainty is its largest σ_i: one atom in an unknown environment is enough to make a prediction
untrustworthy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from ..data.digest import update_with_structures
from ..errors import DataError
from ..outputs import claim_folder, read_owner
from ..potential import Potential
from ..potential.potential import predict_arrays, unseen_charge
from ..potential.package import load_package


class Committee:
    """M ≥ 2 `Potential`s used as one: ``compute`` has a `Potential`'s interface (so MD, the batched copies and
    the evaluation code take a committee where they take a potential) and adds per-atom ``force_deviation``
    (eV/Å) and per-structure ``energy_deviation`` (the members' standard deviation, eV).

    After each ``compute`` the largest atomic force deviation of the batch is in ``last_max_deviation``; the
    MD uncertainty monitor reads it.
    """

    def __init__(self, potentials):
        self.members = list(potentials)
        if len(self.members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(self.members)}")
        first = self.members[0]
        for k, p in enumerate(self.members[1:], 1):
            if (p.dtype, p.device, p.cutoff) != (first.dtype, first.device, first.cutoff):
                raise ValueError(f"committee member {k} differs from member 0 in dtype, device or cutoff "
                                 f"({p.dtype}, {p.device}, {p.cutoff} Å against {first.dtype}, {first.device}, "
                                 f"{first.cutoff} Å): members share one neighbour graph")
        self.dtype, self.device, self.cutoff = first.dtype, first.device, first.cutoff
        self.elements = sorted(set.intersection(*(set(p.elements) for p in self.members)))
        self.last_max_deviation: float | None = None

    @classmethod
    def load(cls, paths, dtype: torch.dtype = torch.float32, device="cpu") -> "Committee":
        """A committee from model packages (safetensors + JSON; no code is executed)."""
        # (Potential.load: each member keeps its package's record of the charges it was trained on)
        return cls([Potential.load(p, dtype=dtype, device=device) for p in paths])

    def __len__(self) -> int:
        return len(self.members)

    def check_elements(self, structures) -> None:
        for p in self.members:
            p.check_elements(structures)

    def check_charges(self, structures) -> None:
        """`Potential.check_charges` for MD driven by the committee, against the charges any member saw: each
        member records only its own subsample of the training set, and the committee saw their union."""
        if any(p.trained_charges is None for p in self.members):
            return  # a member without a record (an older package): not known, no check, as for one model
        union = sorted({q for p in self.members for q in p.trained_charges})
        reads = all(getattr(p.model, "reads_total_charge", False) for p in self.members)
        for s in structures:
            problem = unseen_charge(float(s.info.get("charge", 0.0)), union, reads)
            if problem:
                raise DataError(problem, file=s.source, frame=s.frame, field="charge")

    def compute(self, batch, forces: bool = True, stress: bool = False, training: bool = False) -> dict:
        if training:
            raise ValueError("a committee is for prediction; train its members one by one")
        outs = [p.compute(batch, forces=True, stress=stress) for p in self.members]
        f = torch.stack([o["forces"] for o in outs])  # (M, N, 3)
        e = torch.stack([o["energy"] for o in outs])  # (M, G) float64
        mean_f = f.mean(0)
        deviation = ((f - mean_f) ** 2).sum(-1).mean(0).sqrt()  # (N,) eV/Å
        self.last_max_deviation = float(deviation.max()) if deviation.numel() else 0.0
        out = {"energy": e.mean(0), "energies": torch.stack([o["energies"] for o in outs]).mean(0),
               "energy_deviation": e.std(0, unbiased=False), "force_deviation": deviation}
        if forces:
            out["forces"] = mean_f
        if stress:
            out["stress"] = torch.stack([o["stress"] for o in outs]).mean(0)
        return out

    def predict(self, structures, batch_size: int = 32) -> dict:
        """Mean energies (G,) and forces (N_total, 3), per-atom ``force_deviation`` (N_total,), per-structure
        ``max_force_deviation`` (G,) and ``energy_deviation`` (G,), float64 numpy (eV, eV/Å)."""
        structures = list(structures)
        pred = predict_arrays(self, structures, ("energy", "forces", "force_deviation", "energy_deviation"),
                              batch_size)
        cuts = np.cumsum([s.n_atoms for s in structures])[:-1]
        pred["max_force_deviation"] = np.array([d.max() for d in np.split(pred["force_deviation"], cuts)])
        return pred


def train_committee(train_set, val_set, model_config: dict, train_config, run_dir, members: int = 4,
                    subsample: float = 0.8, seed: int = 0, warm_start=None, workers: int = 1,
                    warm_minutes: float | None = None, warm_lr: float | None = None,
                    warm_keep: str = "last") -> list[Path]:
    """Train ``members`` models, each from its own seed on its own random ``subsample`` of ``train_set``
    (without replacement; 1.0 uses all of it), and return their package paths ``run_dir/member_<k>/model.safetensors``.

    ``warm_start``: packages to start member k from (the previous round's committee); otherwise each member
    is built fresh for the data; ``warm_minutes`` replaces the training budget of a warm-started member (a
    fine-tuning needs a fraction of a training from scratch), ``warm_lr`` its peak learning rate and ``warm_keep``
    which weights it keeps (`TrainConfig.keep`: its last epoch's by default, since the validation set is mostly
    the start frames and a fine-tuning that learns the explored frames scores a little worse there). Every member
    trains with `Trainer` in its own folder, so a killed committee resumes where it stopped. A finished member is
    not trained again unless its data, settings or start weights changed (its ``fingerprint`` file says what it
    trains on): then it is retrained from scratch.

    ``workers`` > 1 trains that many members at once, each in its own process with an equal share of this
    process's CPU threads (at least one). Small molecules leave a second thread nearly idle inside one
    model's step (a 21-atom batch is too small to split), so members side by side keep every core busy.
    Each member is the one trained in turn with the same thread count, to the bit.
    """
    from ..train import build_model_for_data

    if not 0 < subsample <= 1:
        raise ValueError(f"subsample must be in (0, 1], got {subsample}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if warm_keep not in ("best", "last"):
        raise ValueError(f"warm_keep must be 'best' or 'last', got {warm_keep!r}")
    run_dir = Path(run_dir)
    if warm_start is not None and warm_minutes is not None:
        train_config = train_config.model_copy(update={"max_time_min": float(warm_minutes)})
    if warm_start is not None and warm_lr is not None:
        train_config = train_config.model_copy(update={"lr": float(warm_lr)})
    if warm_start is not None:
        train_config = train_config.model_copy(update={"keep": warm_keep})
    paths, pending = [], []
    for k in range(members):
        folder = run_dir / f"member_{k}"
        package = folder / "model.safetensors"
        paths.append(package)
        rng = np.random.default_rng([seed, k])
        n = max(1, int(round(subsample * len(train_set))))
        subset = train_set[np.sort(rng.choice(len(train_set), n, replace=False)).tolist()]
        key = _fingerprint(subset, val_set, model_config, train_config, seed * 1000 + k,
                           warm_start[k] if warm_start is not None else None)
        done = folder / "done"
        if folder.exists() and (read_owner(folder) or {}).get("key") != key:
            print(f"[committee] member {k}: data, settings or start weights differ from what {folder} was trained "
                  "on; training it again from scratch", file=sys.stderr)
            shutil.rmtree(folder)
        if done.exists() and package.exists():
            continue
        claim_folder(folder, key, what="committee member folder")
        if warm_start is not None:
            model, _ = load_package(warm_start[k], dtype=train_config.dtype)
        else:
            model = build_model_for_data(model_config, subset, seed=seed * 1000 + k)
        cfg = train_config.model_copy(update={"seed": seed * 1000 + k})
        print(f"[committee] member {k + 1}/{members}: {len(subset)} structures"
              + (" (warm start)" if warm_start is not None else ""), file=sys.stderr)
        pending.append((folder, model, subset, cfg))
    if workers == 1 or len(pending) < 2:
        for folder, model, subset, cfg in pending:
            _train_member(folder, model, subset, val_set, cfg)
    else:
        from .member_worker import train_in_processes
        train_in_processes([(folder, model, subset, val_set, cfg) for folder, model, subset, cfg in pending],
                           workers)
    return paths


def _train_member(folder: Path, model, subset, val_set, cfg) -> None:
    from ..train import Trainer

    # The committee claimed the folder under its member key (`train_committee`); the trainer writes there as that.
    Trainer(model, subset, val_set, cfg, run_dir=folder, owner=read_owner(folder)["key"]).fit()
    (folder / "done").write_text("trained\n")


def _fingerprint(train_set, val_set, model_config: dict, train_config, seed: int, warm_start) -> str:
    h = hashlib.sha256(json.dumps({"model": model_config, "train": train_config.identity(exclude={"progress"}),
                                   "seed": seed}, sort_keys=True, default=str).encode())
    update_with_structures(h, train_set, val_set)
    if warm_start is not None:
        h.update(Path(warm_start).read_bytes())
    return h.hexdigest()
