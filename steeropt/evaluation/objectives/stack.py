"""ObjectiveStack: tier-1 metrics on every sample -> gates -> judge on survivors (+ audits) -> aggregation.

    stack = ObjectiveStack(build("objective", "tiered-default"), lm, judge, concept=ConceptInfo("wedding", ...))
    results = stack.evaluate(samples, plans, baseline=baseline_samples, vectors=vectors)
    results[0].values["concept"], results[0].intervals["hm"], results[0].failed

Rules (also written in the objective files):
- a gated sample is *filtered* with its reasons and gets `filtered_score` without a judge call; a seeded
  `audit.share` of filtered samples is judged anyway, only to report gate/judge agreement;
- a judge result with score None is *missing* (counted with its reason, never 0); a trial with more
  than `max_missing_share` missing samples is failed with a reason instead of getting a bad value.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from steeropt.errors import JudgeError
from steeropt.evaluation import calibration
from steeropt.evaluation.judges import JudgeRequest
from steeropt.evaluation.objectives.aggregate import harmonic_mean, mean, mean_ci, scalarize
from steeropt.evaluation.objectives.config import (FORCED_METRICS, PROMPT_METRICS, TIER1_METRICS, ObjectiveSpec,
                                                   compare)
from steeropt.evaluation.objectives.gates import audit_draw, gate_reasons
from steeropt.evaluation.objectives.tier1 import ConceptInfo, Tier1
from steeropt.timing import phase
from steeropt.types import InterventionPlan, Sample

# Per-sample metrics that are scores or rates in [0, 1] (0/1 data of these get a Wilson interval).
UNIT_METRICS = ("rep_3", "rep_4", "distinct_1", "distinct_2", "keyword_hit", "degenerate", "coherency_proxy")


@dataclass
class TrialResult:
    """The evaluation of one plan. Values are None when they cannot be computed (never a fake 0)."""

    plan_index: int
    values: dict[str, float | None]  # every trial value: scores, hm, tier-1 means, shares, scalar
    intervals: dict[str, tuple[float, float] | None]  # intervals of per-sample means (aggregate.mean_ci)
    objectives: dict[str, float | None]  # just the spec's objectives, by name
    constraints: dict[str, float | None]  # "coherency>=0.5" -> violation (<= 0 satisfied), Optuna's convention
    feasible: bool | None
    families: dict[str, dict]  # family -> {"values", "intervals", "counts"}
    counts: dict
    samples: list[dict]  # plain per-sample records, ready for JSONL
    failed: bool = False
    reason: str | None = None
    params: dict = field(default_factory=dict)


# trial values that are means of a per-sample metric under another name (ObjectiveStack._values)
RATE_METRICS = {"keyword_rate": "keyword_hit", "degenerate_rate": "degenerate"}


def sample_value(record: dict, name: str):
    """One sample record's value of a trial value `name` (a score, hm, or a tier-1 metric, rates included):
    what the trial's mean of that value is a mean of."""
    if name in record["scores"]:
        return record["scores"][name]
    if name == "hm":
        return record["hm"]
    return record["metrics"].get(RATE_METRICS.get(name, name))


