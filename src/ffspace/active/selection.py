"""Selection: which explored frames to label, and why.

DP-GEN's trust levels (Zhang et al., Comput. Phys. Commun. 2020): below ``lower`` the committee agrees (the
frame is known, labeling it teaches little); between ``lower`` and ``upper`` it is a candidate; above
``upper`` the model is lost and the frame is likely unphysical. Candidates are taken by decreasing
deviation, at most ``per_trajectory`` per trajectory and ``min_separation`` recorded frames apart within
one, so a round's labels are spread over trajectories instead of all from one excursion.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


def select(records: list[dict], lower: float, upper: float, per_round: int, per_trajectory: int = 3,
           min_separation: int = 5, record_every: int = 1, strategy: str = "highest",
           seed: int = 0) -> tuple[list[dict], dict]:
    """(picked records, each with a ``reason``; counts of known / candidate / lost frames). Two picks of one
    trajectory are at least ``min_separation`` × ``record_every`` MD steps apart. ``strategy``: "highest"
    takes candidates by decreasing deviation; "random" in a seeded random order (DP-GEN's rule: any frame in
    the trust window is worth labeling, and the most uncertain ones are the most distorted)."""
    if strategy not in ("highest", "random"):
        raise ValueError(f"strategy must be 'highest' or 'random', got {strategy!r}")
    # A frame where a trajectory ended (lost, collapsed, non-finite) is never labeled: its geometry is the
    # model's invention. Frames before it are judged by their deviation like any other.
    usable = [r for r in records if r["stopped"] is None and r["deviation_eV_A"] is not None]
    known = [r for r in usable if r["deviation_eV_A"] < lower]
    candidates = [r for r in usable if lower <= r["deviation_eV_A"] <= upper]
    lost = [r for r in records if r["stopped"] is not None or r["deviation_eV_A"] is None
            or r["deviation_eV_A"] > upper]
    stats = {"recorded": len(records), "known": len(known), "candidates": len(candidates), "lost": len(lost),
             "trajectories": len({r["trajectory"] for r in records}),
             **{f"stopped_{why.replace('-', '_')}": sum(r["stopped"] == why for r in records)
                for why in ("uncertain", "collapsed", "non-finite")}}
    if strategy == "random":
        order = np.random.default_rng(seed).permutation(len(candidates))
        pool = [candidates[i] for i in order]
    else:
        pool = sorted(candidates, key=lambda r: -r["deviation_eV_A"])
    fallback = False
    if not pool and lost:
        # Every trajectory jumped past `upper` between two recorded frames: the last frame each lost
        # trajectory recorded below `upper` is the edge of what the model knows.
        pool, fallback = _last_known_before_loss(records, upper), True
    picked, per_traj, steps_of = [], Counter(), defaultdict(list)
    for r in pool:
        if len(picked) >= per_round:
            break
        t = r["trajectory"]
        if per_traj[t] >= per_trajectory:
            continue
        if any(abs(r["step"] - s) < min_separation * record_every for s in steps_of[t]):
            continue
        rank = len(picked) + 1
        reason = (f"last frame below the upper threshold ({upper} eV/Å) before trajectory {t} was lost"
                  if fallback else f"deviation {r['deviation_eV_A']:.3f} eV/Å in [{lower}, {upper}]: "
                  f"pick {rank} {'by decreasing deviation' if strategy == 'highest' else 'at random'} among "
                  f"{len(candidates)} candidates")
        picked.append({**r, "reason": reason})
        per_traj[t] += 1
        steps_of[t].append(r["step"])
    stats["picked"] = len(picked)
    stats["picked_trajectories"] = len(per_traj)
    return picked, stats


def _last_known_before_loss(records: list[dict], upper: float) -> list[dict]:
    by_traj = defaultdict(list)
    for r in records:
        by_traj[r["trajectory"]].append(r)
    out = []
    for rows in by_traj.values():
        if not any(r["stopped"] for r in rows):
            continue
        below = [r for r in rows if r["stopped"] is None and r["deviation_eV_A"] is not None
                 and r["deviation_eV_A"] <= upper]
        if below:
            out.append(max(below, key=lambda r: r["step"]))
    return sorted(out, key=lambda r: -r["deviation_eV_A"])
