"""Selection: which explored frames to label, and why.

DP-GEN's trust levels (Zhang et al., Comput. Phys. Commun. 2020): below ``lower`` the committee agrees (the
frame is known, labeling it teaches little); between ``lower`` and ``upper`` it is a candidate; above
``upper`` the model is lost and the frame is likely unphysical. Candidates are taken by decreasing
deviation, at most ``per_trajectory`` per trajectory and ``min_separation`` recorded frames apart within
one, so a round's labels are spread over trajectories instead of all from one excursion.

The "diverse" strategy also spreads them over geometry: it takes, one at a time, the candidate with the
largest deviation × distance to the nearest frame already labeled or picked (distance between inverse-distance
descriptors), a greedy batch rule in the spirit of farthest-point sampling weighted by uncertainty — several
frames of one uncertain region are worth about one label.

The "weighted" strategy draws candidates at random with probability ∝ deviation²: the explored frames stand for
where MD goes, the squared deviation for the error expected there, so the picks follow where the error is
expected in MD (density × variance) rather than its rare, most distorted tail, which "highest" takes. Measured
on aspirin (docs/benchmarks.md, one round replayed), it picked no better frames than random ones; "highest" did.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np


STRATEGIES = ("highest", "random", "diverse", "weighted")


def select(records: list[dict], lower: float, upper: float, per_round: int, per_trajectory: int = 3,
           min_separation: int = 5, record_every: int = 1, strategy: str = "highest",
           seed: int = 0, labeled: list | None = None, broken_first: bool = False) -> tuple[list[dict], dict]:
    """(picked records, each with a ``reason``; counts of known / candidate / lost frames). Two picks of one
    trajectory are at least ``min_separation`` × ``record_every`` MD steps apart. ``strategy``: "highest"
    takes candidates by decreasing deviation; "random" in a seeded random order (DP-GEN's rule: any frame in
    the trust window is worth labeling, and the most uncertain ones are the most distorted); "diverse" by
    deviation × descriptor distance to the nearest of ``labeled`` (structures already labeled) and the picks
    so far; "weighted" at random with probability ∝ deviation² (seeded). For "diverse" each record needs
    ``numbers`` (its atomic numbers): frames are compared only with frames of the same atoms in the same order.

    ``broken_first`` (the stability goal): the frames where a trajectory ended with a broken bond are taken
    before any candidate, whatever the committee's deviation there (the members may agree on a dissociation):
    a stretched bond is a real, if hot, geometry that the reference method labels, and its restoring force is
    the lesson the model is missing. Collapsed and non-finite frames stay out (their geometry is invention). A
    trajectory lost to the committee ("uncertain": a deviation past ``upper``) gives its last recorded frame below
    ``upper`` next: the edge of what the committee knows on the path that failed (round 1 of
    active_stability_3bpa lost one 1200 K copy 0.55 ps in, from a frame that "highest" did not rank)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    # A frame where a trajectory ended (lost, collapsed, non-finite) is never labeled: its geometry is the
    # model's invention. Frames before it are judged by their deviation like any other.
    usable = [r for r in records if r["stopped"] is None and r["deviation_eV_A"] is not None]
    known = [r for r in usable if r["deviation_eV_A"] < lower]
    candidates = [r for r in usable if lower <= r["deviation_eV_A"] <= upper]
    lost = [r for r in records if r["stopped"] is not None or r["deviation_eV_A"] is None
            or r["deviation_eV_A"] > upper]
    stats = {"recorded": len(records), "known": len(known), "candidates": len(candidates), "lost": len(lost),
             "trajectories": len({r["trajectory"] for r in records}),
             **{f"stopped_{why.replace('-', '_').replace(' ', '_')}": sum(r["stopped"] == why for r in records)
                for why in ("uncertain", "collapsed", "bond broken", "non-finite")}}
    fallback = False
    if candidates:
        pool = candidates
    elif lost:
        # Every trajectory jumped past `upper` between two recorded frames: the last frame each lost
        # trajectory recorded below `upper` is the edge of what the model knows.
        pool, fallback = _last_known_before_loss(records, upper), True
    else:
        pool = []
    if fallback or strategy == "highest":
        order = _FixedOrder(sorted(pool, key=lambda r: -r["deviation_eV_A"]))
    elif strategy == "random":
        order = _FixedOrder([pool[i] for i in np.random.default_rng(seed).permutation(len(pool))])
    elif strategy == "weighted":
        order = _FixedOrder(_weighted_order(pool, seed))
    else:
        order = _DiverseOrder(pool, labeled or [])
    picked, per_traj, steps_of = [], Counter(), defaultdict(list)

    def allowed(r):
        t = r["trajectory"]
        # a frame already picked is out even at min_separation 0 (an edge frame may also be a candidate)
        return per_traj[t] < per_trajectory and not any(s == r["step"] or abs(r["step"] - s) < min_separation
                                                        * record_every for s in steps_of[t])

    broken = [r for r in records if r["stopped"] == "bond broken"] if broken_first else []
    for r in sorted(broken, key=lambda r: r["time_ps"] if "time_ps" in r else r["step"])[:per_round]:
        f = r.get("failure", {})
        bond = (f"{f['elements']} bond {f['atoms'][0]}–{f['atoms'][1]} {f['reason']} to {f['length_A']:.2f} Å "
                f"(start {f['start_length_A']:.2f} Å)" if "atoms" in f else "a bond broke")
        picked.append({**r, "kind": "broken", "reason": f"trajectory {r['trajectory']} ended here: {bond}"})
        per_traj[r["trajectory"]] += 1
        steps_of[r["trajectory"]].append(r["step"])
    uncertain = {r["trajectory"]: r for r in records if r["stopped"] == "uncertain"} if broken_first else {}
    edges = _last_known_before_loss([r for r in records if r["trajectory"] in uncertain], upper)
    for r in sorted(edges, key=lambda r: r["time_ps"] if "time_ps" in r else r["step"]):
        if len(picked) >= per_round or not allowed(r):
            continue
        lost_at = uncertain[r["trajectory"]]
        picked.append({**r, "kind": "before_loss",
                       "reason": f"last frame below {upper} eV/Å before trajectory {r['trajectory']} was lost "
                                      f"(deviation {lost_at['deviation_eV_A']:.2f} eV/Å at step {lost_at['step']})"})
        per_traj[r["trajectory"]] += 1
        steps_of[r["trajectory"]].append(r["step"])

    while len(picked) < per_round:
        r = order.next(allowed)
        if r is None:
            break
        t = r["trajectory"]
        rank = len(picked) + 1
        how = {"highest": "by decreasing deviation", "random": "at random",
               "weighted": "at random, with probability ∝ deviation²",
               "diverse": "by deviation × distance to the nearest labeled or picked frame (" + (
                   "none of these atoms yet" if r.get("distance_1_A") is None else f"{r['distance_1_A']:.4f} 1/Å")
                   + ")"}[strategy]
        reason = (f"last frame below the upper threshold ({upper} eV/Å) before trajectory {t} was lost"
                  if fallback else f"deviation {r['deviation_eV_A']:.3f} eV/Å in [{lower}, {upper}]: "
                  f"pick {rank} {how} among {len(candidates)} candidates")
        picked.append({**r, "kind": "fallback" if fallback else "candidate", "reason": reason})
        per_traj[t] += 1
        steps_of[t].append(r["step"])
    return picked, {**stats, **pick_counts(picked)}


