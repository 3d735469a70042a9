"""MLflow tracking: one parent run per study, one nested run per trial, study artifacts kept current.

Trials are logged from what the study storage holds (`log_stored`), so a trial told by this process, one
failed as stale by it, and one found missing after a crash (`sync`) are logged the same way, once each.

The tracking URI is MLflow's: None uses MLflow's default (``sqlite:///mlflow.db`` in the working
directory), ``http://host:port`` a tracking server, any other URI its store. Writes go through the
explicit ``MlflowClient`` so several studies and workers can share a process or a server.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import tempfile
from pathlib import Path

from steeropt.errors import SteeroptError

STUDY_TAG = "steeropt.study"  # an MLflow tag name: stable across releases (resume finds old runs)
TRIAL_TAG = "steeropt.trial"
KIND_TAG = "steeropt.kind"
# bounded HTTP retries for study-artifact refreshes (MLflow reads these at each request)
_ARTIFACT_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _client(tracking_uri: str | None):
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def _clean_params(params: dict) -> dict:
    return {str(k)[:250]: str(v)[:6000] for k, v in params.items()}


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
        raise SteeroptError(f"tracking URI {uri} is unreachable: {type(why).__name__}: {why}") from None


class Tracker:
    """Logs a study to MLflow. Reuses the study's parent run when a study is resumed."""

    def __init__(self, tracking_uri: str | None, experiment: str, study_name: str):
        from mlflow.entities import Metric, Param, RunTag  # noqa: F401  (fail early if mlflow is broken)

        self.tracking_uri, self.study_name = tracking_uri, study_name
        _probe(tracking_uri)
        try:
            self.client = _client(tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    self.experiment_id = self.client.create_experiment(experiment)
                except Exception:  # another worker created it at the same moment?
                    exp = self.client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
            if exp is not None:
                self.experiment_id = exp.experiment_id
        except Exception as exc:
            raise SteeroptError(f"tracking URI {tracking_uri or '(MLflow default)'} refused the study: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        self.parent_id: str | None = None

    def _search(self, filter_string: str, max_results: int = 5000):
        return self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=max_results)

    def start(self, params: dict, tags: dict, artifacts: dict[str, str]) -> str:
        """Find or create the study's parent run; `artifacts` maps file name -> text content.
        Raises SteeroptError when the tracking store refuses the writes."""
        try:
            return self._start(params, tags, artifacts)
        except SteeroptError:
            raise
        except Exception as exc:
            raise SteeroptError(f"tracking URI {self.tracking_uri or '(MLflow default)'} refused the study: "
                                f"{type(exc).__name__}: {str(exc)[:300]}") from exc

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
                                     tags={STUDY_TAG: self.study_name, KIND_TAG: "study", **tags})
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
                p.write_text(text)
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
                  TRIAL_TAG: str(number), **{k: str(v)[:5000] for k, v in tags.items()}})
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
        tags = {"state": state, **({"failed_reason": reason} if reason else {}), "feasible": str(ua.get("feasible"))}
        path = samples_file(runs_dir, trial.number)
        return self.log_trial(trial.number, params, metrics, tags, path.read_text() if path.exists() else None)

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
