"""MLflow tracking: one parent run per study, one nested run per trial, study artifacts kept current.

Trials are logged from what the study storage holds (`log_stored`), so a trial told by this process, one
failed as stale by it, and one found missing after a crash (`sync`) are logged the same way, once each.

The tracking URI is MLflow's: None uses MLflow's default (``sqlite:///mlflow.db`` in the working
directory), ``http://host:port`` a tracking server, any other URI its store. Writes go through the
explicit ``MlflowClient`` so several studies and workers can share a process or a server.

Samples as traces: each trial's samples (the spec's `traces` share) are logged as MLflow traces in the
study's experiment, linked to the trial's run: prompt, steered and unsteered response, tags for study, trial,
family, controller and α; the scores as feedback (`sample_feedback`). A person adds HUMAN feedback named
concept / coherency / relevance (0/1/2, bench/judge_quality/labels/GUIDE.md) in the UI; evaluation.mlflow_labels
reads it back as labels.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

from steeropt.errors import SteeroptError
from steeropt.redact import redact, scrub
from steeropt.runner.checks import store_lock
from steeropt.runner.run_notes import study_note, trace_value_tags, trial_note

STUDY_TAG = "steeropt.study"  # an MLflow tag name: stable across releases (resume finds old runs)
TRIAL_TAG = "steeropt.trial"
KIND_TAG = "steeropt.kind"
SAMPLE_TAG = "steeropt.sample"  # a trace's sample index in its trial's samples file
REVIEW_TAG = "steeropt.review"  # set by `steeropt review` on the traces worth labelling (value: the round)
# MLflow UIs 3.0-3.x read this experiment tag to open an experiment on its runs ("custom_model_development") rather
# than the GenAI overview; 3.17 reads the URL's ?workflowType= (or the toggle's saved choice) instead: see ui_url.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
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
# bounded HTTP retries for study-artifact refreshes (MLflow reads these at each request)
_ARTIFACT_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _client(tracking_uri: str | None):
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _clean_params(params: dict) -> dict:
    return {redact(str(k))[:250]: redact(str(v))[:6000] for k, v in params.items()}


def _finite_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _probe(tracking_uri: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast on a tracking server nobody answers at (MLflow's client would retry for minutes).
    Any HTTP answer, even an error status, means the server is there."""
    import urllib.error
    import urllib.request

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise SteeroptError(redact(f"tracking URI {uri} is unreachable: {type(why).__name__}: {why}")) from None