class ObjectiveStack:
    """Evaluates samples of several plans with one spec. `judge` may be None only if no score uses a rubric."""

    def __init__(self, spec: ObjectiveSpec, lm, judge=None, concept: ConceptInfo | None = None):
        self.spec, self.lm, self.judge = spec, lm, judge
        self.concept = concept or ConceptInfo(name="")
        self.rubric_scores = {k: s.rubric for k, s in spec.scores.items() if s.rubric is not None}
        # running totals over every evaluate() call: judge requests sent, and those the gates spared
        self.totals = Counter()
        # a calibrated score judges with the rubric it was fitted on, then maps (calibration.py)
        self.calibrated = {}
        if any(s.calibrated for s in spec.scores.values()):
            self.calibrated = {k: calibration.load(s.calibrated, s.axis) for k, s in spec.scores.items() if s.calibrated}
            self.rubric_scores.update({k: c.rubric for k, c in self.calibrated.items() if c.rubric})
        if self.rubric_scores and judge is None:
            raise JudgeError(f"objective '{spec.name}' scores {sorted(self.rubric_scores)} with a judge but no judge was given")
        self.tier1 = Tier1(lm, self.concept, spec.tier1)
        used = spec.uses() | {f for c in self.calibrated.values() for f, _ in c.features}
        used |= {(c.source or {}).get("metric") for c in self.calibrated.values()}
        self.tier1.preference = spec.tier1.preference if spec.tier1.preference is not None else bool(used & set(PROMPT_METRICS))
        forced = spec.tier1.teacher_forced
        self.tier1.teacher_forced = forced if forced is not None else bool(used & set(FORCED_METRICS))

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """[(value name, direction)] for optimizers."""
        return self.spec.directions

    @property
    def constraints(self) -> list[tuple[str, str, float]]:
        return [(c.name, c.op, c.value) for c in self.spec.constraints]

    def tier1_metrics(self, samples: Sequence[Sample], plans=None, baseline=None, vectors=None) -> list[dict]:
        """Per-sample tier-1 metrics alone (no gates, no judge)."""
        return self.tier1.compute(samples, plans, baseline, vectors)

    def evaluate(
        self,
        samples: Sequence[Sample],
        plans: Sequence[InterventionPlan],
        baseline: Sequence[Sample] | None = None,
        vectors=None,
    ) -> list[TrialResult]:
        """One TrialResult per plan (sample.candidate indexes plans)."""
        spec = self.spec
        with phase("cheap_tier"):
            mets = self.tier1.compute(samples, plans, baseline, vectors)
        reasons = [gate_reasons(m, spec.gates) for m in mets]
        audited: set[int] = set()
        for p, plan in enumerate(plans):
            filt = [i for i, x in enumerate(samples) if x.candidate == p and reasons[i]]
            key = repr((plan.sites, plan.alphas, sorted(plan.params.items())))
            audited.update(audit_draw(filt, spec.audit.share, spec.audit.seed, key))
        # One judge call for the whole batch: survivors get every rubric, audits too. A filtered sample is judged
        # only on the scores its gates do not floor (a fluency gate says nothing about the concept).
        reqs, where = [], []
        if self.rubric_scores:
            for i, x in enumerate(samples):
                full = not reasons[i] or i in audited
                for name, rubric in self.rubric_scores.items():
                    if full or name not in spec.filtered_score:
                        reqs.append(JudgeRequest(rubric=rubric, prompt=x.prompt, response=x.text,
                                                 concept=self.concept.judge_text))
                        where.append((i, name))
        self.totals.update(samples=len(samples), judge_requests=len(reqs),
                           spared_requests=len(samples) * len(self.rubric_scores) - len(reqs))
        with phase("judge"):
            results = self.judge.judge(reqs) if reqs else []
        if len(results) != len(reqs):
            raise JudgeError(f"judge returned {len(results)} results for {len(reqs)} requests")
        judged: dict[int, dict] = {}
        for (i, name), r in zip(where, results):
            judged.setdefault(i, {})[name] = r
        records = [self._record(i, x, mets[i], reasons[i], i in audited, judged.get(i, {})) for i, x in enumerate(samples)]
        return [self._trial(p, plan, [r for r in records if r["candidate"] == p]) for p, plan in enumerate(plans)]

    def _record(self, i: int, x: Sample, m: dict, reasons: list[str], audited: bool, judged: dict) -> dict:
        spec = self.spec
        filtered = bool(reasons)
        scores: dict[str, float | None] = {}
        missing: dict[str, str] = {}
        unscored: list[str] = []
        judge_scores = {k: r.score for k, r in judged.items()}
        for name, src in spec.scores.items():
            if filtered and name in spec.filtered_score:
                scores[name] = spec.filtered_score[name]
                continue
            # a filtered sample keeps every score its gates do not floor (broken text can still be on-concept;
            # its floored coherency keeps it infeasible): judged on those rubrics, or from the cheap metrics
            needs_judge = src.rubric is not None or (name in self.calibrated and self.calibrated[name].rubric)
            if filtered and needs_judge and name not in judged:
                scores[name] = None
                unscored.append(name)
                continue
            if name in self.calibrated:  # calibration.py
                cal = self.calibrated[name]
                raw = judged[name].score if cal.rubric else (m.get(cal.source["metric"]) if cal.source else None)
                scores[name] = cal.predict([{**m, "score": raw}])[0]
                if scores[name] is None:
                    missing[name] = (judged[name].missing if cal.rubric else None) or "calibrated score: raw score unavailable"
                continue
            if src.rubric is not None:
                r = judged[name]
                scores[name] = r.score
                if r.score is None:
                    missing[name] = r.missing or "judge gave no score"
            else:
                scores[name] = m.get(src.metric)
                if scores[name] is None:
                    missing[name] = f"metric {src.metric} unavailable"
        if filtered:
            floors = [spec.filtered_score[k] for k in spec.scores if k in spec.filtered_score]
            hm = 0.0 if any(f <= 0 for f in floors) else (None if unscored else harmonic_mean(scores))
        else:
            hm = harmonic_mean(scores)
        rec = {
            "index": i, "candidate": x.candidate, "family": x.family, "prompt": x.prompt, "text": x.text,
            "token_ids": list(x.token_ids), "finished": x.finished, "seed": x.seed,
            "metrics": dict(m), "filtered": filtered, "filter_reasons": reasons, "audited": audited,
            "scores": scores, "missing": missing, "unscored": unscored, "hm": hm,
            "judge": {k: {"score": r.score, "missing": r.missing, "cached": bool(getattr(r, "cached", False)),
                          "raw": getattr(r, "raw", None)} for k, r in judged.items()},
        }
        if filtered and audited:
            rec["audit_scores"] = judge_scores
        return rec

    def _values(self, recs: list[dict]) -> tuple[dict, dict]:
        """Trial values and confidence intervals of a group of sample records."""
        b = self.spec.bootstrap
        per_sample: dict[str, list] = {k: [r["scores"][k] for r in recs] for k in self.spec.scores}
        per_sample["hm"] = [r["hm"] for r in recs]
        for k in TIER1_METRICS + PROMPT_METRICS:
            if k not in per_sample:
                per_sample[k] = [r["metrics"].get(k) for r in recs]
        values = {k: mean(v) for k, v in per_sample.items()}
        unit = {*self.spec.scores, "hm", *UNIT_METRICS}
        intervals = {k: mean_ci(v, n=b.n, level=b.level, seed=b.seed, unit=k in unit) for k, v in per_sample.items()}
        n = len(recs)
        values["keyword_rate"], intervals["keyword_rate"] = values["keyword_hit"], intervals["keyword_hit"]
        values["degenerate_rate"] = values["degenerate"]
        values["filtered_share"] = sum(r["filtered"] for r in recs) / n if n else None
        values["missing_share"] = sum(bool(r["missing"]) for r in recs) / n if n else None
        sc = self.spec.scalarization
        values["scalar"] = scalarize(values, sc.kind, sc.of, sc.weights) if sc else None
        return values, intervals

    def _counts(self, recs: list[dict]) -> dict:
        a = self.spec.audit
        audits = [r for r in recs if r["filtered"] and r["audited"]]
        a_scored = [r["audit_scores"].get(a.score) for r in audits if r["audit_scores"].get(a.score) is not None]
        judge_results = [j for r in recs for j in r["judge"].values()]
        hits = sum(j["cached"] for j in judge_results)
        return {
            "samples": len(recs),
            "filtered": sum(r["filtered"] for r in recs),
            "filtered_reasons": dict(Counter(x for r in recs for x in r["filter_reasons"])),
            "audited": len(audits),
            "audit_scored": len(a_scored),
            "audit_agree": sum(s < a.below for s in a_scored),
            "audit_agreement": (sum(s < a.below for s in a_scored) / len(a_scored)) if a_scored else None,
            "missing": sum(bool(r["missing"]) for r in recs),
            "missing_reasons": dict(Counter(x for r in recs for x in r["missing"].values())),
            "judge_requests": len(judge_results),
            "judge_cache_hits": hits,
            "judge_calls": len(judge_results) - hits,
        }

    def _trial(self, p: int, plan: InterventionPlan, recs: list[dict]) -> TrialResult:
        spec = self.spec
        values, intervals = self._values(recs)
        counts = self._counts(recs)
        fams = {}
        for fam in sorted({r["family"] for r in recs}):
            sub = [r for r in recs if r["family"] == fam]
            fv, fi = self._values(sub)
            fams[fam] = {"values": fv, "intervals": fi, "counts": self._counts(sub)}
        objectives = {o.name: values.get(o.name) for o in spec.objectives}
        cons = {}
        for c in spec.constraints:
            v = values.get(c.name)
            cons[f"{c.name}{c.op}{c.value:g}"] = None if v is None else (c.value - v if c.op == ">=" else v - c.value)
        feasible = None if any(v is None for v in cons.values()) else all(compare(values[c.name], c.op, c.value) for c in spec.constraints)
        failed, reason = False, None
        n = len(recs)
        if n == 0:
            failed, reason = True, "no samples for this plan"
        elif counts["missing"] / n > spec.max_missing_share:
            why = ", ".join(f"{k} x{v}" for k, v in counts["missing_reasons"].items())
            failed, reason = True, (f"{counts['missing']} of {n} samples missing "
                                    f"(share {counts['missing'] / n:.2f} > max {spec.max_missing_share:g}): {why}")
        else:
            none = [k for k, v in objectives.items() if v is None]
            if none:
                failed, reason = True, f"objective value(s) {none} undefined: no scored sample ({counts['filtered']} of {n} filtered)"
        return TrialResult(p, values, intervals, objectives, cons, feasible, fams, counts, recs, failed, reason, dict(plan.params))
