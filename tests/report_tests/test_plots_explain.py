"""Plots and MLflow text that explain themselves: the front plot's data (front, trials behind it, infeasible trials
by the constraint that made them so, τ lines), an offline front.html, the dose-fit legend, the parent run's
description and the traces' searchable tags. Pure logic on small trial tables; the drawing is real matplotlib
and plotly."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from steeropt.report.analysis import front_plot_data, plot_fronts, write_study_artifacts
from steeropt.report.dose import DosePoint, family_curves, plot_family_curves
from steeropt.tracking.notes import study_note, trace_value_tags, trial_note

OBJ = [("concept", "maximize"), ("coherency", "maximize")]
CONS = [("coherency", ">=", 0.6), ("relevance", ">=", 0.6)]


def _trials() -> pd.DataFrame:
    rows = [  # number, concept, coherency, relevance, feasible as the runner stored it
        (0, 0.30, 0.90, 0.85, True),   # front
        (1, 0.45, 0.80, 0.70, True),   # front
        (2, 0.28, 0.85, 0.80, True),   # dominated by 0
        (3, 0.60, 0.70, 0.40, False),  # looks non-dominated, but relevance < 0.6
        (4, 0.55, 0.40, 0.65, False),  # coherency < 0.6
        (5, 0.50, 0.30, 0.30, False),  # both: the first constraint in the file is named
    ]
    return pd.DataFrame([{"number": n, "state": "COMPLETE", "params.alpha_l10_wedding": 0.1 * n, "concept": c,
                          "concept.ci_low": c - 0.05, "concept.ci_high": c + 0.05, "coherency": h,
                          "coherency.ci_low": h - 0.05, "coherency.ci_high": h + 0.05, "value.relevance": r,
                          "feasible": f} for n, c, h, r, f in rows])


def test_front_plot_data_says_why_a_point_is_off_the_front():
    plot = front_plot_data({"q": _trials()}, OBJ, CONS, title="q")
    g = plot.groups["q"]
    assert sorted(g["front"]["number"]) == [0, 1]
    assert list(g["dominated"]["number"]) == [2]
    assert {w: sorted(d["number"]) for w, d in g["infeasible"].items()} == {
        "relevance < 0.6": [3], "coherency < 0.6": [4, 5]}
    assert plot.taus == [("y", 0.6, "τ: coherency ≥ 0.6 (constraint; trials below it are infeasible)")]
    assert plot.y_label == "coherency (= fluency; higher is better)"


def test_front_png_and_offline_html(tmp_path):
    plot = plot_fronts({}, OBJ, tmp_path / "front.png", tmp_path / "front.html", title="q",
                       all_points={"q": _trials()}, constraints=CONS)
    html = (tmp_path / "front.html").read_text(encoding="utf-8")
    assert 'src="https://cdn.plot.ly' not in html and "<script src=" not in html  # nothing fetched from the network
    assert len(html) > 3_000_000 and "Plotly.newPlot" in html  # plotly.js itself is in the file
    assert any(f"infeasible: relevance {lt} 0.6" in html for lt in ("<", "&lt;", "\\u003c"))  # legend, JSON-escaped
    assert (tmp_path / "front.png").stat().st_size > 20_000
    assert len(plot.groups["q"]["infeasible"]) == 2


def test_no_feasible_trial_is_said_not_hidden(tmp_path):
    df = _trials()
    df["feasible"] = False
    df.loc[:, "value.relevance"] = 0.1
    info = write_study_artifacts(df, OBJ, tmp_path, title="q", reference=[0.0, 0.0], constraints=CONS)
    assert info["front_size"] == 0
    plot = front_plot_data({"q": df}, OBJ, CONS)
    assert sum(len(d) for d in plot.groups["q"]["infeasible"].values()) == 6 and plot.groups["q"]["front"].empty


def test_dose_fits_legend_and_empty_sweet_spot(tmp_path):
    xs = np.linspace(0, 0.6, 9)
    pts = [DosePoint(i, float(x), 9, {"concept": 0.2 + x, "coherency": 0.9 - x, "relevance": 0.9 - 1.2 * x})
           for i, x in enumerate(xs)]
    curves = family_curves(pts, ("concept", "coherency", "relevance"), n_boot=20)
    path = tmp_path / "dose_fits.png"
    plot_family_curves({"advice": curves, "open_ended": curves}, path, xlabel="α (layer 10, add), normalised units",
                       floors={"coherency": 0.6, "relevance": 0.6}, target=0.5,
                       spots={"advice": {"interval": None, "p_empty": 1.0}, "open_ended": {"interval": (0.1, 0.2)}},
                       chosen={"open_ended": 0.15})
    assert path.stat().st_size > 30_000


def test_parent_run_description_and_trace_tags(tmp_path):
    write_study_artifacts(_trials(), OBJ, tmp_path, title="q", reference=[0.0, 0.0], constraints=CONS)
    summary = {"maximize": "concept", "constraints": CONS, "families": {
        "advice": {"status": "ok", "reason": None, "setting": {"params": {"alpha_l10_wedding": 0.15}}},
        "open_ended": {"status": "no_deployable_setting", "reason": "the sweet spot is empty", "setting": None}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    note = study_note([tmp_path / "front.csv", tmp_path / "summary.json"])
    assert "**Pareto front**: 2 feasible trial(s)" in note and "trial 1 (alpha_l10_wedding = 0.1)" in note
    assert "- advice: candidate, alpha_l10_wedding = 0.15" in note
    assert "- open_ended: no deployable setting (the sweet spot is empty)" in note
    assert study_note([tmp_path / "trials.csv"]) is None
    tags = trace_value_tags({"alpha_l10_wedding": 0.123456}, {"concept": 0.5, "coherency": None, "relevance": 1})
    assert tags == {"param.alpha_l10_wedding": "0.1235", "score.concept": "0.5", "score.relevance": "1"}
    assert trial_note({"alpha_l10_wedding": 0.41}, {"concept": 0.6, "coherency": 0.5}, False) == (
        "**alpha_l10_wedding = 0.41**: concept 0.60, coherency 0.50; infeasible (below a constraint's τ: off the front).")
    cons = [{"name": "coherency", "op": ">=", "value": 0.6}, {"name": "relevance", "op": ">=", "value": 0.6}]
    assert trial_note({"a": 0.3}, {"concept": 0.6, "coherency": 0.8, "relevance": 0.31}, False, None, cons).endswith(
        "infeasible: relevance 0.31 < 0.6 (off the front).")


def test_pick_says_why_the_choice_lies_outside_the_sweet_spot():
    from types import SimpleNamespace as NS

    from steeropt.cli.analysis import outside_note

    fam = NS(sweet_spot={"interval": (0.143, 0.188)}, chosen=NS(params={"alpha_l10_wedding": 0.1}),
             reevaluated=None, source="fit", robust=True)
    note = outside_note(fam)
    assert note.startswith("the chosen α 0.1 lies outside the sweet spot [0.143, 0.188]") and "robust" in note
    fam.chosen = NS(params={"alpha_l10_wedding": 0.15})
    assert outside_note(fam) is None  # inside: nothing to explain
    fam.chosen, fam.reevaluated, fam.source = NS(params={"a": 0.3}), {"trial": 3}, "fit+reevaluation"
    assert "re-evaluation on fresh prompts replaced" in outside_note(fam)
    fam.sweet_spot = {"interval": None}
    assert outside_note(fam) is None


def test_what_to_try_next_names_its_evidence(tmp_path):
    from types import SimpleNamespace as NS

    from steeropt.report.advice import family_advice, missing_keywords, study_advice
    from steeropt.report.dose import sweet_spot

    xs = np.linspace(0, 0.6, 9)  # concept reaches 0.5 only where relevance has fallen below 0.6
    pts = [DosePoint(i, float(x), 9, {"concept": 0.2 + x, "coherency": 0.9 - 0.2 * x, "relevance": 0.9 - 1.2 * x})
           for i, x in enumerate(xs)]
    curves = family_curves(pts, ("concept", "coherency", "relevance"), n_boot=20)
    floors = {"coherency": 0.6, "relevance": 0.6}
    spot = sweet_spot(curves, concept="concept", target=0.5, floors=floors)
    assert spot["interval"] is None
    lines = family_advice(curves, spot, concept="concept", target=0.5, floors=floors, searched=(0.0, 0.6),
                          study_ref="q", prompts_per_trial=9)
    assert lines[0].startswith("what emptied the sweet spot: where concept >= 0.5")
    lower = next(ln for ln in lines if ln.startswith("a lower τ: relevance"))
    best = float(lower.split("relevance ≥ ")[1].split(" ")[0])
    assert 0.3 < best < 0.6 and "the cost" in lower
    assert not any(ln.startswith("a lower τ: coherency") for ln in lines)  # coherency is not what empties it
    low = [DosePoint(i, float(x), 9, {"concept": 0.1 + 0.5 * x, "coherency": 0.9, "relevance": 0.9})
           for i, x in enumerate(xs)]  # the concept still rising at the top of the range
    c2 = family_curves(low, ("concept", "coherency", "relevance"), n_boot=20)
    s2 = sweet_spot(c2, concept="concept", target=0.5, floors=floors)
    assert any(ln.startswith("a wider range") for ln in family_advice(
        c2, s2, concept="concept", target=0.5, floors=floors, searched=(0.0, 0.6), study_ref="q", prompts_per_trial=9))

    (tmp_path / "baseline.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in (
        "I went hiking and read a book.", "A quiet evening at home with tea.", "We cooked dinner together.")))
    texts = {0: ["A calm day at home."] * 3, 1: ["The bride and groom shared vows at the chapel."] * 3,
             2: ["Our bridal party danced; the vows were lovely, the chapel bright."] * 3}
    for n, ts in texts.items():
        (tmp_path / f"trial-{n:05d}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ts))
    trials = [NS(number=n, state=NS(name="COMPLETE"), params={"a": 0.1 * (n + 1)}) for n in texts]
    words = missing_keywords(tmp_path, ["wedding", "bride*", "groom"], alpha_param="a", trials=trials)
    assert "vows" in words and "chapel" in words
    assert not any(w.startswith("bride") or w == "groom" for w in words)  # already keywords
    lines = study_advice(concept_name="wedding", layer=10, keywords_missing=words)
    assert "--layer L" in lines[0] and "vows" in lines[1]
