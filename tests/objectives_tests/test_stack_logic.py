"""ObjectiveStack gating, audit, missing-vs-zero and failure rules.

The judge here is a tiny real Judge subclass (steeropt.evaluation.judges.base.Judge with a rule-based `_rate`),
used ONLY to test the stack's aggregation logic deterministically; the real judge backends are tested
in tests/judges_tests. Tier-1 metrics run on the real embedded model.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from steeropt.errors import JudgeError
from steeropt.evaluation.judges.base import Judge
from steeropt.evaluation.judges.config import JudgeSpec, Rubric
from steeropt.evaluation.judges.scoring import Rating
from steeropt.evaluation.objectives import ConceptInfo, ObjectiveSpec, ObjectiveStack
from steeropt.specs.factory import build
from steeropt.types import InterventionPlan

from .conftest import make_sample

PLAN = InterventionPlan(sites=[], alphas=[])
FLUENT = "We spent the afternoon at the wedding and the bride looked happy."
NEUTRAL = "I went to the store and bought some bread and milk for breakfast."
LOOP = "the the the the the the the the the the the the the the the the"
LOOP_WEDDING = "the wedding the wedding the wedding the wedding the wedding the wedding the wedding"


class RuleJudge(Judge):
    """concept: 2 if 'wedd' in the response; fluency: 2, or 0 when the response loops; 'MISSING' -> no rating."""

    backend = "rule"

    def __init__(self):
        super().__init__(JudgeSpec(name="rule", backend="local", cache=None, rubrics={
            "concept": Rubric(template="Concept {concept}? {prompt} {response}"),
            "fluency": Rubric(template="Fluent? {prompt} {response}")}), None)

    @property
    def identity(self) -> str:
        return "rule"

    def _rate(self, requests):
        out = []
        for q in requests:
            if "MISSING" in q.response:
                out.append((Rating(None, None, "unparseable: no rating"), "??"))
            elif q.rubric == "concept":
                out.append((Rating(2.0 if "wedd" in q.response.lower() else 0.0, "parsed"), "ok"))
            else:
                out.append((Rating(0.0 if "the the the" in q.response else 2.0, "parsed"), "ok"))
        return out


def spec(**over) -> ObjectiveSpec:
    raw = {"name": "t", "judge": "rule", "scores": {"concept": {"rubric": "concept"}, "coherency": {"rubric": "fluency"}},
           "gates": [{"metric": "rep_3", "op": ">", "value": 0.2, "reason": "collapsed"}],
           "filtered_score": {"coherency": 0.0}, "audit": {"share": 0.0},
           "objectives": [{"name": "concept", "direction": "maximize"}, {"name": "coherency", "direction": "maximize"}],
           "constraints": [{"name": "coherency", "op": ">=", "value": 0.5}],
           "scalarization": {"kind": "harmonic_mean", "of": ["concept", "coherency"]}}
    raw.update(over)
    return ObjectiveSpec.model_validate(raw)


CONCEPT = ConceptInfo("wedding", "weddings", keywords=["wedd*", "bride"])


def test_gate_floors_coherency_and_still_judges_the_concept(lm):
    """A fluency gate floors what it measures (coherency) and spares that rubric; the concept of broken text is
    still judged: broken on-concept text is on-concept, and its floored coherency keeps it infeasible."""
    judge = RuleJudge()
    samples = [make_sample(lm, "Tell me a story.", t) for t in (FLUENT, NEUTRAL, LOOP, LOOP_WEDDING)]
    [res] = ObjectiveStack(spec(), lm, judge, CONCEPT).evaluate(samples, [PLAN])
    loop, wloop = res.samples[2], res.samples[3]
    for r in (loop, wloop):
        assert r["filtered"] and r["filter_reasons"] == ["collapsed"] and set(r["judge"]) == {"concept"}
        assert r["scores"]["coherency"] == 0.0 and r["unscored"] == [] and r["hm"] == 0.0 and not r["missing"]
    assert loop["scores"]["concept"] == 0.0 and wloop["scores"]["concept"] == 1.0  # measured, never floored
    assert judge.stats.requests == 6  # 2 survivors x 2 rubrics + 2 filtered x the concept rubric only
    assert res.counts["filtered"] == 2 and res.counts["filtered_reasons"] == {"collapsed": 2}
    assert res.values["concept"] == pytest.approx(2 / 4)
    assert res.values["coherency"] == pytest.approx(2 / 4)  # floors counted
    assert res.values["hm"] == pytest.approx(1 / 4)  # HM: 1, 0 (neutral: concept 0), 0, 0 (filtered)
    assert res.values["keyword_rate"] == pytest.approx(2 / 4)
    assert res.objectives == {"concept": res.values["concept"], "coherency": res.values["coherency"]}
    assert res.constraints["coherency>=0.5"] == pytest.approx(0.0) and res.feasible
    assert not res.failed
    json.dumps(res.samples)  # records are plain JSON


SHIPPED = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "objectives").glob("*.yaml")
                 if not p.name.endswith(".calibration.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_no_shipped_objective_floors_the_concept(name):
    """Every shipped gate is about breakage (repetition, collapse, broken text): none may floor the concept axis."""
    obj = build("objective", name)
    assert "concept" in obj.scores and "concept" not in obj.filtered_score, obj.filtered_score


GATES_TABLE = Path(__file__).resolve().parents[2] / "bench" / "judge_quality" / "gates.json"


def _qualifies(metric: str, op: str, value: float) -> bool:
    """A row of bench/judge_quality/gates.py (leave-one-concept-out on all labels) that kept precision >= 0.9 on
    broken text on every held-out concept, at a threshold no looser than this gate's."""
    table = json.loads(GATES_TABLE.read_text())
    return any(r["qualifies"] and r["threshold"] is not None and r["metric"] == metric and r["op"] == op
               and (value >= r["threshold"] if op in (">", ">=") else value <= r["threshold"]) for r in table)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_gate_holds_on_unseen_concepts(name):
    bad = [f"{g.metric} {g.op} {g.value}" for g in build("objective", name).gates if not _qualifies(g.metric, g.op, g.value)]
    assert not bad, f"{name}: gates with no qualifying row in {GATES_TABLE.name}: {bad}"


