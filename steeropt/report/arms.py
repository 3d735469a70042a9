"""Steered against the baselines (pure analysis, no model): paired differences between a steered setting and the
unsteered or prompted arm (runner.arms) on the prompts both were scored on.

    >>> paired_arm_difference([0.9, 0.8, 1.0], [0.2, 0.1, 0.4])["clear"]
    True
    >>> versus_arms(study_arms, frozen_trials, objectives, constraints)      # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np

from steeropt.evaluation.objectives.config import compare
from steeropt.records import TrialRecord
from steeropt.report.paired import expanded_interval

MARGIN = 0.01  # a difference is clear when its interval excludes 0 by more than this (as report.paired)


def paired_arm_difference(a: list, b: list, *, n_boot: int = 2000, seed: int = 0) -> dict | None:
    """mean(a − b) over the prompts scored in both (None entries dropped pairwise), with a bootstrap 95% interval
    over prompts widened for few prompts (report.paired.expanded_interval); clear when it excludes 0 by MARGIN."""
    pairs = np.array([(x, y) for x, y in zip(a, b) if x is not None and y is not None], float)
    if len(pairs) < 2:
        return None
    d = pairs[:, 0] - pairs[:, 1]
    rng = np.random.default_rng(seed)
    draws = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = expanded_interval(float(d.mean()), *np.percentile(draws, [2.5, 97.5]), len(d))
    return {"diff": float(d.mean()), "ci": [lo, hi], "n": int(len(d)), "clear": bool(lo > MARGIN or hi < -MARGIN)}


def _per_prompt(ps: dict, family: str, axis: str) -> dict[int, float]:
    """prompt index -> mean score of one family's samples (several per prompt when decoding samples)."""
    acc: dict[int, list] = {}
    for i, f, v in zip(ps["prompt"], ps["family"], ps.get(axis) or []):
        if f == family and i is not None and v is not None:
            acc.setdefault(i, []).append(v)
    return {i: sum(v) / len(v) for i, v in acc.items()}


def best_feasible(frozen, family: str, maximize: str, constraints) -> object | None:
    """The complete trial with the best family value of `maximize` among those meeting every constraint there."""
    best = None
    for t in frozen:
        vals = TrialRecord.from_trial(t).family_values(family) or {}
        if vals.get(maximize) is None or any(vals.get(n) is None or not compare(vals[n], op, v) for n, op, v in constraints):
            continue
        if best is None or vals[maximize] > best[1]:
            best = (t, vals[maximize])
    return None if best is None else best[0]


def versus_arms(arms: dict | None, frozen, maximize: str, constraints, axes) -> dict:
    """Per family: each arm's values, the best feasible trial's, and the paired trial − arm difference per axis over
    the family's trial prompts. {} when the study stored no arms."""
    if not arms:
        return {}
    families = sorted({f for a in arms.values() for f in (a.get("families") or {})})
    out = {}
    for fam in families:
        row = {name: {k: {"value": (a["families"][fam]["values"] or {}).get(k),
                          "ci": (a["families"][fam]["intervals"] or {}).get(k)} for k in axes}
               for name, a in arms.items() if fam in (a.get("families") or {})}
        t = best_feasible(frozen, fam, maximize, constraints)
        row["best_trial"] = None if t is None else t.number
        if t is not None:
            tps = TrialRecord.from_trial(t).prompt_scores or {}
            for name, a in arms.items():
                diffs = {}
                for k in axes:
                    mine, theirs = _per_prompt(tps, fam, k), _per_prompt(a.get("prompt_scores") or {}, fam, k)
                    shared = sorted(set(mine) & set(theirs))
                    diffs[k] = paired_arm_difference([mine[i] for i in shared], [theirs[i] for i in shared])
                row[f"trial_vs_{name}"] = diffs
        out[fam] = row
    return out
