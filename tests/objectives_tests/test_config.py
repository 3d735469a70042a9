"""ObjectiveSpec validation and the shipped objective files."""
from __future__ import annotations

import pytest

from steeropt.errors import SpecError
from steeropt.evaluation.objectives.config import ObjectiveSpec
from steeropt.specs.factory import build

BASE = {"name": "x", "judge": "local-default", "scores": {"concept": {"rubric": "concept"}},
        "objectives": [{"name": "concept", "direction": "maximize"}]}


def test_shipped_files_build():
    t = build("objective", "tiered-default")
    assert t.judge == "local-default"
    assert {k: s.rubric for k, s in t.scores.items()} == {"concept": "concept", "coherency": "fluency"}
    assert t.gates == []  # no cheap gate qualifies (test_stack_logic: every shipped gate must)
    assert t.filtered_score["coherency"] == 0.0 and t.audit.share == 0.1 and t.max_missing_share == 0.5
    assert t.directions == [("concept", "maximize"), ("coherency", "maximize")]
    c = build("objective", "cheap-only")
    assert c.judge is None and all(s.metric for s in c.scores.values())


@pytest.mark.parametrize("patch, field", [
    ({"extra_key": 1}, "extra_key"),
    ({"scores": {"concept": {"rubric": "concept", "metric": "rep_3"}}}, "scores"),
    ({"gates": [{"metric": "nonsense", "value": 1, "reason": "r"}]}, "gates"),
    ({"objectives": [{"name": "concpet", "direction": "maximize"}]}, None),
    ({"judge": "none"}, None),  # rubric scores without a judge
    ({"filtered_score": {"coherency": 0.0}}, None),  # not a score of this spec
])
def test_bad_specs_name_the_problem(patch, field):
    with pytest.raises(SpecError) as e:
        build("objective", {**BASE, **patch})
    if field:
        assert field in str(e.value)


def test_unknown_value_message_lists_known():
    with pytest.raises(Exception) as e:
        ObjectiveSpec.model_validate({**BASE, "objectives": [{"name": "concpet", "direction": "maximize"}]})
    assert "concpet" in str(e.value) and "keyword_rate" in str(e.value)