def test_the_gates_that_failed_the_rule_are_refused():
    """The check itself: the gates the quickstart objective had are what the table says fails on some concept."""
    assert not _qualifies("distinct_1", "<", 0.43) and not _qualifies("fluency_proxy", "<", 0.29)
    assert not _qualifies("rep_3", ">", 0.2) and not _qualifies("rep_3", ">", 0.4721)  # pooled 0.98, 0.50 on enthusiasm


def test_missing_is_never_zero_and_fails_trial_over_share(lm):
    samples = [make_sample(lm, "Tell me a story.", t) for t in (FLUENT, "MISSING " + NEUTRAL, "MISSING " + FLUENT)]
    [res] = ObjectiveStack(spec(max_missing_share=0.5), lm, RuleJudge(), CONCEPT).evaluate(samples, [PLAN])
    rec = res.samples[1]
    assert rec["scores"] == {"concept": None, "coherency": None} and rec["hm"] is None
    assert rec["missing"]["concept"].startswith("unparseable")
    assert res.values["concept"] == 1.0 and res.values["coherency"] == 1.0  # missing left out, not 0
    assert res.counts["missing"] == 2 and res.counts["missing_reasons"] == {"unparseable: no rating": 4}
    assert res.failed and "2 of 3 samples missing" in res.reason
    [ok] = ObjectiveStack(spec(max_missing_share=0.7), lm, RuleJudge(), CONCEPT).evaluate(samples, [PLAN])
    assert not ok.failed and ok.values["missing_share"] == pytest.approx(2 / 3)


def test_audit_share_and_agreement(lm):
    samples = [make_sample(lm, f"Prompt {i}.", LOOP) for i in range(10)] + [make_sample(lm, "Prompt.", FLUENT)]
    sp = spec(audit={"share": 0.3, "seed": 7, "score": "coherency", "below": 0.5})
    judge = RuleJudge()
    [res] = ObjectiveStack(sp, lm, judge, CONCEPT).evaluate(samples, [PLAN])
    assert res.counts["filtered"] == 10 and res.counts["audited"] == 3
    assert res.counts["audit_agreement"] == 1.0  # the judge also rates loops below 0.5
    audited = [r for r in res.samples if r["audited"]]
    assert all(r["scores"]["coherency"] == 0.0 for r in audited)  # the floor stands; audit only measures
    [again] = ObjectiveStack(sp, lm, RuleJudge(), CONCEPT).evaluate(samples, [PLAN])
    assert [r["index"] for r in again.samples if r["audited"]] == [r["index"] for r in audited]  # seeded


def test_per_plan_and_per_family_split(lm):
    s = [make_sample(lm, "A.", FLUENT, candidate=0, family="x"), make_sample(lm, "B.", NEUTRAL, candidate=0, family="y"),
         make_sample(lm, "A.", NEUTRAL, candidate=1, family="x")]
    res = ObjectiveStack(spec(), lm, RuleJudge(), CONCEPT).evaluate(s, [PLAN, PLAN])
    assert [r.plan_index for r in res] == [0, 1] and res[0].counts["samples"] == 2 and res[1].counts["samples"] == 1
    assert res[0].families["x"]["values"]["concept"] == 1.0 and res[0].families["y"]["values"]["concept"] == 0.0
    assert res[0].values["scalar"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)


def test_no_judge_needed_for_cheap_only_and_judge_required_otherwise(lm):
    with pytest.raises(JudgeError):
        ObjectiveStack(spec(), lm, None, CONCEPT)
    cheap = build("objective", "cheap-only")
    base = [make_sample(lm, "Tell me a story.", NEUTRAL)]
    samples = [make_sample(lm, "Tell me a story.", FLUENT), make_sample(lm, "Tell me a story.", "Flarp wedd zibble quonk vexa the morn.")]
    [res] = ObjectiveStack(cheap, lm, None, CONCEPT).evaluate(samples, [PLAN], baseline=base)
    m = [r["metrics"] for r in res.samples]
    assert all(x["drift_ref"] == "prompt" for x in m)
    assert m[1]["surprisal"] > m[0]["surprisal"] and m[1]["coherency_proxy"] < m[0]["coherency_proxy"]
    assert res.values["keyword_rate"] == 1.0 and res.counts["judge_requests"] == 0
    [nobase] = ObjectiveStack(cheap, lm, None, CONCEPT).evaluate(samples, [PLAN])
    assert nobase.failed and "metric coherency_proxy unavailable" in nobase.reason
