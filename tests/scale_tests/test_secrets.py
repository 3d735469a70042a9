"""Secrets never leave the process: a study run through the CLI with a fake secret in each place one can sit
(the PostgreSQL storage password, credentials in the judge's base_url, the judge's API key in the environment),
samples logged as traces with the judge's assessments. None of the secrets is found anywhere in the MLflow
store (database and artifacts), runs/, the judge cache, the study storage, the console output or the logs."""
from __future__ import annotations

import json
import uuid

import pytest

from steeropt.tracking import study_runs

from .conftest import cli_env, steeropt, tiny_spec
from .test_faults import judge_spec
from .test_storage_faults import PASSWORD, pg_role  # noqa: F401  (the fixture: a role logging in with PASSWORD)


@pytest.fixture(scope="module")
def secret_run(llama_server, pg_role, tmp_path_factory):  # noqa: F811
    role, port = pg_role
    tmp = tmp_path_factory.mktemp("secrets")
    key, judge_pw = f"sk-fake-{uuid.uuid4().hex}", f"judgepw-{uuid.uuid4().hex[:10]}"
    judge = judge_spec(f"http://judgeuser:{judge_pw}@127.0.0.1:{llama_server.port}/v1")
    path = tiny_spec(tmp, name="secrets", objective="tiered-default", judge=judge, traces=1.0,
                     storage=f"postgresql://{role}:{PASSWORD}@127.0.0.1:{port}/{role}",
                     search_space={"name": "gentle", "sites": [{"layer": 4, "vector": "wedding", "controller": "add",
                                                                "alpha": {"low": 0.0, "high": 0.3}}]},
                     budget={"trials": 2, "batch_size": 1, "prompts_per_trial": 2})
    r = steeropt("run", path, cwd=tmp, env=cli_env(STEEROPT_TEST_JUDGE_KEY=key), timeout=900)
    status = steeropt("status", path, cwd=tmp, env=cli_env(STEEROPT_TEST_JUDGE_KEY=key))
    return {"run": r, "status": status, "tmp": tmp, "secrets": [PASSWORD, judge_pw, key], "role": role, "port": port}


def test_no_secret_anywhere(secret_run):
    r, status, tmp = secret_run["run"], secret_run["status"], secret_run["tmp"]
    assert r.returncode == 0, r.stderr[-3000:]
    assert status.returncode == 0, status.stderr[-2000:]
    files = [f for f in tmp.rglob("*") if f.is_file() and f.name != "secrets.yaml"]  # the spec holds them, as written
    assert {"mlflow.db", "judge_cache.sqlite", "timing.json", "study.yaml", "judge_card.json",
            "samples.jsonl"} <= {f.name for f in files}
    for secret in secret_run["secrets"]:
        assert [str(f.relative_to(tmp)) for f in files if secret.encode() in f.read_bytes()] == []
        for text in (r.stdout, r.stderr, status.stdout, status.stderr):
            assert secret not in text
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=secret_run["port"], user="postgres", dbname=secret_run["role"])
    with conn.cursor() as cur:
        rows = [row for table in ("trial_user_attributes", "study_user_attributes", "trial_system_attributes")
                for row in (cur.execute(f"select * from {table}") or cur.fetchall())]
    conn.close()
    assert rows and not any(s in json.dumps(rows, default=str) for s in secret_run["secrets"])


def test_what_is_kept_is_redacted_not_dropped(secret_run):
    tmp, role, port = secret_run["tmp"], secret_run["role"], secret_run["port"]
    parent, trials = study_runs(f"sqlite:///{tmp / 'mlflow.db'}", "secrets")
    assert parent.data.params["storage"] == f"postgresql+psycopg2://{role}:***@127.0.0.1:{port}/{role}"
    assert "judgeuser:***@127.0.0.1" in parent.data.params["judge"]
    timing = json.loads((tmp / "runs" / "secrets" / "timing.json").read_text())
    assert "judgeuser:***@" in timing["judge"]
    assert len(trials) == 2
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    traces = client.search_traces([parent.info.experiment_id], max_results=50)
    sources = {a.source.source_id for t in traces for a in (t.info.assessments or [])
               if a.source.source_type == "LLM_JUDGE"}
    assert sources and all("judgeuser:***@" in s for s in sources), sources


@pytest.mark.parametrize("text, shown", [
    ("postgresql+psycopg2://steer:pw1234@db:5432/s", "postgresql+psycopg2://steer:***@db:5432/s"),
    ("postgresql://:pw1234@db/s", "postgresql://:***@db/s"),
    ("postgresql://u:p@ss1234@db/s", "postgresql://u:***@db/s"),
    ("postgresql://steer@db/s?sslmode=require&password=pw1234", "postgresql://steer@db/s?sslmode=require&password=***"),
    ("host=db password=pw1234 dbname=s", "host=db password=*** dbname=s"),
    ("openai:m@https://tok1234@api.example/v1", "openai:m@https://***@api.example/v1"),
    ("openai:m@http://u:pw1234@127.0.0.1:8/v1?api_key=k1234", "openai:m@http://u:***@127.0.0.1:8/v1?api_key=***"),
    ("sqlite:///study.db and postgresql://steer@db/s", "sqlite:///study.db and postgresql://steer@db/s"),
    ("the key=value of a model's answer", "the key=value of a model's answer"),
])
def test_redact_patterns(text, shown):
    from steeropt.redact import redact

    assert redact(text) == shown


def test_registered_secrets_are_masked_anywhere(monkeypatch):
    from steeropt import redact as r

    monkeypatch.setenv("STEEROPT_TEST_REDACT_KEY", "sk-registered-9f8e7d")
    r.register_env("STEEROPT_TEST_REDACT_KEY")
    r.register_url("postgresql://u:p%40ss-word@db/s")
    blob = {"a": ["key sk-registered-9f8e7d here", ("p@ss-word", "p%40ss-word")], "n": 3}
    assert r.scrub(blob) == {"a": ["key *** here", ("***", "***")], "n": 3}
