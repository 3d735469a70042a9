"""Candidate cheap gates for broken text (coherency label 0): thresholds chosen on the calibration labels
(most recall at precision >= 0.9), precision/recall reported on the test labels. Writes gates.md.

    STEEROPT_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/judge_quality/gates.py
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (metric, op): a sample with `metric op threshold` is gated as broken
CANDIDATES = [("rep_3", ">"), ("degenerate", ">"), ("surprisal_drift", ">"), ("neutral_drift", ">"),
              ("neutral_surprisal", ">"), ("fluency_proxy", "<"), ("distinct_1", "<")]


def _rel(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(HERE.parents[1]))
    except ValueError:
        return p


def main(cal: str, test: str, out: Path) -> str:
    from steeropt.engine.models import load_model
    from steeropt.evaluation.objectives.config import Gate
    from steeropt.evaluation.validation import baseline_for, choose_threshold, gate_figures, read_labels, score_items
    from steeropt.specs.factory import build

    lm = load_model("smollm2-135m-instruct")
    spec = build("objective", "cheap-only")
    ci, ti = read_labels(cal), read_labels(test)
    base = baseline_for(lm, ci + ti)
    cm = [r["metrics"] for r in score_items(lm, spec, ci, None, baseline=base)]
    tm = [r["metrics"] for r in score_items(lm, spec, ti, None, baseline=base)]
    keep_c = [i for i, it in enumerate(ci) if "coherency" in it.labels]
    rows = ["| gate | threshold (from calibration) | test precision | test recall | fired / broken / n (test) |",
            "|---|---|---|---|---|"]
    chosen = []
    for metric, op in CANDIDATES:
        t = choose_threshold([cm[i].get(metric) for i in keep_c], [ci[i].labels["coherency"] == 0 for i in keep_c], op)
        if t is None:
            rows.append(f"| {metric} {op} | none reaches precision 0.9 on calibration | | | |")
            continue
        g = Gate(metric=metric, op=op, value=round(t, 4), reason=metric)
        chosen.append(g)
        f = gate_figures([g], tm, ti)[f"{metric}{op}{g.value:g}"]
        fmt = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
        rows.append(f"| {metric} {op} | {g.value:g} | {fmt(f['precision'])} | {fmt(f['recall'])} | {f['fired']} / {f['broken']} / {f['n']} |")
    if len(chosen) > 1:
        f = gate_figures(chosen, tm, ti)["any"]
        rows.append(f"| any of the above | | {f['precision'] or 0:.2f} | {f['recall'] or 0:.2f} | {f['fired']} / {f['broken']} / {f['n']} |")
    text = ("# Cheap gates for broken text\n\n"
            f"Positive class: coherency label 0. Thresholds chosen on `{_rel(cal)}` (most recall with precision >= 0.9),\n"
            f"figures on `{_rel(test)}` ({len(ti)} items; never the set the threshold was chosen on). Model: the unsteered embedded\n"
            "SmolLM2-135M; drift references are its own greedy answers to the labelled prompts.\n"
            "Made by `bench/judge_quality/gates.py`.\n\n" + "\n".join(rows) + "\n")
    out.write_text(text)
    return text


if __name__ == "__main__":
    a = sys.argv[1:]
    print(main(a[0] if a else str(HERE / "labels/calibration.jsonl"), a[1] if len(a) > 1 else str(HERE / "labels/test.jsonl"),
               HERE / "gates.md"))