class Tracker:
    """Logs a study to MLflow. Reuses the study's parent run when a study is resumed."""

    def __init__(self, tracking_uri: str | None, experiment: str, study_name: str, *, traces: float | None = None):
        """traces: share of samples logged as traces; None = the `traces` of the resolved spec given to start()."""
        from mlflow.entities import Metric, Param, RunTag  # noqa: F401  (fail early if mlflow is broken)

        self.tracking_uri, self.study_name, self.trace_share = tracking_uri, study_name, traces
        self.context: dict = {}  # what traces need about the study (concept, judge card), set by start() / attach()
        _probe(tracking_uri)
        try:
            with store_lock(tracking_uri):  # MLflow creates / migrates a fresh SQLite store on first use: once
                self.client = _client(tracking_uri)
                exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(experiment, tags=dict([EXPERIMENT_KIND]))
                except Exception:  # another worker created it at the same moment?
                    exp = self.client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
            if exp is not None:
                self.experiment_id = exp.experiment_id
                if EXPERIMENT_KIND[0] not in exp.tags:  # an older study's experiment; a kind someone chose stays
                    self.client.set_experiment_tag(self.experiment_id, *EXPERIMENT_KIND)
        except Exception as exc:
            raise SteeroptError(redact(f"tracking URI {tracking_uri or '(MLflow default)'} refused the study: "
                                       f"{type(exc).__name__}: {str(exc)[:300]}")) from exc
        self.parent_id: str | None = None

    def _search(self, filter_string: str, max_results: int = 5000):
        return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=max_results)

    def start(self, params: dict, tags: dict, artifacts: dict[str, str]) -> str:
        """Find or create the study's parent run; `artifacts` maps file name -> text content.
        Raises SteeroptError when the tracking store refuses the writes."""
        self._set_context(artifacts)
        try:
            return self._start(params, tags, artifacts)
        except SteeroptError:
            raise
        except Exception as exc:
            raise SteeroptError(redact(f"tracking URI {self.tracking_uri or '(MLflow default)'} refused the study: "
                                       f"{type(exc).__name__}: {str(exc)[:300]}")) from exc

    def _parents(self):
        runs = self._search(f"tags.`{STUDY_TAG}` = '{self.study_name}' and tags.`{KIND_TAG}` = 'study'")
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    def _start(self, params: dict, tags: dict, artifacts: dict[str, str]) -> str:
        runs = self._parents()
        if runs:
            self.parent_id = runs[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            return self.parent_id
        run = self.client.create_run(self.experiment_id, run_name=self.study_name,
                                     tags=scrub({STUDY_TAG: self.study_name, KIND_TAG: "study", **tags}))
        self.parent_id = run.info.run_id
        first = self._parents()[0].info.run_id  # two workers starting a fresh study at once: the oldest wins
        if first != self.parent_id:
            self.client.delete_run(self.parent_id)
            self.parent_id = first
            return first
        from mlflow.entities import Param

        self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in _clean_params(params).items()])
        self.log_texts(self.parent_id, artifacts)
        return self.parent_id

    def log_texts(self, run_id: str, files: dict[str, str], artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in files.items():
                p = Path(tmp) / name
                p.write_text(redact(text))
                self.client.log_artifact(run_id, str(p), artifact_path)

    def logged_trials(self) -> set[int]:
        runs = self._search(f"tags.`{STUDY_TAG}` = '{self.study_name}' and tags.`{KIND_TAG}` = 'trial'")
        return {int(r.data.tags[TRIAL_TAG]) for r in runs}

    def log_trial(self, number: int, params: dict, metrics: dict, tags: dict, samples_jsonl: str | None) -> str:
        """A nested run for one finished trial: parameters, objective values, counts, samples."""
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        run = self.client.create_run(
            self.experiment_id, run_name=f"trial-{number}",
            tags={"mlflow.parentRunId": self.parent_id, STUDY_TAG: self.study_name, KIND_TAG: "trial",
                  TRIAL_TAG: str(number), **{k: redact(str(v))[:5000] for k, v in tags.items()}})
        now = get_current_time_millis()
        self.client.log_batch(
            run.info.run_id, params=[Param(k, v) for k, v in _clean_params(params).items()],
            metrics=[Metric(k, v, now, 0) for k, v in _finite_metrics(metrics).items()])
        if samples_jsonl is not None:
            self.log_texts(run.info.run_id, {"samples.jsonl": samples_jsonl})
        self.client.set_terminated(run.info.run_id, "FINISHED" if tags.get("state") != "FAIL" else "FAILED")
        # stepped copies on the parent, so the study run alone shows progress over trials
        self.client.log_batch(self.parent_id, metrics=[Metric(f"trial/{k}", v, now, number)
                                                       for k, v in _finite_metrics(metrics).items()])
        return run.info.run_id

    def log_stored(self, trial, runs_dir: Path) -> str:
        """A finished Optuna trial (FrozenTrial) as a nested run: params and raw α, the values, counts and
        intervals the runner stored as user attrs, state and failure reason, and its samples file if any."""
        from steeropt.search.optimizers.base import failed_reason

        ua = trial.user_attrs
        metrics = dict(ua.get("values") or {})
        metrics |= {f"count.{k}": v for k, v in (ua.get("counts") or {}).items() if isinstance(v, (int, float))}
        for fam, d in (ua.get("families") or {}).items():
            metrics |= {f"{fam}.{k}": v for k, v in (d.get("values") or {}).items()}
        for k, iv in (ua.get("intervals") or {}).items():
            if iv:
                metrics |= {f"{k}.ci_low": iv[0], f"{k}.ci_high": iv[1]}
        params = dict(trial.params) | {f"raw.{k}": v for k, v in (ua.get("raw_alphas") or {}).items()}
        state = "COMPLETE" if trial.state.name == "COMPLETE" else "FAIL"
        reason = failed_reason(trial)
        tags = {"state": state, **({"failed_reason": reason} if reason else {}), "feasible": str(ua.get("feasible")),
                "mlflow.note.content": trial_note(trial.params, ua.get("values") or {}, ua.get("feasible"), reason,
                                                  (self.context.get("objective") or {}).get("constraints"))}
        path = samples_file(runs_dir, trial.number)
        text = redact(path.read_text()) if path.exists() else None
        run_id = self.log_trial(trial.number, params, metrics, tags, text)
        if text and self.trace_share:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
            keep = [r for r in records if traced(self.study_name, trial.number, r.get("index", 0), self.trace_share)]
            self._try_traces(trial, keep, run_id, runs_dir)
        return run_id

    def sync(self, trials, runs_dir: Path, min_age_s: float = 0.0) -> list[int]:
        """Log the finished trials MLflow is missing (a crash between Optuna's tell and MLflow's log).
        min_age_s: only trials finished that long ago (a live worker is still logging its recent ones)."""
        logged = self.logged_trials()
        cutoff = _dt.datetime.now() - _dt.timedelta(seconds=min_age_s)
        missing = [t for t in trials if t.state.is_finished() and t.number not in logged
                   and not (min_age_s and (t.datetime_complete or cutoff) > cutoff)]
        for t in missing:
            self.log_stored(t, runs_dir)
        return [t.number for t in missing]

    def log_study_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.time import get_current_time_millis

        now = get_current_time_millis()
        self.client.log_batch(self.parent_id, metrics=[Metric(k, v, now, step) for k, v in _finite_metrics(metrics).items()])

    def log_files(self, paths: list[str | os.PathLike], artifact_path: str | None = None) -> None:
        """Refresh the study's files on the parent run. They are rewritten after every batch, so a failed
        upload is only a stale copy until the next one: warn and go on. MLflow's default HTTP retries
        (7, up to 120 s each) can stall a worker for many minutes on one upload; these get 2 x 30 s."""
        import logging

        saved = {k: os.environ.get(k) for k in _ARTIFACT_HTTP}
        os.environ.update(_ARTIFACT_HTTP)
        try:
            note = study_note(paths)  # what the study found so far, on the run page
            if note:
                self.client.set_tag(self.parent_id, "mlflow.note.content", redact(note)[:5000])
            for p in paths:
                self.client.log_artifact(self.parent_id, str(p), artifact_path)
        except Exception as exc:  # noqa: BLE001  (any transport error: the next refresh tries again)
            logging.getLogger(__name__).warning("study artifacts not refreshed in MLflow: %s: %s",
                                                type(exc).__name__, str(exc)[:200])
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)
        if self.trace_share:
            flush_traces()

    # ---- samples as traces ------------------------------------------------------------------------
    def _set_context(self, artifacts: dict[str, str]) -> None:
        """Concept, objective, judge card and trace share from what the study records about itself (the resolved
        spec and judge_card.json of its parent run)."""
        import yaml

        resolved = yaml.safe_load(artifacts.get("study.yaml") or "{}") or {}
        study = resolved.get("study") or {}
        objective = resolved.get("objective") or {}
        self.context = {"concept": study.get("concept") or {}, "card": scrub(json.loads(artifacts.get("judge_card.json") or "{}")),
                        "objective": {"name": objective.get("name"), "filtered_score": objective.get("filtered_score") or {},
                                      "constraints": objective.get("constraints") or []}}
        if self.trace_share is None:
            self.trace_share = float(study.get("traces", 0.0))

    def attach(self) -> str:
        """Find the study's parent run (for a command run after the study, e.g. `steeropt review`) and read the
        study's context from its artifacts. Raises SteeroptError when the study was never logged here."""
        runs = self._parents()
        if not runs:
            raise SteeroptError(f"no MLflow run of study '{self.study_name}' at {self.client.tracking_uri}: run the "
                                "study with tracking on first")
        self.parent_id = runs[0].info.run_id
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # two small files: no progress bars
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for name in ("study.yaml", "judge_card.json"):
                try:
                    files[name] = Path(self.client.download_artifacts(self.parent_id, name, tmp)).read_text()
                except Exception:  # noqa: BLE001  (an older study without it: traces carry less)
                    pass
        self._set_context(files)
        return self.parent_id

    def trial_run_ids(self) -> dict[int, str]:
        runs = self._search(f"tags.`{STUDY_TAG}` = '{self.study_name}' and tags.`{KIND_TAG}` = 'trial'")
        return {int(r.data.tags[TRIAL_TAG]): r.info.run_id for r in runs}

    def sample_traces(self) -> dict[tuple[int, int], object]:
        """(trial, sample index) -> TraceInfo of the study's sample traces already logged."""
        found, token = {}, None
        for _ in range(10_000):  # pages of 500: bounded
            page = self.client.search_traces([self.experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{self.study_name}'",
                                             max_results=500, page_token=token, include_spans=False)
            for t in page:
                tags = t.info.tags
                if TRIAL_TAG in tags and SAMPLE_TAG in tags:
                    found[(int(tags[TRIAL_TAG]), int(tags[SAMPLE_TAG]))] = t.info
            token = page.token
            if not token:
                break
        return found

    def review_queue(self, name: str, trace_ids: list[str]) -> str | None:
        """An MLflow review queue (MLflow 3.14+, "Review" in the UI's GenAI mode) holding these traces, with one
        question per label (LABEL_QUESTIONS); the answers are HUMAN feedback of those names. Returns the queue id,
        or None where this MLflow has no review queues (the traces' review tag then says which to label)."""
        import logging

        import mlflow

        try:
            from mlflow.genai import label_schemas as ls
            from mlflow.genai import review_queues as rq
        except ImportError:
            return None
        if mlflow.get_tracking_uri() != self.client.tracking_uri:
            mlflow.set_tracking_uri(self.client.tracking_uri)
        try:
            have = {x.name: x for x in ls.list_label_schemas(self.experiment_id, max_results=100)}
            ids = []
            for label, instruction in reversed(LABEL_QUESTIONS.items()):  # the form lists the newest first
                schema = have.get(label) or ls.create_label_schema(
                    label, type="feedback", input=ls.InputCategorical(options=["0", "1", "2"]), instruction=instruction,
                    enable_comment=True, experiment_id=self.experiment_id)
                ids.append(schema.schema_id)
            queue = next((q for q in rq.list_review_queues(experiment_id=self.experiment_id, max_results=1000)
                          if q.name == name), None) \
                or rq.create_review_queue(name, queue_type="custom", schema_ids=ids, experiment_id=self.experiment_id)
            rq.add_items_to_review_queue(queue.queue_id, item_ids=list(trace_ids))
            return queue.queue_id
        except Exception as exc:  # noqa: BLE001  (an older server, an experimental API that changed: tags still work)
            logging.getLogger(__name__).warning("no MLflow review queue: %s: %s", type(exc).__name__, str(exc)[:200])
            return None

    def _try_traces(self, trial, records, run_id, runs_dir) -> None:
        """Traces are for review: one that cannot be written is a warning, never a failed trial."""
        import logging

        try:
            self.log_traces(trial, records, run_id, runs_dir)
        except Exception as exc:  # noqa: BLE001
            logging.getLogger(__name__).warning("sample traces of trial %s not logged to MLflow: %s: %s",
                                                trial.number, type(exc).__name__, str(exc)[:200])

    def log_traces(self, trial, records: list[dict], run_id: str | None, runs_dir: Path) -> list[str]:
        """One trace per sample record of a stored trial (FrozenTrial), in the study's experiment and linked to the
        trial's run: prompt, steered and unsteered response, tags, and the scores as feedback. Returns trace ids.

        The feedback is attached before the trace ends, so MLflow stores trace and feedback in one export (and in
        the background: MLflow's async trace logging; `finish` flushes)."""
        import mlflow
        from mlflow.entities import SpanType
        from mlflow.entities.trace_location import MlflowExperimentLocation

        if mlflow.get_tracking_uri() != self.client.tracking_uri:  # traces go where the runs go
            flush_traces()
            mlflow.set_tracking_uri(self.client.tracking_uri)
        base = read_baseline(runs_dir)
        records = scrub(records)
        concept = self.context.get("concept") or {}
        raw = (trial.user_attrs.get("raw_alphas") or {})
        controllers = sorted({k.split(".")[1] for k in raw if k.count(".") >= 2})
        ids = []
        for r in records:
            tags = {STUDY_TAG: self.study_name, TRIAL_TAG: str(trial.number), SAMPLE_TAG: str(r.get("index", 0)),
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
                                   trace_destination=MlflowExperimentLocation(self.experiment_id)) as span:
                span.set_inputs({"prompt": r["prompt"]})
                span.set_outputs({"steered": r["text"], "unsteered": unsteered})
                span.set_attributes({"params": trial.params, "raw_alphas": raw, "n_tokens": len(r.get("token_ids") or []),
                                     **({"alphas": trial.user_attrs["alphas"]} if trial.user_attrs.get("alphas") else {})})
                mlflow.update_current_trace(tags=tags, request_preview=r["prompt"][:1000], response_preview=r["text"][:1000],
                                            metadata={"mlflow.sourceRun": run_id} if run_id else None)
                for fb in sample_feedback(r, self.context.get("card") or {}, self.context.get("objective") or {}):
                    mlflow.log_feedback(trace_id=span.trace_id, **fb)
                ids.append(span.trace_id)
        return ids


def study_runs(tracking_uri: str | None, study_name: str, experiment: str | None = None):
    """(parent run, trial runs) of a study, read back through MLflow."""
    client = _client(tracking_uri)
    exps = [client.get_experiment_by_name(experiment)] if experiment else client.search_experiments()
    ids = [e.experiment_id for e in exps if e is not None]
    runs = client.search_runs(ids, filter_string=f"tags.`{STUDY_TAG}` = '{study_name}'", max_results=5000)
    parent = next((r for r in runs if r.data.tags.get(KIND_TAG) == "study"), None)
    return parent, [r for r in runs if r.data.tags.get(KIND_TAG) == "trial"]


def samples_file(runs_dir: Path, number: int) -> Path:
    """Where the runner keeps a trial's samples (JSON lines)."""
    return Path(runs_dir) / f"trial-{number:05d}.jsonl"


def dumps_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, default=str) + "\n" for r in records)


