"""What `steeropt status` says about a study, gathered from its storage as plain data (no model load).

The command prints a `StudyStatus`; tests read it without a terminal. It names the objectives and the
constraints, counts the infeasible trials by the first constraint each one fails, says whether the
re-evaluation on fresh prompts ran, what the hypervolume is relative to, and which command comes next.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from steeropt.report.analysis import complete_rows, first_violation, hypervolume_by_trial, is_false, pareto_front
from steeropt.report.pareto import objective_reference, unit_scores
from steeropt.records import REEVALUATION_KEY, ReevalRecord

OPS = {">=": "≥", "<=": "≤"}


@dataclass
class StudyStatus:
    objectives: list  # (name, direction)
    constraints: list  # (name, op, τ)
    complete: int = 0
    infeasible: dict = field(default_factory=dict)  # "relevance < 0.6" -> trial count
    failed: dict = field(default_factory=dict)  # failure reason -> trial count
    reevaluation: str = ""  # one sentence: ran (what), not yet, or not configured
    hypervolume: float | None = None
    reference: list | None = None
    front: pd.DataFrame | None = None
    labels: dict = field(default_factory=dict)  # parameter name -> display name
    next_steps: list = field(default_factory=list)  # (command, why)

    def objective_text(self) -> str:
        names = [f"{n} (= fluency)" if n == "coherency" else n for n, _ in self.objectives]
        verb = "maximise" if all(d == "maximize" for _, d in self.objectives) else "optimise"
        return f"{verb} {' and '.join(names)}"

    def constraint_text(self) -> str:
        return ", ".join(f"{n} {OPS.get(op, op)} {v:g}" for n, op, v in self.constraints) or "none"

    def infeasible_text(self) -> str:
        n = sum(self.infeasible.values())
        if not self.complete:
            return "no complete trial yet"
        why = "; ".join(f"{w} ({k})" for w, k in self.infeasible.items())
        return f"{n} of {self.complete} complete trials" + (f": {why}" if why else "")

    def hypervolume_text(self) -> str:
        if self.hypervolume is None:
            return "— (no complete trial yet)"
        ref = ", ".join(f"{r:g}" for r in self.reference or [])
        return (f"{self.hypervolume:.3f}: the area the front dominates above the reference point ({ref}), the "
                "worst end of each score; 0 = no feasible trial, 1 = the best possible")


def study_status(st, optuna_study, df: pd.DataFrame, *, spec_ref: str, done: int) -> StudyStatus:
    """Gather the status of study spec `st` from its Optuna study and trials frame (runner.study.trials_frame).
    `spec_ref` is how the user named the study (for the next commands); `done` the trials the budget counts."""
    objective = st.part("objective")
    objectives = objective.directions
    s = StudyStatus(objectives, [(c.name, c.op, c.value) for c in objective.constraints])
    s.labels = st.part("search_space").labels()
    complete = complete_rows(df, objectives)
    s.complete = len(complete)
    for _, r in complete.iterrows():
        why = first_violation(r, s.constraints)
        if why is None and "feasible" in r and is_false(r["feasible"]):
            why = "a constraint"
        if why:
            s.infeasible[why] = s.infeasible.get(why, 0) + 1
    s.infeasible = dict(sorted(s.infeasible.items(), key=lambda kv: -kv[1]))
    if "failed_reason" in df:
        for why in df.loc[df["state"] == "FAIL", "failed_reason"]:
            key = str(why or "no reason recorded").split(":")[0]
            s.failed[key] = s.failed.get(key, 0) + 1
    if not complete.empty:
        s.reference = objective_reference(objectives, unit=unit_scores(objective),
                                          points=complete[[n for n, _ in objectives]].to_numpy(float))
        curve = hypervolume_by_trial(df, objectives, s.reference)
        s.hypervolume = curve[-1][1] if curve else 0.0
        s.front = pareto_front(df, objectives)
    stored = optuna_study.user_attrs.get(REEVALUATION_KEY)
    record = ReevalRecord.from_dict(stored) if stored else None
    cfg = st.budget.reevaluation
    left = max(st.budget.trials - done, 0)
    if record:
        s.reevaluation = (f"ran: {len(record.candidates)} candidates, {record.rounds} round(s), "
                          f"{record.spent_samples} samples on fresh selection prompts")
    elif cfg is None:
        s.reevaluation = "not configured (budget.reevaluation): pick will report the trials' own values"
    else:
        s.reevaluation = (f"not run yet: it runs after the last trial ({cfg.prompts} fresh prompts per family "
                          f"and round, up to {cfg.rounds} rounds)")
    if left:
        s.next_steps.append((f"steeropt run {spec_ref}", f"{left} of {st.budget.trials} trials left"))
    elif cfg is not None and not record:
        s.next_steps.append((f"steeropt run {spec_ref}", "the budget is spent: this runs the re-evaluation"))
    if not left:
        s.next_steps.append((f"steeropt pick {spec_ref}", "an α per family, checked on held-out prompts"))
    if s.complete and sum(s.infeasible.values()) == s.complete:
        worst = next(iter(s.infeasible))
        layer = next((site.layer for site in st.part("search_space").sites), None)
        where = f" --layer {layer}" if layer is not None else ""
        s.next_steps.append((f"steeropt sweep --concept {st.concept.name}{where}",
                             f"every trial is infeasible (mostly {worst}): see where the text breaks, then "
                             "narrow the α range or try another layer"))
    return s
