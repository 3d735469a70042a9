"""What a study's MLflow pages say in words: the parent run's description (front and setting per family) and
the searchable tags of each sample's trace (searched parameters and scores)."""
from __future__ import annotations

import csv
import json
from pathlib import Path


def trace_value_tags(params: dict, scores: dict) -> dict:
    """Searchable trace tags (MLflow's trace table shows tags as columns): each searched parameter as
    `param.<name>` and each score as `score.<name>`, numbers written with 4 significant digits."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v else str(v)
    return {**{f"param.{k}": fmt(v) for k, v in params.items()},
            **{f"score.{k}": fmt(v) for k, v in scores.items() if v is not None}}


def study_note(paths) -> str | None:
    """The parent run's description (MLflow's `mlflow.note.content`, shown on the run page) from the study files
    being logged: the front (front.csv) and, when summary.json is among them, each family's setting from the
    dose-response fits with its status and reason. None when neither file is there."""
    by_name = {Path(p).name: Path(p) for p in paths}
    lines = []
    if "front.csv" in by_name and by_name["front.csv"].exists():
        with by_name["front.csv"].open(newline="", encoding="utf-8") as f:
            front = list(csv.DictReader(f))
        cols = [c for c in (front[0] if front else {}) if c.startswith("params.")]
        pts = ", ".join("trial " + r["number"] + " (" + ", ".join(f"{c[7:]} = {float(r[c]):.3g}" for c in cols
                                                                   if r.get(c) not in (None, "")) + ")" for r in front[:6])
        lines.append(f"**Pareto front**: {len(front)} feasible trial(s) not beaten on both objectives"
                     + (f": {pts}" if pts else " (no feasible trial yet)") + ".")
    if "summary.json" in by_name and by_name["summary.json"].exists():
        s = json.loads(by_name["summary.json"].read_text(encoding="utf-8"))
        cons = " and ".join(f"{n} {op} {v:g}" for n, op, v in s.get("constraints") or [])
        lines += [""] * bool(lines) + [f"**Setting per family** (dose-response fits on the selection prompts; "
                                         f"maximise {s.get('maximize')} with {cons}; `steeropt pick` checks them on "
                                         "held-out prompts):", ""]
        for fam, d in (s.get("families") or {}).items():
            params = ((d.get("setting") or {}).get("params")) or {}
            setting = ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in params.items())
            status = "candidate" if d.get("status") == "ok" else "no deployable setting"
            lines.append(f"- {fam}: {status}" + (f", {setting}" if setting else "")
                         + (f" ({d['reason']})" if d.get("reason") else ""))
    return "\n".join(lines) or None


def trial_note(params: dict, values: dict, feasible, reason: str | None = None, constraints=None) -> str:
    """A trial run's description: its searched parameters, its main scores, and whether it met the constraints
    (`constraints`: the objective's {name, op, value} entries; the first one it fails is named)."""
    setting = ", ".join(f"{k} = {v:.4g}" if isinstance(v, float) else f"{k} = {v}" for k, v in params.items())
    main = ", ".join(f"{k} {values[k]:.2f}" for k in ("concept", "coherency", "relevance", "hm")
                     if isinstance(values.get(k), (int, float)))
    fails = [f"{c['name']} {values[c['name']]:.2f} {'<' if c.get('op', '>=') == '>=' else '>'} {c['value']:g}"
             for c in constraints or [] if isinstance(values.get(c.get("name")), (int, float))
             and not (values[c["name"]] >= c["value"] if c.get("op", ">=") == ">=" else values[c["name"]] <= c["value"])]
    verdict = ("failed: " + reason if reason else "feasible (meets every constraint)" if feasible
               else f"infeasible: {fails[0]} (off the front)" if fails
               else "infeasible (below a constraint's τ: off the front)")
    return f"**{setting or 'unsteered'}**: {main or 'no scores'}; {verdict}."
