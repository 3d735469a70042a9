"""`steeropt plan`: will a study's budget tell apart the effects it is run to find? (report.power has the maths.)

    >>> plan = power_plan("studies/quickstart.yaml", effect=0.15)        # doctest: +SKIP
    >>> plan["rows"]    # per decision: samples behind it, 95% half-width, smallest clear difference, verdict

The per-sample spread of each axis is measured, not assumed: from studies already run with the same objective
(their trials' stored per-prompt scores: the study itself when it has trials, or `--from` others), or from a
short pilot on the model (the unsteered model and the middle of every strength range on the trial prompts,
scored by the study's harness).
"""
from __future__ import annotations

from steeropt.errors import SteeroptError
from steeropt.records import TrialRecord
from steeropt.report.power import decisions, pooled_sd, power_rows, spread_from_trials
from steeropt.runner.harness import Harness
from steeropt.specs import build
from steeropt.types import InterventionPlan


def pilot_spread(spec, axes, lm=None) -> dict[str, tuple[float, int]]:
    """A short pilot on the model: the unsteered model and the middle of every strength range, on the trial
    prompts, scored with the study's objective stack; the sd pooled over the two settings."""
    harness = Harness(spec).load(lm)
    try:
        space = harness.space
        mid = {p.name: (p.choices[0] if p.choices else (p.low + p.high) / 2) for p in space.parameters()}
        # both as named plans, unsteered first: one generate call, as the pilot has always made it
        scored = harness.score(harness.prompts, [], {"unsteered": InterventionPlan([], []), "mid": space.materialize(mid)},
                               seed=spec.seed)
    finally:
        harness.close()
    got = {a: pooled_sd([x["scores"].get(a) for x in r.samples] for r in scored.arms.values()) for a in axes}
    return {a: v for a, v in got.items() if v is not None}


def power_plan(ref, *, effect: float = 0.15, sources=(), pilot: bool = False, lm=None) -> dict:
    """The table of report.power for one study spec. `sources`: other study specs to take the spread from."""
    import optuna  # heavy optional dependency (imported when a plan is made)

    spec = build("study", ref)
    axes = list(spec.part("objective").scores)
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
        got = [t for t in st.get_trials(deepcopy=False)
               if t.state.name == "COMPLETE" and TrialRecord.from_trial(t).prompt_scores is not None]
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
    rows, warnings = power_rows(decisions(spec), spread, effect)
    return {"study": spec.name, "effect": effect, "spread_source": source,
            "spread": {a: {"sd": v[0], "df": v[1]} for a, v in spread.items()}, "rows": rows, "warnings": warnings}
