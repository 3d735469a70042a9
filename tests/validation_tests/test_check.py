"""Issue 11 §2/§4: `steeropt judge check` through the real CLI, on the real embedded model."""
from __future__ import annotations

import json

import pytest

from steeropt.cli import main


def _run(capsys, *args) -> tuple[int, str, str]:
    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code or 0
    o = capsys.readouterr()
    return code, o.out, o.err


def test_check_json_shape_and_figures(embedded, capsys, clear_labels, judge_free_objective):
    code, out, err = _run(capsys, "judge", "check", str(clear_labels), "--objective", str(judge_free_objective), "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert set(rep["axes"]) == {"concept", "fluency", "relevance"}
    for axis in ("concept", "fluency", "relevance"):
        e = rep["axes"][axis]
        assert e["n"] == 8
        lo, hi = e["ci"]
        assert -1.0 <= lo <= hi <= 1.0 and -1.0 <= e["spearman"] <= 1.0
    # clear-cut items: the fluency proxy (plus the rep-3 gate) ranks broken text below fluent text
    assert rep["axes"]["fluency"]["spearman"] > 0.6
    g = rep["gates"]["rep_3>0.2"]
    assert g["broken"] == 4 and g["n"] == 8
    assert g["precision"] == 1.0 and g["recall"] == 0.5  # the two word-repeat items fire, the salads do not


def test_check_with_embedded_judge_on_every_axis(embedded, capsys, clear_labels):
    # --judge alone: every axis from that judge's yes/no rubrics, on every item (no gate floors anything).
    code, out, err = _run(capsys, "judge", "check", str(clear_labels), "--judge", "local-default", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert {a: e["source"] for a, e in rep["axes"].items()} == {
        "concept": {"rubric": "concept_yn"}, "fluency": {"rubric": "fluency_yn"}, "relevance": {"rubric": "relevance_yn"}}
    # A judge answer without enough mass on yes/no is missing (left out of the axis, with its reason), never 0.
    assert rep["axes"]["fluency"]["n"] == 8  # fluency_yn scores every item on the 135M judge
    assert all(e["n"] <= 8 for e in rep["axes"].values())
    assert (rep["missing"] == 0) == (not rep["missing_reasons"])
    assert rep["filtered"] == 0 and rep["gates"] == {}  # the word-repeat items are judged too, on the concept as well


@pytest.mark.parametrize("line,field", [
    ('{"prompt": "p", "response": "r", "concept": "wedding", "labels": {"concept": 3}}', "labels.concept"),
    ('{"prompt": "p", "response": "r", "labels": {"concept": 1}}', "concept"),
    ('{"prompt": "p", "response": "r", "concept": "wedding", "labels": {"fluency": 1}}', "labels.fluency"),
    ('{"prompt": "p", "response": "r", "concept": "wedding"', None),
])
def test_malformed_label_file_exits_2_naming_file_and_line(tmp_path, capsys, line, field):
    p = tmp_path / "bad.jsonl"
    good = '{"prompt": "p", "response": "r", "concept": "wedding", "labels": {"concept": 1}}'
    p.write_text(good + "\n" + line + "\n")
    code, out, err = _run(capsys, "judge", "check", str(p), "--objective", "cheap-only")
    assert code == 2
    flat = "".join(err.split())  # rich may wrap the message anywhere
    assert f"{p}:2" in flat
    if field:
        assert f"field'{field}'" in flat
