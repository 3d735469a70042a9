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
from steeropt.runner.checks import JUDGE_DEAD_AFTER, JudgeUnreachable
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


@pytest.fixture(scope="module")
def faults(tmp_path_factory, pg_role):
    """`run`, `status` and `validate` on each storage fault, four CLI processes at a time:
    {fault: (directory, {command: CompletedProcess})}."""
    role, port = pg_role
    dirs = {f: tmp_path_factory.mktemp(f) for f in ("corrupt", "nopg", "wrongpw")}
    (dirs["corrupt"] / "study.db").write_bytes(b"this is not a database\x00" * 200)
    specs = {"corrupt": tiny_spec(dirs["corrupt"], name="corrupt"),
             "nopg": tiny_spec(dirs["nopg"], name="nopg", storage=f"postgresql://steer:{PASSWORD}@127.0.0.1:1/steer"),
             "wrongpw": tiny_spec(dirs["wrongpw"], name="wrongpw",
                                  storage=f"postgresql://{role}:wrong-{PASSWORD}@127.0.0.1:{port}/{role}")}
    jobs = [(f, c) for f in specs for c in COMMANDS]
    for f, storage, command in (("querypw", f"postgresql://{role}@127.0.0.1:{port}/{role}?password={PASSWORD}", "status"),
                                ("plainpg", f"postgresql://{role}:{PASSWORD}@127.0.0.1:{port}/{role}", "validate"),
                                ("pg3", f"postgresql+psycopg://{role}@127.0.0.1:{port}/{role}", "validate")):
        dirs[f] = tmp_path_factory.mktemp(f)
        specs[f] = tiny_spec(dirs[f], name=f, storage=storage)
        jobs.append((f, command))
    dirs["runsfile"] = tmp_path_factory.mktemp("runsfile")
    (dirs["runsfile"] / "runs").write_text("a file where the run directory should go\n")
    specs["runsfile"] = tiny_spec(dirs["runsfile"], name="runsfile")
    jobs.append(("runsfile", "run"))
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda j: steeropt(j[1], specs[j[0]], cwd=dirs[j[0]]), jobs))
    out = {f: (dirs[f], {}) for f in specs}
    for (f, c), r in zip(jobs, done):
        out[f][1][c] = r
    return out


def test_corrupt_sqlite_file(faults):
    tmp, results = faults["corrupt"]
    for r in results.values():
        one_message(r, "not a usable SQLite database", "study.db", "move it aside")
    assert sorted(p.name for p in tmp.iterdir()) == ["corrupt.yaml", "study.db"]  # no mlflow.db, no runs/


def test_unreachable_postgres(faults):
    tmp, results = faults["nopg"]
    for r in results.values():
        one_message(r, "storage postgresql+psycopg2://steer:***@127.0.0.1:1/steer is unreachable",
                    "Connection refused", "is the database server running", secret=PASSWORD)
    assert sorted(p.name for p in tmp.iterdir()) == ["nopg.yaml"]


def test_wrong_postgres_password(faults, pg_role):
    role, port = pg_role
    tmp, results = faults["wrongpw"]
    for r in results.values():
        one_message(r, f"storage postgresql+psycopg2://{role}:***@127.0.0.1:{port}/{role} is unreachable",
                    "password authentication failed", "check the user name and password", secret=PASSWORD)
    assert sorted(p.name for p in tmp.iterdir()) == ["wrongpw.yaml"]


def test_unusable_run_directory(faults):
    tmp, results = faults["runsfile"]
    one_message(results["run"], "run directory runs/runsfile", "is not a directory")
    assert sorted(p.name for p in tmp.iterdir()) == ["runs", "runsfile.yaml"]  # no study.db, no mlflow.db


def test_status_hides_a_password_given_as_query_parameter(faults, pg_role):
    role, port = pg_role
    one_message(faults["querypw"][1]["status"],
                f"no study 'querypw' in postgresql+psycopg2://{role}@127.0.0.1:{port}/{role}?password=*** yet",
                secret=PASSWORD)


