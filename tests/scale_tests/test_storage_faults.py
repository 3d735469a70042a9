"""Storage and run faults through the real CLI: a corrupt SQLite file, an unreachable PostgreSQL server, a wrong
PostgreSQL password (a real server with password auth for one role), a study that fails after the tracker is
set up, a second `run` on a live study, an unreachable judge, and two processes creating one fresh MLflow
store. Each is exit 2, one message without a traceback, nothing half-written, no RUNNING MLflow run left."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
from optuna.trial import TrialState

from steeropt.errors import SteeroptError
from steeropt.runner.ledger import count
from steeropt.runner.study import Study
from steeropt.specs import build

from .conftest import cli_env, steeropt, tiny_spec

PASSWORD = f"pw-{uuid.uuid4().hex[:12]}"
COMMANDS = ("run", "status", "validate")


def one_message(r, *fragments: str, secret: str | None = None) -> str:
    """Assert exit 2 with one `error:` message holding every fragment and no traceback; return the message."""
    err = r.stderr
    assert r.returncode == 2, (r.returncode, err[-3000:], r.stdout[-1000:])
    assert "Traceback" not in err and [ln[:6] for ln in err.splitlines()].count("error:") == 1, err[-3000:]
    msg = " ".join(err.split())
    for f in fragments:
        assert f in msg, msg[-1500:]
    if secret is not None:
        assert secret not in err + r.stdout
    return msg


def running_runs(tmp) -> list:
    db = tmp / "mlflow.db"
    if not db.exists():
        return []
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{db}")
    ids = [e.experiment_id for e in c.search_experiments()]
    return [r for r in c.search_runs(ids, filter_string="attributes.status = 'RUNNING'")] if ids else []


def each_command(path, cwd) -> dict:
    """`run`, `status` and `validate` on one spec, at once: {command: CompletedProcess}."""
    with ThreadPoolExecutor(len(COMMANDS)) as pool:
        return dict(zip(COMMANDS, pool.map(lambda c: steeropt(c, path, cwd=cwd), COMMANDS)))


def test_corrupt_sqlite_file(tmp_path):
    (tmp_path / "study.db").write_bytes(b"this is not a database\x00" * 200)
    path = tiny_spec(tmp_path, name="corrupt")
    for r in each_command(path, tmp_path).values():
        one_message(r, "not a usable SQLite database", "study.db", "move it aside")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.yaml", "study.db"]  # no mlflow.db, no runs/


def test_unreachable_postgres(tmp_path):
    path = tiny_spec(tmp_path, name="nopg", storage=f"postgresql://steer:{PASSWORD}@127.0.0.1:1/steer")
    for r in each_command(path, tmp_path).values():
        one_message(r, "storage postgresql+psycopg2://steer:***@127.0.0.1:1/steer is unreachable",
                    "Connection refused", "is the database server running", secret=PASSWORD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nopg.yaml"]


@pytest.fixture(scope="module")
def pg_role(postgres):
    """(role, database) on the session's PostgreSQL, logging in with PASSWORD (scram-sha-256 on 127.0.0.1)."""
    import psycopg2

    role = f"steer_{uuid.uuid4().hex[:8]}"
    hba = postgres.data / "pg_hba.conf"
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    conn = psycopg2.connect(host="127.0.0.1", port=postgres.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (PASSWORD,))
        cur.execute(f"CREATE DATABASE {role} OWNER {role}")
        cur.execute("SELECT pg_reload_conf()")
    conn.close()
    return role, postgres.port


def test_wrong_postgres_password(tmp_path, pg_role):
    role, port = pg_role
    path = tiny_spec(tmp_path, name="wrongpw", storage=f"postgresql://{role}:wrong-{PASSWORD}@127.0.0.1:{port}/{role}")
    for r in each_command(path, tmp_path).values():
        one_message(r, f"storage postgresql+psycopg2://{role}:***@127.0.0.1:{port}/{role} is unreachable",
                    "password authentication failed", "check the user name and password", secret=PASSWORD)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrongpw.yaml"]


def test_status_hides_a_password_given_as_query_parameter(tmp_path, pg_role):
    role, port = pg_role
    path = tiny_spec(tmp_path, name="querypw", storage=f"postgresql://{role}@127.0.0.1:{port}/{role}?password={PASSWORD}")
    r = steeropt("status", path, cwd=tmp_path)
    one_message(r, f"no study 'querypw' in postgresql+psycopg2://{role}@127.0.0.1:{port}/{role}?password=*** yet",
                secret=PASSWORD)


