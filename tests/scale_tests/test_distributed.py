"""Several `steeropt worker` processes on one study: PostgreSQL storage, a real MLflow tracking server,
SIGKILL of a worker mid-trial and its restart; the exact-budget guard; Ax with several workers."""
from __future__ import annotations

import collections
import datetime as dt
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from steeropt.tracking import study_runs
from steeropt.search.optimizers.base import failed_reason

from .conftest import cli_env, steeropt, tiny_spec

BUDGET = 10
CAP = 3  # workers 2 and 3 stop after CAP trials each, so the restarted worker has work left (deterministic)
HEARTBEAT = {"heartbeat_interval": 1, "grace_period": 8}


def _trials(url, name):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _start_worker(path, tmp_path, tag, *more):
    log = open(tmp_path / f"{tag}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "steeropt", "worker", str(path), *more], cwd=tmp_path, env=cli_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return proc


def test_three_workers_share_one_study_and_survive_a_sigkill(postgres, mlflow_server, tmp_path):
    url = postgres.create_database("dist")
    path = tiny_spec(tmp_path, name="dist", storage=url, tracking_uri=mlflow_server.url,
                     optimizer={"name": "random", "settings": HEARTBEAT},
                     budget={"trials": BUDGET, "batch_size": 1, "prompts_per_trial": 2})
    # the shared study (and its MLflow parent run) is created once, before the workers start
    init = steeropt("run", path, "--trials", "0", cwd=tmp_path)
    assert init.returncode == 0, init.stderr[-2000:]
    assert _trials(url, "dist") == []

    workers = {"w1": _start_worker(path, tmp_path, "w1"),
               **{tag: _start_worker(path, tmp_path, tag, "--trials", str(CAP)) for tag in ("w2", "w3")}}
    victim = workers["w1"]
    killed, deadline = None, time.time() + 600
    while killed is None and time.time() < deadline:  # wait until w1 has just started a trial (and one is done)
        time.sleep(0.1)
        trials = _trials(url, "dist")
        done = sum(t.state.name == "COMPLETE" for t in trials)
        # started under 0.5 s ago: generating 2 x 12 tokens and scoring them takes longer, so it is still
        # running when the signal lands
        mine = [t for t in trials if t.state.name == "RUNNING" and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                and dt.datetime.now() - t.datetime_start < dt.timedelta(seconds=0.5)]
        if done >= 1 and mine:
            victim.send_signal(signal.SIGKILL)
            killed = mine[0]
        assert victim.poll() is None or killed is not None, (tmp_path / "w1.log").read_text()[-2000:]
    assert killed is not None, "worker 1 never ran a trial"
    victim.wait()
    # the kill landed mid-trial: the trial is still RUNNING with its dead worker (the grace period is 8 s)
    at_kill = next(t for t in _trials(url, "dist") if t.number == killed.number)
    assert at_kill.state.name == "RUNNING", at_kill.state
    done_by_victim = sum(t.state.name == "COMPLETE" and t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
                         for t in _trials(url, "dist"))
    restarted = _start_worker(path, tmp_path, "w1-restarted")
    for tag, proc in [("w2", workers["w2"]), ("w3", workers["w3"]), ("w1-restarted", restarted)]:
        assert proc.wait(timeout=900) == 0, (tmp_path / f"{tag}.log").read_text()[-3000:]

    trials = _trials(url, "dist")
    by_state = collections.Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    # exact budget: BUDGET trials count, none left running; the killed one failed as stale and was re-queued
    assert by_state["RUNNING"] == 0
    assert len(complete) == BUDGET, by_state
    k = next(t for t in trials if t.number == killed.number)
    assert k.state.name == "FAIL" and failed_reason(k).startswith("stale"), k.user_attrs
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == killed.params
    assert [t.number for t in trials if t.state.name == "FAIL"] == [killed.number]
    # no duplicate: every finished trial was evaluated by one worker and has its own parameters
    assert len({tuple(sorted(t.params.items())) for t in complete}) == BUDGET
    pids = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in complete}
    assert {str(workers["w2"].pid), str(workers["w3"].pid)} <= pids
    per_worker = collections.Counter(t.user_attrs["worker"].rsplit(":", 1)[1] for t in complete)
    assert per_worker[str(workers["w2"].pid)] <= CAP and per_worker[str(workers["w3"].pid)] <= CAP
    assert per_worker[str(restarted.pid)] >= 1, (per_worker, done_by_victim)  # the restarted worker continued the study
    # every finished trial is in MLflow exactly once, read back from the tracking server
    parent, runs = study_runs(mlflow_server.url, "dist")
    assert parent is not None
    logged = collections.Counter(int(r.data.tags["steeropt.trial"]) for r in runs)
    assert all(n == 1 for n in logged.values()), logged
    assert set(logged) == {t.number for t in trials if t.state.is_finished()}
    assert {int(r.data.tags["steeropt.trial"]) for r in runs if r.data.tags["state"] == "COMPLETE"} == \
        {t.number for t in complete}
    killed_run = next(r for r in runs if int(r.data.tags["steeropt.trial"]) == killed.number)
    assert killed_run.data.tags["state"] == "FAIL" and killed_run.data.tags["failed_reason"].startswith("stale")
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    parents = client.search_runs([parent.info.experiment_id], "tags.`steeropt.kind` = 'study'")
    assert len(parents) == 1
    first = next(r for r in runs if r.data.tags["state"] == "COMPLETE")
    samples = client.download_artifacts(first.info.run_id, "samples.jsonl", str(tmp_path))
    assert len(open(samples).read().splitlines()) == 2
    print(f"\nFIGURES distributed: workers=3 (+1 restarted), budget={BUDGET}, complete={len(complete)}, "
          f"killed trial={killed.number} (stale, re-queued as {retries[0].number}), states={dict(by_state)}, "
          f"trials per worker pid={dict(per_worker)}, "
          f"mlflow trial runs={len(runs)}, lost=0")


