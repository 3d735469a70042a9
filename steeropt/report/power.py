"""Power: will a study's budget be able to tell apart the effects it is run to find?

    >>> power_rows(decisions(spec), {"concept": (0.3, 40)}, effect=0.15)[0]     # doctest: +SKIP
    >>> # per decision: samples behind it, 95% half-width, smallest clear difference, verdict

The maths, no model; runner.power.power_plan gathers the spread (earlier trials or a pilot) and calls it.

A decision rests on means of per-sample scores, so its precision follows from two numbers: the per-sample
spread of each axis (the standard deviation of the scores of one setting across prompts) and how many samples
the budget puts behind each mean. The spread is measured, not assumed: from studies already run with the same
objective (their trials' stored per-prompt scores: the study itself when it has trials, or `--from` others), or
from a short pilot on the model (the unsteered model and the middle of every strength range on the trial
prompts). Then, with n samples behind a mean:
- 95% half-width of a mean ≈ t(0.975, n−1) · sd / √n;
- the smallest difference between two settings that the budget detects at 95% with 80% power
  (minimum detectable effect, two independent means) ≈ (z0.975 + z0.8) · sd · √(2 / n); pairing on the same
  prompts only helps, so this is an upper bound for `compare`.
The decisions: a trial's value per family (prompts_per_trial / families samples), a trial's pooled value, a
re-evaluated point per family (rounds × prompts), the held-out check per family (the family's held-out prompts,
× repeats) against the unsteered model, and a controller comparison (every trial prompt).
A decision whose minimum detectable effect is larger than `effect` gets a warning with the budget that would
bring it under (n ≈ ((z0.975 + z0.8) · sd / effect)² · 2).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from steeropt.records import TrialRecord

Z_POWER = stats.norm.ppf(0.975) + stats.norm.ppf(0.80)


def pooled_sd(groups) -> tuple[float, int] | None:
    """(pooled within-group sd, degrees of freedom) of groups of per-sample values (None values skipped)."""
    ss, df = 0.0, 0
    for g in groups:
        xs = np.array([v for v in g if v is not None], float)
        if xs.size >= 2:
            ss += float(((xs - xs.mean()) ** 2).sum())
            df += xs.size - 1
    return (math.sqrt(ss / df), df) if df else None


def spread_from_trials(frozen, axes) -> dict[str, tuple[float, int]]:
    """axis -> (pooled within-trial sd of the per-sample scores, degrees of freedom) from stored prompt_scores."""
    scores = [TrialRecord.from_trial(t).prompt_scores or {} for t in frozen]
    got = {a: pooled_sd(ps.get(a) or [] for ps in scores) for a in axes}
    return {a: v for a, v in got.items() if v is not None}


def half_width(sd: float, n: int) -> float:
    return float(stats.t.ppf(0.975, max(n - 1, 1)) * sd / math.sqrt(max(n, 1)))


def mde(sd: float, n: int) -> float:
    return float(Z_POWER * sd * math.sqrt(2.0 / max(n, 1)))


def decisions(spec) -> list[tuple[str, int]]:
    """(decision, samples behind it) for a study spec's budget (module docstring)."""
    n_fam = len(spec.prompts.families)
    ppt = spec.budget.prompts_per_trial
    splits = spec.splits()
    held = min(len(s.held_out) for s in splits.values())
    re = spec.budget.reevaluation
    out = [("trial value, one family", max(ppt // n_fam, 1)), ("trial value, all families", ppt)]
    if re is not None:
        fresh = min(len(s.selection) for s in splits.values()) - max(ppt // n_fam, 1)
        out.append(("re-evaluated point, one family", max(min(re.rounds * re.prompts, fresh), 1)))
    out += [("held-out check, one family (pick vs unsteered)", held),
            ("controller comparison (compare, all trial prompts)", ppt)]
    return out


def power_rows(decided, spread: dict, effect: float) -> tuple[list[dict], list[str]]:
    """(rows, warnings): per decision and axis, the 95% half-width and the minimum detectable effect."""
    rows, warnings = [], []
    for what, n in decided:
        for a, (sd, _) in spread.items():
            row = {"decision": what, "axis": a, "n": n, "sd": sd, "half_width": half_width(sd, n), "mde": mde(sd, n)}
            row["ok"] = row["mde"] <= effect
            if not row["ok"]:
                need = math.ceil(2 * (Z_POWER * sd / effect) ** 2)
                row["need_n"] = need
                warnings.append(f"{what}: {a} differences below {row['mde']:.2f} cannot be told apart with {n} "
                                f"samples (sd {sd:.2f}); {need} samples would detect {effect:g}")
            rows.append(row)
    return rows, warnings
