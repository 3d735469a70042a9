"""Re-evaluation before a claim: the points that will be reported, scored again on fresh selection prompts.

    >>> record = reevaluate(study)       # after the trials; study = a set-up runner.study.Study   # doctest: +SKIP
    >>> record.candidates[0].values["concept"], record.candidates[0].settled, record.spent_samples

Every trial is scored on the same few selection prompts, and the best of many noisy points is lucky on them
(the winner's curse). So before `pick` or the study summary reports a point, it is evaluated again on
selection prompts *no trial used* (specs.prompts.fresh_prompts; held-out prompts are never touched), as the
Eiffel Tower study does for its incumbents. The reported values of a re-evaluated point are its fresh-prompt
values alone: they were not used to find it.

Who is re-evaluated: the feasible Pareto front (scored on every family) and, per family, the setting pick
would choose plus its runner-up (fitted curves, best trial: report.pick.select), scored on that family.
At most `max_candidates`, front members first by hypervolume contribution order, then the family choices.

Racing (successive halving): every round gives each live candidate `prompts` fresh prompts of each family
it is scored on, all candidates × prompts in one batched generate call per family with the unsteered
model beside them (the quality tier scores text against the model's own answers). After a round a
candidate's question is settled when the pooled 95% intervals decide it: a constraint interval wholly above
or below τ (feasible or not), and for a family's candidates a concept interval wholly below the family's
best feasible one (beaten). Unsettled candidates go on, at most ceil(keep × live) of them, until `rounds`
rounds or the fresh prompts are spent. The record (records.ReevalRecord, study user attr `steeropt.reevaluation`)
holds every candidate's pooled values, intervals, per-family values, rounds and why it stopped (`settled`).
"""
from __future__ import annotations

import math
import time

from steeropt.evaluation.objectives.aggregate import mean, mean_ci
from steeropt.evaluation.objectives.axes import coherency_name, concept_name
from steeropt.evaluation.objectives.config import compare
from steeropt.evaluation.objectives.stack import RATE_METRICS, sample_value
from steeropt.records import REEVALUATION_KEY, FamilyValues, ReevalCandidate, ReevalRecord, Settled
from steeropt.report.analysis import pareto_front
from steeropt.report.pick_result import DEFAULT_CONCEPT_TARGET
from steeropt.report.pick import choose, family_candidates, select
from steeropt.specs.prompts import fresh_prompts
from steeropt.types import InterventionPlan


def plan_candidates(study, trials) -> list[ReevalCandidate]:
    """The points to re-evaluate, with the families each is scored on and why it is chosen (module docstring)."""
    spec, space = study.spec, study.space
    objs = list(study.stack.objectives)
    maximize, coherency = concept_name(objs), coherency_name(objs)
    cons = [c for c in study.objective.constraints if c.name == coherency and c.op == ">="]
    tau = cons[0].value if cons else 0.5
    families = list(spec.splits())
    out: dict[str, ReevalCandidate] = {}

    def add(params, scope, source, trial=None):
        key = repr(sorted((k, round(v, 6) if isinstance(v, float) else v) for k, v in params.items()))
        c = out.setdefault(key, ReevalCandidate(dict(params), trial))
        c.scope = sorted(set(c.scope) | set(scope), key=families.index)
        c.sources.append(source)
        c.trial = c.trial if c.trial is not None else trial

    front = pareto_front(study.results(), objs)
    by_number = {t.number: t for t in trials}
    for n in front["number"] if not front.empty else []:
        add(by_number[int(n)].params, families, "front", int(n))
    sel = select(spec, trials, maximize=maximize, coherency=coherency, min_coherency=tau, share=0.9,
                 concept_target=DEFAULT_CONCEPT_TARGET, families=families)  # the same fits pick makes
    others = tuple((c.name, c.op, c.value) for c in study.objective.constraints if c.name not in (coherency, maximize))
    for fam, p in sel.families.items():
        if p.chosen is not None:
            add(p.chosen.params, [fam], f"pick:{fam}", p.chosen.trial)
        runner_up = choose(family_candidates(trials, fam, maximize, coherency, space), tau, 0.9, others)
        if runner_up.chosen is not None:
            add(runner_up.chosen.params, [fam], f"best-trial:{fam}", runner_up.chosen.trial)
    cap = spec.budget.reevaluation.max_candidates
    ranked = sorted(out.values(), key=lambda c: (0 if any(s.startswith("pick:") for s in c.sources) else 1,
                                                 0 if "front" in c.sources else 1))
    return ranked[:cap]


