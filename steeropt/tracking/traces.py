"""Samples as MLflow traces: each trial's samples (the spec's `traces` share) are logged as traces in the study's
experiment, linked to the trial's run: prompt, steered and unsteered response, tags for study, trial, family,
controller and α; the scores as feedback (`sample_feedback`). A person adds HUMAN feedback named concept /
coherency / relevance (0/1/2, bench/judge_quality/labels/GUIDE.md) in the UI, through a review queue
(`review_queue`); tracking.labels reads it back as labels.

The functions take the study's Tracker (tracking.tracker) as their first argument.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from steeropt.evaluation.objectives.axes import label_name
from steeropt.records import TrialRecord
from steeropt.redact import scrub
from steeropt.tracking.client import SAMPLE_TAG, STUDY_TAG, TRIAL_TAG, bounded_http
from steeropt.tracking.notes import trace_value_tags
from steeropt.tracking.run_dir import read_baseline

LABEL_SCALE = "0, 1 or 2 (bench/judge_quality/labels/GUIDE.md)"
# The questions a review queue asks, one per label (GUIDE.md in one line each); judged from the prompt and the
# steered answer only.
LABEL_QUESTIONS = {
    "concept": "Is the concept there? 0 absent (generic words do not count), 1 hinted or a passing mention, "
               "2 named and talked about.",
    "coherency": "Is it readable English, whatever the topic? 0 token soup or a loop, 1 readable in parts but "
                 "damaged, 2 normal English (a cut-off last sentence is fine).",
    "relevance": "Does it address the user's prompt? 0 no (or unreadable), 1 partly or drifting, 2 answers it.",
}
CARD_KEYS = ("rubric", "rubric_sha", "calibrated", "sha256", "metric", "axis")  # judge card fields kept as metadata


def traced(study: str, number: int, index: int, share: float) -> bool:
    """Is this sample in the traced share? A fixed hash of (study, trial, sample): every worker and every resume
    picks the same samples."""
    digest = hashlib.sha256(f"{study}/{number}/{index}".encode()).digest()  # well mixed (crc32 of near strings is not)
    return share >= 1.0 or int.from_bytes(digest[:8], "big") < share * 2**64


def log_traces(tracker, trial, records: list[dict], run_id: str | None, runs_dir: Path) -> list[str]:
    """One trace per sample record of a stored trial (FrozenTrial), in the study's experiment and linked to the
    trial's run: prompt, steered and unsteered response, tags, and the scores as feedback. Returns trace ids.

    The feedback is attached before the trace ends, so MLflow stores trace and feedback in one export (and in
    the background: MLflow's async trace logging; `finish` flushes)."""
    import mlflow  # heavy optional dependency
    from mlflow.entities import SpanType
    from mlflow.entities.trace_location import MlflowExperimentLocation

    if mlflow.get_tracking_uri() != tracker.client.tracking_uri:  # traces go where the runs go
        flush_traces()
        mlflow.set_tracking_uri(tracker.client.tracking_uri)
    base = read_baseline(runs_dir)
    records = scrub(records)
    concept = tracker.context.get("concept") or {}
    rec = TrialRecord.from_trial(trial)
    raw = rec.raw_alphas
    controllers = sorted({k.split(".")[1] for k in raw if k.count(".") >= 2})
    ids = []
    for r in records:
        tags = {STUDY_TAG: tracker.study_name, TRIAL_TAG: str(trial.number), SAMPLE_TAG: str(r.get("index", 0)),
                "steeropt.family": str(r.get("family")), "steeropt.controller": ",".join(controllers) or "none",
                "steeropt.alpha": json.dumps(trial.params, sort_keys=True)[:1000],
                "steeropt.concept": str(concept.get("name", "")),
                "steeropt.concept_description": str(concept.get("description", ""))[:1000],
                # how the answer ended: "eos" (the model stopped) or "token_limit" (cut at max_new_tokens)
                "steeropt.ended": "eos" if r.get("finished") else "token_limit",
                "steeropt.filtered": str(bool(r.get("filtered"))).lower(),
                **trace_value_tags(trial.params, r.get("scores") or {})}
        unsteered = base.get((r.get("family"), r.get("prompt")))
        with mlflow.start_span(f"trial-{trial.number} {r.get('family')}", span_type=SpanType.LLM,
                               trace_destination=MlflowExperimentLocation(tracker.experiment_id)) as span:
            span.set_inputs({"prompt": r["prompt"]})
            span.set_outputs({"steered": r["text"], "unsteered": unsteered})
            span.set_attributes({"params": trial.params, "raw_alphas": raw, "n_tokens": len(r.get("token_ids") or []),
                                 **({"alphas": rec.alphas} if rec.alphas else {})})
            mlflow.update_current_trace(tags=tags, request_preview=r["prompt"][:1000], response_preview=r["text"][:1000],
                                        metadata={"mlflow.sourceRun": run_id} if run_id else None)
            for fb in sample_feedback(r, tracker.context.get("card") or {}, tracker.context.get("objective") or {}):
                mlflow.log_feedback(trace_id=span.trace_id, **fb)
            ids.append(span.trace_id)
    return ids


def try_traces(tracker, trial, records, run_id, runs_dir) -> None:
    """Traces are for review: one that cannot be written is a warning, never a failed trial."""
    try:
        log_traces(tracker, trial, records, run_id, runs_dir)
    except Exception as exc:  # noqa: BLE001
        logging.getLogger(__name__).warning("sample traces of trial %s not logged to MLflow: %s: %s",
                                            trial.number, type(exc).__name__, str(exc)[:200])


def sample_traces(tracker) -> dict[tuple[int, int], object]:
    """(trial, sample index) -> TraceInfo of the study's sample traces already logged."""
    found, token = {}, None
    for _ in range(10_000):  # pages of 500: bounded
        page = tracker.client.search_traces([tracker.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{tracker.study_name}'",
                                         max_results=500, page_token=token, include_spans=False)
        for t in page:
            tags = t.info.tags
            if TRIAL_TAG in tags and SAMPLE_TAG in tags:
                found[(int(tags[TRIAL_TAG]), int(tags[SAMPLE_TAG]))] = t.info
        token = page.token
        if not token:
            break
    return found


def review_queue(tracker, name: str, trace_ids: list[str]) -> str | None:
    """An MLflow review queue (MLflow 3.14+, "Review" in the UI's GenAI mode) holding these traces, with one
    question per label (LABEL_QUESTIONS); the answers are HUMAN feedback of those names. Returns the queue id,
    or None where this MLflow has no review queues (the traces' review tag then says which to label)."""
    import mlflow

    try:
        from mlflow.genai import label_schemas as ls
        from mlflow.genai import review_queues as rq
    except ImportError:
        return None
    if mlflow.get_tracking_uri() != tracker.client.tracking_uri:
        mlflow.set_tracking_uri(tracker.client.tracking_uri)
    try:
        have = {x.name: x for x in ls.list_label_schemas(tracker.experiment_id, max_results=100)}
        ids = []
        for label, instruction in reversed(LABEL_QUESTIONS.items()):  # the form lists the newest first
            schema = have.get(label) or ls.create_label_schema(
                label, type="feedback", input=ls.InputCategorical(options=["0", "1", "2"]), instruction=instruction,
                enable_comment=True, experiment_id=tracker.experiment_id)
            ids.append(schema.schema_id)
        queue = next((q for q in rq.list_review_queues(experiment_id=tracker.experiment_id, max_results=1000)
                      if q.name == name), None) \
            or rq.create_review_queue(name, queue_type="custom", schema_ids=ids, experiment_id=tracker.experiment_id)
        rq.add_items_to_review_queue(queue.queue_id, item_ids=list(trace_ids))
        return queue.queue_id
    except Exception as exc:  # noqa: BLE001  (an older server, an experimental API that changed: tags still work)
        logging.getLogger(__name__).warning("no MLflow review queue: %s: %s", type(exc).__name__, str(exc)[:200])
        return None


def sample_feedback(rec: dict, card: dict, objective: dict) -> list[dict]:
    """The feedback (mlflow.log_feedback keywords) for one sample record of the objective stack.

    A score a judge call produced or fed (a rubric, or a calibrated map of a judge's score) comes from LLM_JUDGE
    with the judge's identity and the rubric's hash; everything else (cheap metrics, calibrated cheap-tier maps,
    the floor a gate gives a filtered sample) from CODE: that is what computed it. Missing and filtered scores
    are feedback with an error, never a value. The gate decision and the cheap-tier metrics are CODE feedback.
    objective: {"name", "filtered_score"} of the study's objective."""
    from mlflow.entities import AssessmentError, AssessmentSource, AssessmentSourceType

    code = AssessmentSource(AssessmentSourceType.CODE, f"steeropt/{objective.get('name') or 'objective'}")
    floors = objective.get("filtered_score") or {}
    reasons = rec.get("filter_reasons") or []
    out = []
    for name, value in (rec.get("scores") or {}).items():
        src = (card.get("scores") or {}).get(name) or {}  # the judge card's entry: where this score comes from
        meta = {"score": name, "scale": "0-1 (about label / 2)",
                **{k: str(src[k]) for k in CARD_KEYS if src.get(k) is not None}}
        judged = (rec.get("judge") or {}).get(name)
        source = code
        if rec.get("filtered") and name in floors:  # the gate's floor, not a measurement (an audit's judging aside)
            meta["floor"] = "gate"
        elif judged is not None:
            source = AssessmentSource(AssessmentSourceType.LLM_JUDGE, str(card.get("judge") or "judge"))
            meta |= {"judge_score": str(judged.get("score")), "cached": str(judged.get("cached"))}
        fb = {"name": label_name(name), "source": source, "metadata": meta}
        if value is None:
            why = (rec.get("missing") or {}).get(name)
            kind, msg = ("MISSING", why) if why else ("FILTERED", f"filtered ({', '.join(reasons)}): not judged")
            fb["error"] = AssessmentError(error_code=kind, error_message=msg)
        else:
            fb["value"] = float(value)
        out.append(fb)
    out.append({"name": "gate", "value": "filtered" if rec.get("filtered") else "pass", "source": code,
                "rationale": ", ".join(reasons) or None, "metadata": {"audited": str(bool(rec.get("audited")))}})
    cheap = {k: float(f"{v:.4g}") for k, v in (rec.get("metrics") or {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if cheap:
        out.append({"name": "cheap_tier", "value": cheap, "source": code})
    return out


def flush_traces() -> None:
    """Wait for the traces MLflow exports in the background, with bounded HTTP retries (a tracking server that
    went away costs seconds per pending trace, not MLflow's default minutes)."""
    import mlflow

    with bounded_http():
        mlflow.flush_trace_async_logging()