def test_plain_postgresql_url_uses_the_installed_driver(faults):
    tmp, results = faults["plainpg"]
    st = build("study", str(tmp / "plainpg.yaml"))
    assert st.storage.startswith("postgresql+psycopg2://")
    optuna.create_study(study_name="plainpg-probe", storage=st.storage)  # psycopg2, what steeropt[postgres] installs
    assert results["validate"].returncode == 0, results["validate"].stderr[-2000:]
    one_message(faults["pg3"][1]["validate"], "psycopg2 driver", "steeropt[postgres]")


def test_failure_after_the_tracker_leaves_no_running_run(tmp_path, embedded, monkeypatch):
    # the storage holds a study of that name made by another optimizer: the study cannot start
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    other = optuna.create_study(study_name="clash", storage=storage, directions=["maximize", "maximize"])
    other.set_user_attr("steeropt", {"optimizer": "tpe", "objectives": [], "constraints": [], "parameters": []})
    monkeypatch.chdir(tmp_path)
    study = Study.from_spec(str(tiny_spec(tmp_path, name="clash")))
    with pytest.raises(SteeroptError, match="study 'clash' exists with different optimizer"):
        study.setup(lm=embedded)  # what `steeropt run` does first (the model already loaded here)
    assert (tmp_path / "mlflow.db").exists()  # the tracker was set up ...
    assert running_runs(tmp_path) == [] and not (tmp_path / "runs" / "clash").exists()  # ... and left no run


def test_second_run_on_a_live_study_is_refused(tmp_path, embedded, monkeypatch):
    path = tiny_spec(tmp_path, name="live", decoding={"max_new_tokens": 16}, budget={"trials": 2, "batch_size": 1})
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
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # the first runner's trials were not failed


JUDGE_DOWN = {"name": "down", "backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m",
              "api_key_env": None, "concurrency": 1, "timeout_s": 2, "max_retries": 0, "cache": None,
              "rubrics": {"concept": {"template": "Concept {concept}? 0-2.\nText: {response}",
                                      "scale": {"min": 0, "max": 2}, "parse": r"^\s*(\d)", "max_tokens": 1},
                          "fluency": {"template": "Fluent? 0-2.\nText: {response}",
                                      "scale": {"min": 0, "max": 2}, "parse": r"^\s*(\d)", "max_tokens": 1}}}


def test_unreachable_judge_stops_the_study_without_spending_the_budget(tmp_path, embedded, monkeypatch):
    path = tiny_spec(tmp_path, name="nojudge", objective="tiered-default", judge=JUDGE_DOWN,
                     search_space={"name": "gentle", "sites": [{"layer": 4, "vector": "wedding", "controller": "add",
                                                                "alpha": {"low": 0.0, "high": 0.2}}]},
                     budget={"trials": 6, "batch_size": 1, "prompts_per_trial": 2})
    monkeypatch.chdir(tmp_path)
    study = Study.from_spec(str(path)).setup(lm=embedded)
    with pytest.raises(JudgeUnreachable) as err:  # a SteeroptError: the CLI prints it alone and exits 2
        study.run()
    study.close("FAILED")
    msg = str(err.value)
    assert err.value.exit_code == 2 and JUDGE_DEAD_AFTER == 3
    for words in ("answered none of the last 3 trials", "ConnectError", "back in the queue",
                  "do not count toward the budget"):
        assert words in msg, msg
    trials = optuna.load_study(study_name="nojudge", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert sum(t.state == TrialState.FAIL for t in trials) == 3
    waiting = [t for t in trials if t.state == TrialState.WAITING]  # re-queued with the same params
    assert sorted(t.system_attrs["failed_trial"] for t in waiting) == [0, 1, 2]
    assert [t.params for t in waiting] == [trials[t.system_attrs["failed_trial"]].params for t in waiting]
    c = count(trials)
    assert c.done == 0 and c.requeued == 3
    assert running_runs(tmp_path) == []


def test_two_processes_create_one_fresh_mlflow_store(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        from steeropt.tracking import Tracker
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