def reevaluate(study, *, callback=None) -> ReevalRecord:
    """Race the candidates on fresh selection prompts; store and return the record (module docstring)."""
    spec, harness = study.spec, study.harness
    cfg = spec.budget.reevaluation
    opt_study = study.optimizer.study
    trials = [t for t in opt_study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    objs = list(study.stack.objectives)
    maximize = concept_name(objs)
    constraints = [(c.name, c.op, c.value) for c in study.objective.constraints]
    cands = plan_candidates(study, trials)
    wanted = {*study.objective.scores, "hm", "kl", *(n for n, _ in objs), *(n for n, _, _ in constraints)}
    pools = {f: list(ps) for f, ps in fresh_prompts(spec).items()}
    record = ReevalRecord(len(trials), cfg.model_dump(), cands, fresh_prompts_left={f: len(p) for f, p in pools.items()})
    started = time.time()
    live = list(cands)
    unsteered = ReevalCandidate({})
    study.progress.reeval_target = sum(len(c.scope) for c in cands) * cfg.prompts * cfg.rounds
    for rnd in range(cfg.rounds):
        if not live:
            break
        took_any = False
        for fam in pools:
            members = [c for c in live if fam in c.scope]
            batch = [pools[fam].pop(0) for _ in range(min(cfg.prompts, len(pools[fam])))] if members else []
            if not batch:
                if members:
                    record.notes.append(f"round {rnd + 1}: no fresh selection prompt of {fam} left")
                continue
            took_any = True
            record.prompts.setdefault(fam, []).extend(batch)
            scored = harness.score([(fam, p) for p in batch], [study.space.materialize(c.params) for c in members],
                                   {"unsteered": InterventionPlan([], [])}, seed=spec.seed + 2000 + rnd)
            for c, r in zip(members + [unsteered], scored.results + [scored.arms["unsteered"]]):
                fam_scores = c.scores.setdefault(fam, {})
                for rec in r.samples:
                    for k in wanted:
                        fam_scores.setdefault(k, []).append(sample_value(rec, k))
            record.spent_samples += len(scored.samples)
            study.progress.reeval_done += len(scored.samples) - len(batch)
        if not took_any:
            break
        record.rounds = rnd + 1
        for c in live:
            c.rounds = rnd + 1
            _summarise(c, study)
        _settle(live, maximize, constraints)
        still = [c for c in live if c.settled is None]
        cut = math.ceil(cfg.keep * len(live)) if rnd + 1 < cfg.rounds else 0
        ranked = sorted(still, key=lambda c: -(c.values.get(maximize) or 0.0))
        for c in ranked[cut:]:
            if c.settled is None:
                c.settle(*((Settled.NOT_KEPT, "budget: not kept for the next round") if rnd + 1 < cfg.rounds
                           else (Settled.ROUNDS_SPENT, "budget: rounds spent")))
        live = ranked[:cut]
        if callback is not None:
            callback(study.progress)
    for c in live:
        if c.settled is None:
            c.settle(Settled.PROMPTS_SPENT, "fresh prompts spent")
    _summarise(unsteered, study)
    record.unsteered = {"values": unsteered.values, "intervals": unsteered.intervals,
                        "families": {f: v.to_dict() for f, v in unsteered.families.items()}, "n": unsteered.n}
    record.fresh_prompts_left = {f: len(p) for f, p in pools.items()}
    record.seconds = time.time() - started
    opt_study.set_user_attr(REEVALUATION_KEY, record.to_dict())
    return record


def _summarise(c: ReevalCandidate, study) -> None:
    """Pooled values and intervals (all its families, and per family) from the candidate's fresh-prompt scores."""
    b = study.objective.bootstrap
    unit = {*study.objective.scores, "hm", *RATE_METRICS}

    def summary(scores: dict) -> tuple[dict, dict]:
        vals = {k: mean(v) for k, v in scores.items()}
        ivs = {k: mean_ci(v, n=b.n, level=b.level, seed=b.seed, unit=k in unit) for k, v in scores.items()}
        return vals, ivs

    pooled: dict[str, list] = {}
    for sc in c.scores.values():
        for k, v in sc.items():
            pooled.setdefault(k, []).extend(v)
    c.values, c.intervals = summary(pooled)
    c.families = {fam: FamilyValues(*summary(sc), len(next(iter(sc.values()), []))) for fam, sc in c.scores.items()}
    c.n = len(next(iter(pooled.values()), []))


def _settle(live: list[ReevalCandidate], maximize: str, constraints) -> None:
    """Mark the candidates whose question the pooled intervals decide (module docstring)."""
    for c in live:
        verdicts = []
        for name, op, tau in constraints:
            iv = c.intervals.get(name)
            if not iv:
                verdicts.append(None)
                continue
            lo, hi = iv
            if compare(lo, op, tau) and compare(hi, op, tau):
                verdicts.append(True)
            elif not compare(lo, op, tau) and not compare(hi, op, tau):
                verdicts.append(False)
            else:
                verdicts.append(None)
        if False in verdicts:
            c.settle(Settled.INFEASIBLE, "infeasible: a constraint's interval lies wholly on the wrong side of τ")
        elif all(v is True for v in verdicts) and "front" in c.sources and not any(
                s.startswith(("pick:", "best-trial:")) for s in c.sources):
            c.settle(Settled.FEASIBLE, "feasible: every constraint's interval clears τ")
    # a family's candidates race on concept among the feasible-looking ones
    fams = {f for c in live for f in c.families}
    for fam in fams:
        racers = [c for c in live if fam in c.families and any(s.endswith(":" + fam) for s in c.sources)]
        ok = [c for c in racers if c.settled in (None, Settled.FEASIBLE)]
        if len(ok) < 2:
            continue
        lows = [(c.families[fam].intervals.get(maximize) or (None, None))[0] for c in ok]
        best_lo = max((x for x in lows if x is not None), default=None)
        for c in ok:
            hi = (c.families[fam].intervals.get(maximize) or (None, None))[1]
            if best_lo is not None and hi is not None and hi < best_lo:
                c.settle(Settled.BEATEN, f"beaten on {fam}: its {maximize} interval lies below the best's")
