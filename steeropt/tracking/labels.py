"""Labels from MLflow: the HUMAN feedback people add to a study's sample traces (tracking.traces), read as the
same LabelItems as a JSONL label file (evaluation.validation.read_labels), and written out in that format.

A label is HUMAN feedback named concept, coherency (or fluency) or relevance with the value 0, 1 or 2
(bench/judge_quality/labels/GUIDE.md). Feedback from an LLM_JUDGE or CODE source (the study's own scores), other
names, and traces no person labelled are not labels. When a trace has several HUMAN values for one name (a person
changed their mind, or two people labelled), the latest valid one counts.

    items = read_mlflow_labels("quickstart")                 # tracking URI: MLflow's default
    write_labels_jsonl(items, "labels/mine.jsonl")           # readable by read_labels
"""
from __future__ import annotations

import json
from pathlib import Path

from steeropt.evaluation.validation import LABELS, LabelError, LabelItem
from steeropt.tracking.client import SAMPLE_TAG, STUDY_TAG, TRIAL_TAG

ALIASES = {"fluency": "coherency"}  # what a person may type for the coherency axis


def _label_value(v, where: str) -> int:
    """0, 1 or 2 from what the UI stores (an int, a float such as 2.0, or a string "2")."""
    try:
        x = float(v) if not isinstance(v, bool) else None
    except (TypeError, ValueError):
        x = None
    if x is None or x not in (0.0, 1.0, 2.0):
        raise LabelError(f"{where}: expected 0, 1 or 2, got {v!r}")
    return int(x)


def _human_labels(trace_info, where: str) -> tuple[dict[str, int], dict[str, str]]:
    """(labels, who gave each) from one trace's HUMAN feedback."""
    latest: dict[str, tuple[int, object]] = {}
    for a in trace_info.assessments or []:
        if getattr(a.source, "source_type", None) != "HUMAN" or getattr(a, "valid", True) is False:
            continue
        name = ALIASES.get(a.name, a.name)
        if name not in LABELS or getattr(a, "feedback", None) is None:
            continue
        when = a.last_update_time_ms or a.create_time_ms or 0
        if name not in latest or when >= latest[name][0]:
            latest[name] = (when, a)
    labels = {k: _label_value(a.feedback.value, f"{where}: HUMAN feedback '{a.name}'") for k, (_, a) in latest.items()}
    return labels, {k: a.source.source_id for k, (_, a) in latest.items()}


def read_mlflow_labels(experiment: str, tracking_uri: str | None = None) -> list[LabelItem]:
    """Every sample trace of the experiment with at least one HUMAN label, as LabelItems (oldest first)."""
    from mlflow import MlflowClient  # heavy optional dependency

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LabelError(f"no MLflow experiment '{experiment}' at {client.tracking_uri}")
    found, token = [], None
    for _ in range(10_000):  # pages of 500: bounded
        page = client.search_traces([exp.experiment_id], max_results=500,
                                    page_token=token, include_spans=False, order_by=["timestamp_ms ASC"])
        found += [t.info for t in page if SAMPLE_TAG in t.info.tags]
        token = page.token
        if not token:
            break
    items = []
    for info in found:
        where = f"{client.tracking_uri} experiment '{experiment}', trace {info.trace_id}"
        labels, who = _human_labels(info, where)
        if not labels:
            continue
        trace = client.get_trace(info.trace_id, display=False)  # the full texts (previews are cut)
        inputs = json.loads(trace.data.request or "{}")
        outputs = json.loads(trace.data.response or "{}")
        tags = info.tags
        if not isinstance(inputs.get("prompt"), str) or not isinstance(outputs.get("steered"), str):
            raise LabelError(f"{where}: not a steeropt sample trace (inputs.prompt / outputs.steered missing)")
        items.append(LabelItem(
            prompt=inputs["prompt"], response=outputs["steered"], concept=tags.get("steeropt.concept") or "concept",
            labels=labels, concept_description=tags.get("steeropt.concept_description", ""), line=len(items) + 1,
            extra={"trace_id": info.trace_id, "study": tags.get(STUDY_TAG), "trial": int(tags[TRIAL_TAG]),
                   "sample": int(tags[SAMPLE_TAG]), "family": tags.get("steeropt.family"),
                   "alpha": tags.get("steeropt.alpha"), "controller": tags.get("steeropt.controller"),
                   "finished": tags.get("steeropt.ended") == "eos" or tags.get("steeropt.finished") == "true", "labelled_by": who, "source": "mlflow"}))
    if not items:
        raise LabelError(f"{client.tracking_uri} experiment '{experiment}': no trace has HUMAN feedback named "
                         f"{', '.join(LABELS)} yet (label some after `steeropt review`)")
    return items


def write_labels_jsonl(items: list[LabelItem], path: str | Path) -> Path:
    """The project's JSONL label format (one object per line: prompt, response, concept, labels, ...)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": it.extra.get("trace_id", it.line), "prompt": it.prompt, "response": it.response, "concept": it.concept,
             "concept_description": it.concept_description, "labels": it.labels,
             **{k: v for k, v in it.extra.items() if k != "trace_id"}, "trace_id": it.extra.get("trace_id")}
            for it in items]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p
