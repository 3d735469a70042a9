"""`steeropt judge check|calibrate|export`: how well an objective's scores agree with hand labels, from a JSONL
label file or from the HUMAN feedback on a study's MLflow traces (`--from-mlflow EXPERIMENT`)."""
from __future__ import annotations

import json
from typing import Optional

import typer

from steeropt.cli._app import app, console, out, sub_app
from steeropt.errors import SteeroptError

judge_app = sub_app("Check and calibrate an objective's scores against labels.")
app.add_typer(judge_app, name="judge")

# `--judge NAME` alone: every axis from that judge, yes/no rubrics when it has them, on every item: no cheap gate
# holds on unseen concepts (bench/judge_quality/gates.md), and a gate must never floor the concept.
_AXIS_RUBRICS = {"concept": ("concept_yn", "concept"), "coherency": ("fluency_yn", "fluency"),
                 "relevance": ("relevance_yn", "instruction")}


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
        spec = build("objective", {"name": f"judge-{jspec.name}", "judge": judge, "scores": scores, "gates": [],
                                   "audit": {"share": 0.0},
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
            # the judge's own cache (its spec's `cache` file in the working directory): a second check or a
            # calibration of the same items asks the judge nothing again
            j = make_judge(jspec, lm=lm if same else None)
    return spec, lm, j


def _load_labels(labels: Optional[str], from_mlflow: Optional[str], tracking_uri: Optional[str], what: str = "LABELS"):
    """(items, where they came from): exactly one of a label file or an MLflow experiment."""
    from steeropt.evaluation.validation import read_labels

    if (labels is None) == (from_mlflow is None):
        raise SteeroptError(f"give either a label file ({what}) or --from-mlflow EXPERIMENT, not {'both' if labels else 'neither'}")
    if labels is not None:
        return read_labels(labels), labels
    from steeropt.tracking.labels import read_mlflow_labels

    items = read_mlflow_labels(from_mlflow, tracking_uri)
    return items, f"mlflow:{from_mlflow}" + (f"@{tracking_uri}" if tracking_uri else "")


_FROM_MLFLOW = typer.Option(None, "--from-mlflow", metavar="EXPERIMENT",
                            help="read the labels from HUMAN feedback on this MLflow experiment's sample traces")
_TRACKING_URI = typer.Option(None, "--tracking-uri", help="MLflow tracking URI for --from-mlflow (default: MLflow's, "
                             "$MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")


def _fmt(e: dict) -> str:
    if e.get("absent"):
        return "absent"
    if e.get("spearman") is None:
        return f"n/a (n={e.get('n', 0)})"
    lo, hi = e["ci"]
    return f"{e['spearman']:+.3f} [{lo:+.3f}, {hi:+.3f}] n={e['n']}"


@judge_app.command("check")
def check(
    labels: Optional[str] = typer.Argument(None, help="label file (JSONL: prompt, response, concept, "
                                           "labels{concept, coherency, relevance})"),
    from_mlflow: Optional[str] = _FROM_MLFLOW,
    tracking_uri: Optional[str] = _TRACKING_URI,
    judge: Optional[str] = typer.Option(None, "--judge", help="judge spec; alone: score every axis with it"),
    objective: Optional[str] = typer.Option(None, "--objective", help="objective spec (default: quickstart)"),
    model: str = typer.Option("smollm2-135m-instruct", help="the study's model (cheap metrics, baseline answers)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
):
    """Score every labelled item as a study would (cheap tier, gates, judge); Spearman per axis with a
    bootstrap 95% interval, and each gate's precision/recall for broken text (coherency label 0).

    \b
    Example:
      steeropt judge check labels/test.jsonl --objective quickstart
      steeropt judge check --from-mlflow quickstart
    """
    from steeropt.evaluation.validation import check_report, score_items

    items, source = _load_labels(labels, from_mlflow, tracking_uri)
    spec, lm, j = _setup(objective, judge, model)
    with console.status(f"scoring {len(items)} items with objective '{spec.name}'"):
        report = check_report(spec, items, score_items(lm, spec, items, j))
    report["labels"] = source
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
        for c, pc in g.get("per_concept", {}).items():
            out.print(f"    {c:24s} precision {f(pc['precision'])} recall {f(pc['recall'])} "
                      f"(fired {pc['fired']}, broken {pc['broken']}, n {pc['n']})")


@judge_app.command("calibrate")
def calibrate(
    labels: Optional[str] = typer.Argument(None, help="calibration label file"),
    out_file: str = typer.Option(..., "--out", help="write the fitted maps here (YAML)"),
    from_mlflow: Optional[str] = _FROM_MLFLOW,
    tracking_uri: Optional[str] = _TRACKING_URI,
    test: Optional[str] = typer.Option(None, "--test", help="held-out label file to report on (else leave-one-concept-out)"),
    judge: Optional[str] = typer.Option(None, "--judge"),
    objective: Optional[str] = typer.Option(None, "--objective"),
    model: str = typer.Option("smollm2-135m-instruct"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Fit a monotone map per axis (raw score + cheap metrics -> labels); report agreement only out of fold.

    \b
    Example:
      steeropt judge calibrate labels.jsonl --out mine.calibration.yaml
    """
    from steeropt.evaluation import calibration
    from steeropt.evaluation.validation import baseline_for, needs_baseline, read_labels, score_items

    items, labels = _load_labels(labels, from_mlflow, tracking_uri)
    test_items = read_labels(test) if test else None
    spec, lm, j = _setup(objective, judge, model)
    with console.status(f"scoring {len(items) + len(test_items or [])} items"):
        base = baseline_for(lm, items + (test_items or [])) if needs_baseline(spec, lm, j) else None
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
        out.print(f"  {axis:10s} spearman {_fmt(e)}" + (f"   leave-one-concept-out on the calibration labels {_fmt(e['loco'])}"
                                                       if e.get("loco") else ""))
        for c, f in (e.get("loco") or e).get("folds", {}).items():
            out.print(f"    held out {c:20s} {_fmt(f)}")


@judge_app.command("export")
def export(
    from_mlflow: str = typer.Option(..., "--from-mlflow", metavar="EXPERIMENT", help="the MLflow experiment to read"),
    out_file: str = typer.Option(..., "--out", help="write the labels here (JSONL, the format `judge check` reads)"),
    tracking_uri: Optional[str] = _TRACKING_URI,
):
    """Write the HUMAN feedback on an experiment's sample traces as a JSONL label file (one labelled sample a
    line).

    \b
    Example:
      steeropt judge export --from-mlflow quickstart --out labels/quickstart.jsonl
    """
    from collections import Counter

    from steeropt.tracking.labels import read_mlflow_labels, write_labels_jsonl

    items = read_mlflow_labels(from_mlflow, tracking_uri)
    write_labels_jsonl(items, out_file)
    per_axis = Counter(k for it in items for k in it.labels)
    out.print(f"wrote {len(items)} labelled samples to {out_file} ("
              + ", ".join(f"{k} {v}" for k, v in sorted(per_axis.items())) + ")")
