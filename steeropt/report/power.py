"""Power: will a study's budget be able to tell apart the effects it is run to find?

    >>> plan = power_plan("studies/quickstart.yaml", effect=0.15)        # doctest: +SKIP
    >>> plan["rows"]    # per decision: samples behind it, 95% half-width, smallest clear difference, verdict

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
    got = {a: pooled_sd((t.user_attrs.get("prompt_scores") or {}).get(a) or [] for t in frozen) for a in axes}
    return {a: v for a, v in got.items() if v is not None}


def pilot_spread(spec, axes, lm=None) -> dict[str, tuple[float, int]]:
    """A short pilot on the model: the unsteered model and the middle of every strength range, on the trial
    prompts, scored with the study's objective stack; the sd pooled over the two settings."""
    from steeropt.runner.study import Study
    from steeropt.types import InterventionPlan

    import tempfile

    study = Study(spec, track=False, runs_dir=tempfile.mkdtemp(prefix="steeropt-plan-"))
    study.setup(lm=lm)
    try:
        space = study.space
        mid = {p.name: (p.choices[0] if p.choices else (p.low + p.high) / 2) for p in space.parameters()}
        plans = [InterventionPlan([], []), space.materialize(mid)]
        samples = study.generator.run(study.prompts, plans, study.decoding, seed=spec.seed)
        base = [s for s in samples if s.candidate == 0]
        res = study.stack.evaluate(samples, plans, baseline=base, vectors=study.vectors)
    finally:
        study.close()
    got = {a: pooled_sd([x["scores"].get(a) for x in r.samples] for r in res) for a in axes}
    return {a: v for a, v in got.items() if v is not None}


def _half_width(sd: float, n: int) -> float:
    return float(stats.t.ppf(0.975, max(n - 1, 1)) * sd / math.sqrt(max(n, 1)))


def _mde(sd: float, n: int) -> float:
    return float(Z_POWER * sd * math.sqrt(2.0 / max(n, 1)))


def power_plan(ref, *, effect: float = 0.15, sources=(), pilot: bool = False, lm=None) -> dict:
    """The table of module docstring for one study spec. `sources`: other study specs to take the spread from."""
    import optuna

    from steeropt.errors import SteeroptError
    from steeropt.specs import build

    spec = build("study", ref)
    objective = spec.part("objective")
    axes = list(objective.scores)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frozen, used = [], []
    for r in [ref, *sources]:
        s = build("study", r)
        try:
            st = optuna.load_study(study_name=s.name, storage=s.storage)
        except KeyError:
            if r is not ref:
                raise SteeroptError(f"--from {r}: no study '{s.name}' in {s.storage}") from None
            continue
        got = [t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and "prompt_scores" in t.user_attrs]
        if got:
            frozen += got
            used.append(f"{s.name} ({len(got)} trials)")
    spread = spread_from_trials(frozen, axes) if frozen and not pilot else {}
    source = "earlier trials: " + ", ".join(used) if spread else None
    if not spread:
        if not pilot:
            raise SteeroptError(f"no finished trials with per-prompt scores for '{spec.name}' (or --from): "
                                "run with --pilot to measure the spread on the model")
        spread = pilot_spread(spec, axes, lm=lm)
        source = "pilot: unsteered + mid-range strength on the trial prompts"
    n_fam = len(spec.prompts.families)
    ppt = spec.budget.prompts_per_trial
    splits = spec.splits()
    held = min(len(s.held_out) for s in splits.values())
    re = spec.budget.reevaluation
    decisions = [("trial value, one family", max(ppt // n_fam, 1)), ("trial value, all families", ppt)]
    if re is not None:
        fresh = min(len(s.selection) for s in splits.values()) - max(ppt // n_fam, 1)
        decisions.append(("re-evaluated point, one family", max(min(re.rounds * re.prompts, fresh), 1)))
    decisions += [("held-out check, one family (pick vs unsteered)", held),
                  ("controller comparison (compare, all trial prompts)", ppt)]
    rows, warnings = [], []
    for what, n in decisions:
        for a in axes:
            if a not in spread:
                continue
            sd = spread[a][0]
            row = {"decision": what, "axis": a, "n": n, "sd": sd, "half_width": _half_width(sd, n), "mde": _mde(sd, n)}
            row["ok"] = row["mde"] <= effect
            if not row["ok"]:
                need = math.ceil(2 * (Z_POWER * sd / effect) ** 2)
                row["need_n"] = need
                warnings.append(f"{what}: {a} differences below {row['mde']:.2f} cannot be told apart with {n} "
                                f"samples (sd {sd:.2f}); {need} samples would detect {effect:g}")
            rows.append(row)
    return {"study": spec.name, "effect": effect, "spread_source": source,
            "spread": {a: {"sd": v[0], "df": v[1]} for a, v in spread.items()}, "rows": rows, "warnings": warnings}
