"""Gates chosen leave-one-concept-out on real labelled steered outputs and real embedded-model cheap metrics."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from steeropt.cli import main
from steeropt.evaluation.loco import MIN_PRECISION, loco_gate
from steeropt.evaluation.validation import read_labels, score_items
from steeropt.specs.factory import build

LABELS = Path(__file__).resolve().parents[2] / "bench" / "judge_quality" / "labels"
PER_CONCEPT = 10  # 5 broken (coherency 0) and 5 readable items of each concept, the first by id


def _pick(items):
    out = []
    for c in sorted({it.concept for it in items}):
        mine = sorted((it for it in items if it.concept == c), key=lambda it: it.extra["id"])
        broken = [it for it in mine if it.labels["coherency"] == 0][:PER_CONCEPT // 2]
        ok = [it for it in mine if it.labels["coherency"] > 0][:PER_CONCEPT // 2]
        out += broken + ok
    return out


@pytest.fixture(scope="module")
def scored(embedded):
    items = _pick(read_labels(LABELS / "calibration.jsonl") + read_labels(LABELS / "test.jsonl"))
    # no baseline answers (drift metrics stay missing): text-only metrics and the teacher-forced neutral_surprisal
    recs = score_items(embedded, build("objective", "quickstart"), items, None, baseline=[])
    return items, [r["metrics"] for r in recs]


def test_loco_figures_per_held_out_concept(scored):
    items, metrics = scored
    res = loco_gate("rep_3", ">", [m["rep_3"] for m in metrics], items)
    assert set(res["folds"]) == {"astronomy", "dogs", "music", "weddings"}
    for f in res["folds"].values():
        assert f["n"] == PER_CONCEPT and f["broken"] == PER_CONCEPT // 2
        assert set(f) >= {"threshold", "precision", "recall", "fired"}
    p = res["pooled"]
    assert p["n"] == len(items) and p["fired"] == sum(f["fired"] for f in res["folds"].values())
    assert res["qualifies"] == all(f["threshold"] is not None and (f["precision"] is None or f["precision"] >= MIN_PRECISION)
                                   for f in res["folds"].values())
    # repetition separates real loops from readable text: some recall at the chosen thresholds
    assert p["recall"] > 0.2 and res["threshold"] is not None


@pytest.mark.parametrize("metric,op", [("rep_3", ">"), ("distinct_1", "<"), ("neutral_surprisal", ">")])
def test_held_out_concept_never_moves_its_own_threshold(scored, metric, op):
    items, metrics = scored
    values = [m[metric] for m in metrics]
    before = loco_gate(metric, op, values, items)
    # Rewrite the dogs items: every coherency label flipped (broken <-> readable).
    changed = [type(it)(it.prompt, it.response, it.concept, dict(it.labels), it.concept_description, it.line, it.extra)
               for it in items]
    for it in changed:
        if it.concept == "dogs":
            it.labels["coherency"] = 2 if it.labels["coherency"] == 0 else 0
    after = loco_gate(metric, op, values, changed)
    assert after["folds"]["dogs"]["threshold"] == pytest.approx(before["folds"]["dogs"]["threshold"], abs=1e-12)
    # ... while the held-out figures and the other folds do see the change
    assert (after["folds"]["dogs"]["precision"], after["folds"]["dogs"]["recall"]) != \
        (before["folds"]["dogs"]["precision"], before["folds"]["dogs"]["recall"])
    others = [c for c in before["folds"] if c != "dogs"]
    assert any(after["folds"][c]["threshold"] != before["folds"][c]["threshold"] for c in others) \
        or after["threshold"] != before["threshold"]


def test_judge_check_prints_per_concept_gate_figures(embedded, tmp_path, capsys, scored):
    items, _ = scored
    p = tmp_path / "real.jsonl"
    few = [it for c in ("music", "dogs") for it in [x for x in items if x.concept == c][2:8]]  # 3 broken, 3 readable
    p.write_text("".join(json.dumps({"prompt": it.prompt, "response": it.response, "concept": it.concept,
                                     "labels": it.labels}) + "\n" for it in few))
    gated = tmp_path / "gated.yaml"  # no shipped objective has a gate (none qualifies): one made for this check
    gated.write_text("name: gated\njudge: none\nscores:\n  concept: {metric: keyword_hit}\n"
                     "  coherency: {metric: fluency_proxy}\ngates:\n  - {metric: rep_3, op: '>', value: 0.2, reason: collapsed}\n"
                     "filtered_score: {coherency: 0.0}\naudit: {share: 0.0}\nobjectives:\n  - {name: concept, direction: maximize}\n")
    try:
        main(["judge", "check", str(p), "--objective", str(gated), "--json"])
    except SystemExit as e:
        assert not e.code
    rep = json.loads(capsys.readouterr().out)
    assert set(rep["gates"]) == {"rep_3>0.2"}
    for name, g in rep["gates"].items():
        assert set(g["per_concept"]) == {"music", "dogs"}
        assert sum(pc["fired"] for pc in g["per_concept"].values()) == g["fired"]
        assert sum(pc["n"] for pc in g["per_concept"].values()) == g["n"] == 12
        assert all(pc["broken"] == 3 for pc in g["per_concept"].values())
    try:
        main(["judge", "check", str(p), "--objective", str(gated)])
    except SystemExit as e:
        assert not e.code
    text = capsys.readouterr().out
    assert "rep_3>0.2" in text and "dogs" in text and "music" in text