def traced(study: str, number: int, index: int, share: float) -> bool:
    """Is this sample in the traced share? A fixed hash of (study, trial, sample): every worker and every resume
    picks the same samples."""
    digest = hashlib.sha256(f"{study}/{number}/{index}".encode()).digest()  # well mixed (crc32 of near strings is not)
    return share >= 1.0 or int.from_bytes(digest[:8], "big") < share * 2**64


def baseline_file(runs_dir: Path) -> Path:
    """The unsteered answers to the trial prompts (JSON lines: family, prompt, text), next to the samples."""
    return Path(runs_dir) / "baseline.jsonl"


def write_baseline(runs_dir: Path, samples) -> Path:
    """Keep the study's unsteered samples on disk, so traces show them beside the steered answers."""
    path = baseline_file(runs_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_jsonl([{"family": s.family, "prompt": s.prompt, "text": s.text} for s in samples]))
    return path


def read_baseline(runs_dir: Path) -> dict[tuple[str, str], str]:
    path = baseline_file(runs_dir)
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["family"], r["prompt"]): r["text"] for r in rows}


def feedback_name(score: str) -> str:
    """The label name an objective's score is compared with (concept, coherency = fluency, relevance), else itself."""
    from steeropt.evaluation.calibration import LABEL_OF_AXIS
    from steeropt.evaluation.validation import AXIS_SCORES

    return next((LABEL_OF_AXIS[axis] for axis, names in AXIS_SCORES.items() if score in names), score)


CARD_KEYS = ("rubric", "rubric_sha", "calibrated", "sha256", "metric", "axis")  # judge card fields kept as metadata


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
        fb = {"name": feedback_name(name), "source": source, "metadata": meta}
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


def ui_url(tracking_uri: str, experiment_id: str, tab: str = "runs") -> tuple[str, str | None]:
    """(link to the experiment's tab in the MLflow UI, the command that serves the UI or None for a server).
    ?workflowType= picks the UI mode in MLflow 3.17 (machine_learning: runs; genai: traces, labelling)."""
    mode = "machine_learning" if tab == "runs" else "genai"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/{tab}?workflowType={mode}", None
    return (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/{tab}?workflowType={mode}",
            f"mlflow ui --backend-store-uri {tracking_uri}")


def flush_traces() -> None:
    """Wait for the traces MLflow exports in the background, with bounded HTTP retries (a tracking server that
    went away costs seconds per pending trace, not MLflow's default minutes)."""
    import mlflow

    saved = {k: os.environ.get(k) for k in _ARTIFACT_HTTP}
    os.environ.update(_ARTIFACT_HTTP)
    try:
        mlflow.flush_trace_async_logging()
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
