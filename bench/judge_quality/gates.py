"""Cheap gates for broken text (coherency label 0), chosen leave-one-concept-out (LOCO) over every label file.

For each held-out concept a threshold is chosen on the other concepts (most recall at precision >= 0.9) and
applied to the held-out one (steeropt.evaluation.loco.loco_gate); a gate qualifies only if its held-out
precision is >= 0.9 on EVERY concept. The shipped threshold is the same rule on all concepts. Metrics come
from the unsteered embedded 135M (the quickstart's scoring model); rep_3, degenerate and distinct_1 are
text-only (no teacher-forced pass: usable on any steered model, e.g. the 1.5B). Writes gates.md and gates.json.

    STEEROPT_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/judge_quality/gates.py [LABEL_FILE ...]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from steeropt.engine.models import load_model
from steeropt.evaluation.loco import loco_gate
from steeropt.evaluation.validation import baseline_for, read_labels, score_items
from steeropt.specs.factory import build

HERE = Path(__file__).resolve().parent
LABEL_FILES = [HERE / "labels" / f for f in ("calibration.jsonl", "test.jsonl", "qwen.jsonl")]
TEXT_ONLY = {"rep_3", "degenerate", "distinct_1"}
# (metric, op): a sample with `metric op threshold` is gated as broken
CANDIDATES = [("rep_3", ">"), ("degenerate", ">"), ("distinct_1", "<"), ("surprisal_drift", ">"),
              ("neutral_drift", ">"), ("neutral_surprisal", ">"), ("fluency_proxy", "<")]
# precision each threshold must reach on the concepts it is chosen on: 0.9 (the shipping bar), or 1.0 (a margin
# for the unseen concept); both are reported, and the bar for shipping is 0.9 on every held-out concept
CHOOSE_AT = (0.9, 1.0)


def _rel(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(HERE.parents[1]))
    except ValueError:
        return p


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main(files: list[Path], out: Path) -> str:
    lm = load_model("smollm2-135m-instruct")
    spec = build("objective", "cheap-only")
    items = [it for f in files for it in read_labels(f)]
    recs = score_items(lm, spec, items, None, baseline=baseline_for(lm, items))
    metrics = [r["metrics"] for r in recs]
    concepts = sorted({it.concept for it in items})
    results = [loco_gate(m, op, [x.get(m) for x in metrics], items, choose_at=at) for at in CHOOSE_AT for m, op in CANDIDATES]
    rows = ["| gate | text-only | chosen at precision | shipped threshold | qualifies | pooled LOCO precision / recall | "
            + " | ".join(concepts) + " |", "|---" * (6 + len(concepts)) + "|"]
    for r in results:
        t = "none" if r["threshold"] is None else f"{r['threshold']:.4g}"
        cells = []
        for c in concepts:
            f = r["folds"][c]
            cells.append("no threshold" if f["threshold"] is None else
                         f"{_fmt(f['precision'])} / {_fmt(f['recall'])} (t {f['threshold']:.3g}; {f['fired']}/{f['broken']}/{f['n']})")
        p = r["pooled"]
        rows.append(f"| {r['metric']} {r['op']} | {'yes' if r['metric'] in TEXT_ONLY else 'no'} | {r['choose_at']:g} | {t} | "
                    f"{'**yes**' if r['qualifies'] else 'no'} | {_fmt(p['precision'])} / {_fmt(p['recall'])} | " + " | ".join(cells) + " |")
    n_broken = sum(it.labels.get("coherency") == 0 for it in items)
    text = ("# Cheap gates for broken text, chosen leave-one-concept-out\n\n"
            f"Positive class: coherency label 0 ({n_broken} of {len(items)} items). Labels: "
            + ", ".join(f"`{_rel(str(f))}`" for f in files) + ".\n"
            "Per held-out concept: the threshold chosen on the OTHER concepts (most recall with precision >= the\n"
            "'chosen at' target: 0.9, or 1.0 to leave a margin), then\n"
            "precision / recall on the held-out concept (t = that threshold; fired / broken / n). A gate qualifies only if\n"
            "the held-out precision is >= 0.9 on every concept; its shipped threshold is the same rule on all concepts.\n"
            "Metrics: the unsteered embedded SmolLM2-135M (drift references are its own greedy answers to the labelled\n"
            "prompts); text-only metrics need no model pass. Made by `bench/judge_quality/gates.py`.\n\n"
            + "\n".join(rows) + "\n")
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return text


if __name__ == "__main__":
    args = [Path(a) for a in sys.argv[1:]] or [f for f in LABEL_FILES if f.is_file()]
    print(main(args, HERE / "gates.md"))
