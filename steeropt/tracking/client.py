"""The MLflow side every steeropt run shares: the explicit client, tag names, a reachability probe, bounded HTTP
retries, the UI link, and `log_run`, one finished run of any kind (a comparison, a benchmark).

    >>> run_id = log_run("comparison", "compare-a-vs-b", {"studies": "a,b"}, {"a.hypervolume": 0.4},  # doctest: +SKIP
    ...                  ["runs/compare/table.md"], tracking_uri=None, experiment="steeropt")

The tracking URI is MLflow's: None uses MLflow's default (``sqlite:///mlflow.db`` in the working directory),
``http://host:port`` a tracking server, any other URI its store. Writes go through the explicit ``MlflowClient``
so several studies and workers can share a process or a server. mlflow itself is imported inside the functions:
it is heavy (seconds), and `steeropt --help` or `steeropt validate` never needs it.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from steeropt.errors import SteeroptError
from steeropt.redact import redact

STUDY_TAG = "steeropt.study"  # an MLflow tag name: stable across releases (resume finds old runs)
TRIAL_TAG = "steeropt.trial"
KIND_TAG = "steeropt.kind"
SAMPLE_TAG = "steeropt.sample"  # a trace's sample index in its trial's samples file
REVIEW_TAG = "steeropt.review"  # set by `steeropt review` on the traces worth labelling (value: the round)
# MLflow UIs 3.0-3.x read this experiment tag to open an experiment on its runs ("custom_model_development") rather
# than the GenAI overview; 3.17 reads the URL's ?workflowType= (or the toggle's saved choice) instead: see ui_url.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# bounded HTTP retries for refreshes that may fail (MLflow reads these at each request)
ARTIFACT_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def client(tracking_uri: str | None):
    import mlflow  # heavy optional dependency
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def clean_params(params: dict) -> dict:
    return {redact(str(k))[:250]: redact(str(v))[:6000] for k, v in params.items()}


def finite_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def probe(tracking_uri: str | None, timeout_s: float = 10.0) -> None:
    """Fail fast on a tracking server nobody answers at (MLflow's client would retry for minutes).
    Any HTTP answer, even an error status, means the server is there."""
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


@contextlib.contextmanager
def store_lock(tracking_uri: str | None):
    """An exclusive lock (a file in the temp directory, per store) held while this process opens a local SQLite
    tracking store: two processes starting on a fresh mlflow.db would otherwise race on MLflow's table creation.
    Other stores (a server, a database server) need none."""
    import mlflow  # heavy optional dependency

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    if not str(uri).startswith("sqlite:"):
        yield
        return
    where = str(Path(str(uri).split("://", 1)[1][1:].split("?", 1)[0] or ":memory:").resolve())
    lock = Path(tempfile.gettempdir()) / f"steeropt-mlflow-{hashlib.sha256(where.encode()).hexdigest()[:16]}.lock"
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def bounded_http():
    """MLflow's HTTP retries bounded to ARTIFACT_HTTP inside the block (its defaults, 7 retries of up to 120 s,
    can stall a worker for many minutes on one upload)."""
    saved = {k: os.environ.get(k) for k in ARTIFACT_HTTP}
    os.environ.update(ARTIFACT_HTTP)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def log_run(kind: str, name: str, params: dict, metrics: dict, files=(), *, tracking_uri: str | None, experiment: str,
            tags: dict | None = None, artifact_path: str | None = None) -> str:
    """One finished MLflow run tagged steeropt.kind=`kind`: params, finite metrics (step 0) and files as artifacts.
    Returns the run id; a store that refuses it is a SteeroptError."""
    from mlflow.entities import Metric, Param  # heavy optional dependency
    from mlflow.utils.time import get_current_time_millis

    try:
        c = client(tracking_uri)
        exp = c.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else c.create_experiment(experiment)
    except Exception as exc:
        raise SteeroptError(f"tracking URI {tracking_uri or '(MLflow default)'} refused the {kind} run: "
                            f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    rid = c.create_run(exp_id, run_name=name[:250], tags={KIND_TAG: kind, **(tags or {})}).info.run_id
    now = get_current_time_millis()
    c.log_batch(rid, params=[Param(k, v) for k, v in clean_params(params).items()],
                metrics=[Metric(k, v, now, 0) for k, v in finite_metrics(metrics).items()])
    for f in files:
        c.log_artifact(rid, str(f), artifact_path)
    c.set_terminated(rid, "FINISHED")
    return rid


def study_runs(tracking_uri: str | None, study_name: str, experiment: str | None = None):
    """(parent run, trial runs) of a study, read back through MLflow."""
    c = client(tracking_uri)
    exps = [c.get_experiment_by_name(experiment)] if experiment else c.search_experiments()
    ids = [e.experiment_id for e in exps if e is not None]
    runs = c.search_runs(ids, filter_string=f"tags.`{STUDY_TAG}` = '{study_name}'", max_results=5000)
    parent = next((r for r in runs if r.data.tags.get(KIND_TAG) == "study"), None)
    return parent, [r for r in runs if r.data.tags.get(KIND_TAG) == "trial"]


def ui_url(tracking_uri: str, experiment_id: str, tab: str = "runs") -> tuple[str, str | None]:
    """(link to the experiment's tab in the MLflow UI, the command that serves the UI or None for a server).
    ?workflowType= picks the UI mode in MLflow 3.17 (machine_learning: runs; genai: traces, labelling)."""
    mode = "machine_learning" if tab == "runs" else "genai"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/{tab}?workflowType={mode}", None
    return (f"http://127.0.0.1:5000/#/experiments/{experiment_id}/{tab}?workflowType={mode}",
            f"mlflow ui --backend-store-uri {tracking_uri}")