def test_concurrent_asks_never_overshoot_the_budget(postgres, tmp_path):
    """Two processes asking for the last slot at the same moment: one of them gives its trial back."""
    from steeropt.runner.ledger import Ledger
    from steeropt.search.optimizers import make_optimizer
    from steeropt.search.spaces import SearchSpaceSpec

    url = postgres.create_database("race")
    space = SearchSpaceSpec.model_validate({"name": "s", "sites": [
        {"layer": 4, "vector": "w", "alpha": {"low": 0.0, "high": 1.0}}]})

    def process():
        return make_optimizer("random", space=space, objectives=[("keyword_rate", "maximize"), ("coherency", "maximize")],
                              storage=url, study_name="race", seed=0)

    a, b = process(), process()
    la, lb = Ledger(a, 3), Ledger(b, 3)
    for c in a.ask(2):  # two trials done: one slot left
        a.tell(c.number, {"keyword_rate": 0.5, "coherency": 0.5})
    ca, cb = a.ask(1), b.ask(1)  # both saw one slot left and asked
    assert la.keep(ca) == ca
    assert lb.keep(cb) == []  # b's later trial is given back, untouched
    trials = _trials(url, "race")
    assert trials[cb[0].number].state.name == "WAITING" and trials[cb[0].number].params == cb[0].params
    assert la.count().used == 3 and la.count().running == 1
    # a finishes; the WAITING trial is simply never run: exactly 3 trials
    a.tell(ca[0].number, {"keyword_rate": 0.1, "coherency": 0.9})
    assert sum(t.state.is_finished() for t in _trials(url, "race")) == 3 and la.left() == 0
    # the given-back trial is handed out first when there is room again (e.g. a bigger budget)
    again = b.ask(1)
    assert again[0].number == cb[0].number and again[0].params == cb[0].params
    assert Ledger(b, 4).keep(again) == again
    a.close(), b.close()


def test_ax_with_several_workers_sees_running_trials_as_pending(postgres, tmp_path):
    """Ax/BoTorch is supported with several workers: each worker's Ax client attaches the RUNNING trials of
    the others as pending points (qLogNEHVI fantasises them), so two workers do not propose the same point."""
    from steeropt.search.optimizers import make_optimizer
    from steeropt.search.spaces import SearchSpaceSpec

    url = postgres.create_database("axworkers")
    space = SearchSpaceSpec.model_validate({"name": "s", "sites": [
        {"layer": 4, "vector": "w", "alpha": {"low": 0.0, "high": 1.0}},
        {"layer": 6, "vector": "w", "alpha": {"low": 0.0, "high": 1.0}}]})
    kw = dict(space=space, objectives=[("a", "maximize"), ("b", "maximize")], storage=url, study_name="ax", seed=0,
              settings={"initialization_budget": 2, "num_restarts": 2, "raw_samples": 32, **HEARTBEAT})
    w1, w2 = make_optimizer("botorch", **kw), make_optimizer("botorch", **kw)
    for c in w1.ask(2):
        x, y = c.params.values()
        w1.tell(c.number, {"a": x - y * y, "b": y - x * x})
    [p1] = w1.ask(1)  # a model-based proposal, left RUNNING
    [p2] = w2.ask(1)
    idx = w2._ax_index[p1.number]  # w2 attached w1's running trial ...
    assert w2._client._experiment.trials[idx].status.name == "RUNNING"  # ... as pending, not as data
    assert p2.number != p1.number and p2.params != p1.params
    w1.close(), w2.close()
