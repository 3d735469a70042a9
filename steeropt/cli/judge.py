"""`steeropt judge check|calibrate`: how well an objective's scores agree with hand labels (issue 11)."""
from __future__ import annotations

import json
from typing import Optional

import typer

from steeropt.cli._app import app, console, out
from steeropt.errors import SteeroptError

judge_app = typer.Typer(no_args_is_help=True, help="Check and calibrate an objective's scores against labels.")
app.add_typer(judge_app, name="judge")

# `--judge NAME` alone: every axis from that judge, yes/no rubrics when it has them, behind the cheap gates.
_AXIS_RUBRICS = {"concept": ("concept_yn", "concept"), "coherency": ("fluency_yn", "fluency"),
                 "relevance": ("relevance_yn", "instruction")}
_GATES = [{"metric": "rep_3", "op": ">", "value": 0.2, "reason": "collapsed"},
          {"metric": "degenerate", "op": ">", "value": 0.5, "reason": "degenerate"}]


def resolve_objective(objective: Optional[str], judge: Optional[str]):
    """(ObjectiveSpec, JudgeSpec or None). --objective (default quickstart); --judge overrides its judge,
    or alone builds an objective scoring every axis with that judge."""
    from steeropt.evaluation.judges import load_judge_spec
    from steeropt.specs.factory import build

    if judge is not None and objective is None:
        jspec = load_judge_spec(judge)
        scores = {}
        for name, choices in _AXIS_RUBRICS.items():
            rub = next((r for r in choices if r in jspec.rubrics), None)
            if rub is not None:
                scores[name] = {"rubric": rub}
        if not scores:
            raise SteeroptError(f"judge '{judge}' has none of the rubrics {sorted(r for c in _AXIS_RUBRICS.values() for r in c)}")
        spec = build("objective", {"name": f"judge-{jspec.name}", "judge": judge, "scores": scores, "gates": _GATES,
                                   "filtered_score": {k: 0.0 for k in scores}, "audit": {"share": 0.0},
                                   "objectives": [{"name": next(iter(scores)), "direction": "maximize"}]})
        return spec, jspec
    spec = build("objective", objective or "quickstart")
    if judge is not None:
        spec = spec.model_copy(update={"judge": judge})
    return spec, (load_judge_spec(spec.judge) if spec.judge else None)


def _setup(objective, judge, model):
    from steeropt.engine.models import load_model
    from steeropt.evaluation.judges import make_judge

    spec, jspec = resolve_objective(objective, judge)
    with console.status(f"loading {model}"):
        lm = load_model(model)
        j = None
        if jspec is not None:
            same = jspec.backend == "local" and jspec.model == model
            j = make_judge(jspec, lm=lm if same else None, cache=None)
    return spec, lm, j


def _fmt(e: dict) -> str:
    if e.get("absent"):
        return "absent"
    if e.get("spearman") is None:
        return f"n/a (n={e.get('n', 0)})"
    lo, hi = e["ci"]
    return f"{e['spearman']:+.3f} [{lo:+.3f}, {hi:+.3f}] n={e['n']}"


@judge_app.command("check")
def check(
    labels: str = typer.Argument(..., help="label file (JSONL: prompt, response, concept, labels{concept, coherency, relevance})"),
    judge: Optional[str] = typer.Option(None, "--judge", help="judge spec; alone: score every axis with it"),
    objective: Optional[str] = typer.Option(None, "--objective", help="objective spec (default: quickstart)"),
    model: str = typer.Option("smollm2-135m-instruct", help="the study's model (cheap metrics, baseline answers)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
):
    """Score every labelled item as a study would (cheap tier, gates, judge); Spearman per axis with a
    bootstrap 95% interval, and each gate's precision/recall for broken text (coherency label 0)."""
    from steeropt.evaluation.validation import check_report, read_labels, score_items

    items = read_labels(labels)
    spec, lm, j = _setup(objective, judge, model)
    with console.status(f"scoring {len(items)} items with objective '{spec.name}'"):
        report = check_report(spec, items, score_items(lm, spec, items, j))
    report["labels"] = labels
    if as_json:
        typer.echo(json.dumps(report, indent=2))  # plain: rich would wrap long strings
        return
    out.print(f"objective {spec.name}, judge {spec.judge or 'none'}: {len(items)} items "
              f"({report['filtered']} filtered, {report['missing']} missing)")
    for axis, e in report["axes"].items():
        out.print(f"  {axis:10s} {e.get('score', '-'):10s} spearman {_fmt(e)}")
    for name, e in report["cheap"].items():
        out.print(f"  cheap {name:20s} vs {e['axis']:9s} {_fmt(e)}")
    for name, g in report["gates"].items():
        f = lambda x: "n/a" if x is None else f"{x:.2f}"  # noqa: E731
        out.print(f"  gate {name:22s} precision {f(g['precision'])} recall {f(g['recall'])} "
                  f"(fired {g['fired']}, broken {g['broken']}, n {g['n']})")


@judge_app.command("calibrate")
def calibrate(
    labels: str = typer.Argument(..., help="calibration label file"),
    out_file: str = typer.Option(..., "--out", help="write the fitted maps here (YAML)"),
    test: Optional[str] = typer.Option(None, "--test", help="held-out label file to report on (else leave-one-concept-out)"),
    judge: Optional[str] = typer.Option(None, "--judge"),
    objective: Optional[str] = typer.Option(None, "--objective"),
    model: str = typer.Option("smollm2-135m-instruct"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Fit a monotone map per axis (raw score + cheap metrics -> labels); report agreement only out of fold."""
    from steeropt.evaluation import calibration
    from steeropt.evaluation.validation import baseline_for, read_labels, score_items

    items = read_labels(labels)
    test_items = read_labels(test) if test else None
    spec, lm, j = _setup(objective, judge, model)
    with console.status(f"scoring {len(items) + len(test_items or [])} items"):
        base = baseline_for(lm, items + (test_items or []))
        recs = score_items(lm, spec, items, j, baseline=base, judge_all=True)
        trecs = score_items(lm, spec, test_items, j, baseline=base, judge_all=True) if test_items else None
    cals, report = calibration.calibrate(spec, items, recs, test_items, trecs)
    calibration.save(out_file, cals, {"objective": spec.name, "judge": spec.judge, "model": model, "labels": labels,
                                      "evaluation": {"method": report["method"], "test": test,
                                                     **{a: {k: e.get(k) for k in ("spearman", "ci", "n")}
                                                        for a, e in report["axes"].items()}}})
    report.update(out=out_file, objective=spec.name, judge=spec.judge)
    if as_json:
        typer.echo(json.dumps(report, indent=2))  # plain: rich would wrap long strings
        return
    out.print(f"wrote {out_file}; agreement {report['method']} (never the training fit):")
    for axis, e in report["axes"].items():
        out.print(f"  {axis:10s} spearman {_fmt(e)}")
