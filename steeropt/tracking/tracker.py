"""MLflow tracking of a study: one parent run per study, one nested run per trial, study artifacts kept current.

    >>> tracker = Tracker(None, "steeropt", "quickstart")       # doctest: +SKIP
    >>> tracker.start(params, tags, {"study.yaml": text}); tracker.log_stored(frozen_trial, runs_dir)

Trials are logged from what the study storage holds (`log_stored`), so a trial told by this process, one
failed as stale by it, and one found missing after a crash (`sync`) are logged the same way, once each.
Samples go to MLflow as traces (tracking.traces); the client, tags and `log_run` are in tracking.client.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
from pathlib import Path

import yaml

from steeropt.errors import SteeroptError
from steeropt.records import TrialRecord
from steeropt.redact import redact, scrub
from steeropt.search.optimizers.base import failed_reason
from steeropt.tracking.client import (EXPERIMENT_KIND, KIND_TAG, STUDY_TAG, TRIAL_TAG, bounded_http, clean_params, client,
                                      finite_metrics, probe, store_lock)
from steeropt.tracking.notes import study_note, trial_note
from steeropt.tracking.run_dir import samples_file
from steeropt.tracking.traces import flush_traces, traced, try_traces


class Tracker:
    """Logs a study to MLflow. Reuses the study's parent run when a study is resumed."""

    def __init__(self, tracking_uri: str | None, experiment: str, study_name: str, *, traces: float | None = None):
        """traces: share of samples logged as traces; None = the `traces` of the resolved spec given to start()."""
        from mlflow.entities import Metric, Param, RunTag  # noqa: F401  (fail early if mlflow is broken)

        self.tracking_uri, self.study_name, self.trace_share = tracking_uri, study_name, traces
        self.context: dict = {}  # what traces need about the study (concept, judge card), set by start() / attach()
        probe(tracking_uri)
        try:
            with store_lock(tracking_uri):  # MLflow creates / migrates a fresh SQLite store on first use: once
                self.client = client(tracking_uri)
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

        self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in clean_params(params).items()])
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
            run.info.run_id, params=[Param(k, v) for k, v in clean_params(params).items()],
            metrics=[Metric(k, v, now, 0) for k, v in finite_metrics(metrics).items()])
        if samples_jsonl is not None:
            self.log_texts(run.info.run_id, {"samples.jsonl": samples_jsonl})
        self.client.set_terminated(run.info.run_id, "FINISHED" if tags.get("state") != "FAIL" else "FAILED")
        # stepped copies on the parent, so the study run alone shows progress over trials
        self.client.log_batch(self.parent_id, metrics=[Metric(f"trial/{k}", v, now, number)
                                                       for k, v in finite_metrics(metrics).items()])
        return run.info.run_id

    def log_stored(self, trial, runs_dir: Path) -> str:
        """A finished Optuna trial (FrozenTrial) as a nested run: params and raw α, the values, counts and
        intervals the runner stored as user attrs, state and failure reason, and its samples file if any."""
        rec = TrialRecord.from_trial(trial)
        metrics = dict(rec.values or {})
        metrics |= {f"count.{k}": v for k, v in (rec.counts or {}).items() if isinstance(v, (int, float))}
        for fam, d in (rec.families or {}).items():
            metrics |= {f"{fam}.{k}": v for k, v in (d.values or {}).items()}
        for k, iv in (rec.intervals or {}).items():
            if iv:
                metrics |= {f"{k}.ci_low": iv[0], f"{k}.ci_high": iv[1]}
        params = dict(trial.params) | {f"raw.{k}": v for k, v in rec.raw_alphas.items()}
        state = "COMPLETE" if trial.state.name == "COMPLETE" else "FAIL"
        reason = failed_reason(trial)
        tags = {"state": state, **({"failed_reason": reason} if reason else {}), "feasible": str(rec.feasible),
                "mlflow.note.content": trial_note(trial.params, rec.values or {}, rec.feasible, reason,
                                                  (self.context.get("objective") or {}).get("constraints"))}
        path = samples_file(runs_dir, trial.number)
        text = redact(path.read_text()) if path.exists() else None
        run_id = self.log_trial(trial.number, params, metrics, tags, text)
        if text and self.trace_share:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
            keep = [r for r in records if traced(self.study_name, trial.number, r.get("index", 0), self.trace_share)]
            try_traces(self, trial, keep, run_id, runs_dir)
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
        self.client.log_batch(self.parent_id, metrics=[Metric(k, v, now, step) for k, v in finite_metrics(metrics).items()])

    def log_files(self, paths: list[str | os.PathLike], artifact_path: str | None = None) -> None:
        """Refresh the study's files on the parent run. They are rewritten after every batch, so a failed
        upload is only a stale copy until the next one: warn and go on. MLflow's default HTTP retries
        (7, up to 120 s each) can stall a worker for many minutes on one upload; these get 2 x 30 s."""
        with bounded_http():
            try:
                note = study_note(paths)  # what the study found so far, on the run page
                if note:
                    self.client.set_tag(self.parent_id, "mlflow.note.content", redact(note)[:5000])
                for p in paths:
                    self.client.log_artifact(self.parent_id, str(p), artifact_path)
            except Exception as exc:  # noqa: BLE001  (any transport error: the next refresh tries again)
                logging.getLogger(__name__).warning("study artifacts not refreshed in MLflow: %s: %s",
                                                    type(exc).__name__, str(exc)[:200])

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status)
        if self.trace_share:
            flush_traces()

    # ---- samples as traces ------------------------------------------------------------------------
    def _set_context(self, artifacts: dict[str, str]) -> None:
        """Concept, objective, judge card and trace share from what the study records about itself (the resolved
        spec and judge_card.json of its parent run)."""
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
