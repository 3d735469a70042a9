"""Issue 11 §3: calibrate reports agreement only out of fold; the file works as an objective score source."""
from __future__ import annotations

import json

import yaml

from steeropt.cli import main
from steeropt.evaluation import calibration
from steeropt.evaluation.validation import read_labels, score_items
from steeropt.specs.factory import build
from tests.validation_tests.conftest import CLEAR, item


def _three_concepts(tmp_path):
    music = [
        item("Tell me about your weekend.", "I went to a concert and heard the orchestra play a symphony; the violins were wonderful.", "music", concept=2, coherency=2, relevance=2),
        item("What should I cook for dinner tonight?", "Grill some fish with rice and steamed vegetables for a light dinner.", "music", concept=0, coherency=2, relevance=2),
        item("Describe your favourite place.", "music music music music music music music music music music music music", "music", concept=1, coherency=0, relevance=0),
        item("Give me some advice for a job interview.", "Guitar the of song melody drum the chord and of piano the.", "music", concept=1, coherency=0, relevance=0),
    ]
    p = tmp_path / "three.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in CLEAR + music))
    return p


def test_reported_agreement_is_out_of_fold(embedded, tmp_path):
    items = read_labels(_three_concepts(tmp_path))
    spec = build("objective", "cheap-only")
    recs = score_items(embedded, spec, items, None, judge_all=True)
    _, clean = calibration.calibrate(spec, items, recs)
    # Permute the dogs labels (reversed: fluent items get the broken labels and back): a held-out
    # prediction for a dogs item never saw a dogs label, so it must not change; the reported agreement
    # on dogs must not be high. A report of the training fit would follow the permuted labels.
    noisy = read_labels(_three_concepts(tmp_path))
    dogs = [it for it in noisy if it.concept == "dogs"]
    perm = [dict(it.labels) for it in reversed(dogs)]
    for it, lab in zip(dogs, perm):
        it.labels = lab
    _, permuted = calibration.calibrate(spec, noisy, recs)
    lines = {str(it.line) for it in dogs}
    a, b = clean["axes"]["fluency"], permuted["axes"]["fluency"]
    assert {k: v for k, v in a["predictions"].items() if k in lines} == {k: v for k, v in b["predictions"].items() if k in lines}
    assert a["folds"]["dogs"]["spearman"] > 0.5
    assert (b["folds"]["dogs"]["spearman"] or 0.0) < 0.5
    assert b["spearman"] < a["spearman"]


def test_calibrate_cli_writes_a_usable_score_source(embedded, tmp_path, capsys):
    labels, out = _three_concepts(tmp_path), tmp_path / "cal.yaml"
    try:
        main(["judge", "calibrate", str(labels), "--out", str(out), "--objective", "cheap-only", "--json"])
    except SystemExit as e:
        assert not e.code
    rep = json.loads(capsys.readouterr().out)
    assert rep["method"] == "leave-one-concept-out"
    assert set(rep["axes"]["fluency"]["folds"]) == {"wedding", "dogs", "music"}
    data = yaml.safe_load(out.read_text())
    assert data["evaluation"]["fluency"]["spearman"] == rep["axes"]["fluency"]["spearman"]
    assert all(w >= 0 for w in data["axes"]["fluency"]["weights"])  # monotone by construction
    # An objective scoring coherency with the calibrated map: fluent text above word salad, in [0, 1].
    spec = build("objective", {"name": "cal", "judge": "none",
                               "scores": {"coherency": {"calibrated": str(out), "axis": "fluency"}},
                               "objectives": [{"name": "coherency", "direction": "maximize"}]})
    items = read_labels(labels)
    recs = score_items(embedded, spec, items, None)
    s = {it.response[:12]: r["scores"]["coherency"] for it, r in zip(items, recs)}
    assert all(0.0 <= v <= 1.0 for v in s.values())
    assert s["I spent Satu"] > s["Wedding the "] + 0.2