def test_plain_postgresql_url_uses_the_installed_driver(tmp_path, pg_role):
    role, port = pg_role
    path = tiny_spec(tmp_path, name="plainpg", storage=f"postgresql://{role}:{PASSWORD}@127.0.0.1:{port}/{role}")
    st = build("study", str(path))
    assert st.storage.startswith("postgresql+psycopg2://")
    optuna.create_study(study_name="plainpg-probe", storage=st.storage)  # psycopg2, what steeropt[postgres] installs
    r = steeropt("validate", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    bad = tiny_spec(tmp_path, name="pg3", storage=f"postgresql+psycopg://{role}@127.0.0.1:{port}/{role}")
    one_message(steeropt("validate", bad, cwd=tmp_path), "psycopg2 driver", "steeropt[postgres]")


def test_failure_after_the_tracker_leaves_no_running_run(tmp_path):
    # the storage holds a study of that name made by another optimizer: the study cannot start
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    other = optuna.create_study(study_name="clash", storage=storage, directions=["maximize", "maximize"])
    other.set_user_attr("steeropt", {"optimizer": "tpe", "objectives": [], "constraints": [], "parameters": []})
    path = tiny_spec(tmp_path, name="clash")
    r = steeropt("run", path, cwd=tmp_path)
    one_message(r, "study 'clash' exists with different optimizer")
    assert running_runs(tmp_path) == [] and not (tmp_path / "runs" / "clash").exists()


def test_second_run_on_a_live_study_is_refused(tmp_path, embedded, monkeypatch):
    path = tiny_spec(tmp_path, name="live", decoding={"max_new_tokens": 24}, budget={"trials": 3, "batch_size": 1})
    first = subprocess.Popen([sys.executable, "-m", "steeropt", "run", str(path)], cwd=tmp_path, env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        try:
            if optuna.load_study(study_name="live", storage=storage).get_trials(states=(TrialState.RUNNING,)):
                break
        except KeyError:
            pass
        time.sleep(0.2)
    # the second runner: this test's process (another pid on the same host), with the model already loaded
    monkeypatch.chdir(tmp_path)
    second = Study.from_spec(str(path), track=False).setup(lm=embedded)
    with pytest.raises(SteeroptError, match=r"being run by another live process \(trial\(s\) \d+ in process .*"
                                            r"steeropt worker"):
        second.run()
    second.close()
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    trials = optuna.load_study(study_name="live", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # the first runner's trials were not failed


JUDGE_DOWN = {"name": "down", "backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m",
              "api_key_env": None, "concurrency": 1, "timeout_s": 2, "max_retries": 0, "cache": None,
              "rubrics": {"concept": {"template": "Concept {concept}? 0-2.\nText: {response}",
                                      "scale": {"min": 0, "max": 2}, "parse": r"^\s*(\d)", "max_tokens": 1},
                          "fluency": {"template": "Fluent? 0-2.\nText: {response}",
                                      "scale": {"min": 0, "max": 2}, "parse": r"^\s*(\d)", "max_tokens": 1}}}


def test_unreachable_judge_stops_the_study_without_spending_the_budget(tmp_path):
    path = tiny_spec(tmp_path, name="nojudge", objective="tiered-default", judge=JUDGE_DOWN,
                     search_space={"name": "gentle", "sites": [{"layer": 4, "vector": "wedding", "controller": "add",
                                                                "alpha": {"low": 0.0, "high": 0.2}}]},
                     budget={"trials": 6, "batch_size": 1, "prompts_per_trial": 2})
    r = steeropt("run", path, cwd=tmp_path)
    one_message(r, "answered none of the last 3 trials", "back in the queue", "do not count toward the budget")
    trials = optuna.load_study(study_name="nojudge", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert sum(t.state == TrialState.FAIL for t in trials) == 3
    assert sum(t.state == TrialState.WAITING for t in trials) == 3  # re-queued with the same params
    c = count(trials)
    assert c.done == 0 and c.requeued == 3
    assert running_runs(tmp_path) == []


def test_two_processes_create_one_fresh_mlflow_store(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from steeropt.runner.tracking import Tracker
        Tracker("sqlite:///{tmp_path / 'mlflow.db'}", "race", "study-" + sys.argv[1])
        print("ok")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=tmp_path, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for _, e in outs]
    from mlflow import MlflowClient

    assert [e.name for e in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
            if e.name == "race"] == ["race"]