def pick_counts(picked: list[dict]) -> dict:
    """How many picks, of which kind, over how many trajectories. Picks written before they carried a ``kind``
    were bond-broken frames or candidates (the rule then)."""
    kind = [p.get("kind", "broken" if p.get("stopped") == "bond broken" else "candidate") for p in picked]
    return {"picked": len(picked), "picked_broken": kind.count("broken"),
            "picked_before_loss": kind.count("before_loss"),
            "picked_trajectories": len({p["trajectory"] for p in picked})}


def _weighted_order(pool: list[dict], seed: int) -> list[dict]:
    """``pool`` in the order of a weighted draw without replacement, weight = deviation² (Efraimidis & Spirakis,
    Inf. Process. Lett. 97, 181 (2006): sort by u^(1/w), u uniform in (0, 1))."""
    w = np.array([r["deviation_eV_A"] for r in pool], dtype=float) ** 2
    u = np.random.default_rng(seed).random(len(pool))
    # log(u^(1/w)) = log(u) / w orders the same and stays finite for tiny weights; u = 0 or a zero deviation
    # gives -inf: drawn last.
    with np.errstate(divide="ignore"):
        keys = np.where(w > 0, np.log(u) / np.where(w > 0, w, 1.0), -np.inf)
    return [pool[i] for i in np.argsort(-keys, kind="stable")]


class _FixedOrder:
    """Candidates in a fixed order; ``next`` gives the first one still allowed (each at most once)."""

    def __init__(self, pool: list[dict]):
        self.pool, self.i = pool, 0

    def next(self, allowed):
        while self.i < len(self.pool):
            r = self.pool[self.i]
            self.i += 1
            if allowed(r):
                return r
        return None


def inverse_distances(positions: np.ndarray) -> np.ndarray:
    """Every atom pair's inverse distance (1/Å): an invariant descriptor of a molecule's geometry, most
    sensitive to the short distances that dominate forces."""
    i, j = np.triu_indices(len(positions), 1)
    return 1.0 / np.linalg.norm(positions[i] - positions[j], axis=-1)


class _DiverseOrder:
    """Greedy batch order: the allowed candidate with the largest deviation × RMS descriptor distance to the
    nearest labeled or already picked frame of the same atoms. A candidate with no such frame counts as
    infinitely far, so it ranks by deviation among its kind."""

    def __init__(self, pool: list[dict], labeled: list):
        self.pool = pool
        self.dev = np.array([r["deviation_eV_A"] for r in pool], dtype=float)
        self.nearest = np.full(len(pool), np.inf)
        self.taken = np.zeros(len(pool), dtype=bool)
        self.key_of = [np.asarray(r["numbers"]).tobytes() for r in pool]
        self.desc = [inverse_distances(np.asarray(r["positions"])) for r in pool]
        groups = defaultdict(list)
        for k, key in enumerate(self.key_of):
            groups[key].append(k)
        self.groups = {key: (np.array(idx), np.stack([self.desc[k] for k in idx])) for key, idx in groups.items()}
        for s in labeled:
            self._update(np.asarray(s.numbers).tobytes(), inverse_distances(s.positions))

    def _update(self, key: bytes, desc: np.ndarray) -> None:
        if key in self.groups:
            idx, matrix = self.groups[key]
            self.nearest[idx] = np.minimum(self.nearest[idx], np.sqrt(np.mean((matrix - desc) ** 2, axis=1)))

    def next(self, allowed):
        # inf × deviation would tie: candidates with nothing to compare with rank by deviation among themselves.
        score = np.where(np.isinf(self.nearest), np.inf, self.dev * self.nearest)
        for k in np.lexsort((-self.dev, -score)):
            if self.taken[k] or not allowed(self.pool[k]):
                continue
            self.taken[k] = True
            distance = float(self.nearest[k])
            self._update(self.key_of[k], self.desc[k])
            return {**self.pool[k], "distance_1_A": None if np.isinf(distance) else distance}
        return None


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
