"""Tuning studies end to end: every optimizer on the real model, storage + MLflow read back, resume,
reproducibility, SIGKILL, malformed specs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from steeropt.runner.study import Study
from steeropt.tracking import study_runs

REPO = Path(__file__).resolve().parents[2]


def run_study(path, lm, n_trials=None):
    study = Study.from_spec(str(path))
    study.setup(lm=lm)
    try:
        return study, study.run(n_trials=n_trials)
    finally:
        study.close()


@pytest.mark.parametrize("optimizer, settings", [
    ("grid", {}), ("random", {}), ("sobol", {}), ("tpe", {"n_startup_trials": 2}), ("nsga2", {"population_size": 2}),
    ("botorch", {"initialization_budget": 2}),
])
def test_each_optimizer_lands_in_optuna_and_mlflow(make_spec, embedded, optimizer, settings, tmp_path):
    trials = 3 if optimizer == "botorch" else 4
    path = make_spec(name=f"s-{optimizer}", optimizer={"name": optimizer, "settings": settings},
                     budget={"trials": trials, "batch_size": 2, "prompts_per_trial": 2})
    study, df = run_study(path, embedded)
    assert len(df) == trials and set(df["state"]) == {"COMPLETE"}
    assert df["keyword_rate"].between(0, 1).all() and df["coherency"].between(0, 1).all()
    # read back through Optuna's own API
    stored = optuna.load_study(study_name=f"s-{optimizer}", storage=f"sqlite:///{tmp_path / 'study.db'}")
    done = [t for t in stored.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == trials
    assert {t.number: t.values for t in done} == {int(r.number): [r.keyword_rate, r.coherency] for r in df.itertuples()}
    # ... and through MLflow's
    parent, runs = study_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", f"s-{optimizer}")
    assert parent is not None and parent.data.params["optimizer"] == optimizer
    assert parent.data.params["model_sha256"] == embedded.sha256
    assert sorted(int(r.data.tags["steeropt.trial"]) for r in runs) == sorted(t.number for t in done)
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "coherency" in r.data.metrics and "params" not in r.data.params
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/trials.csv", "study/front.csv", "study/front.png", "study/front.html", "study/hypervolume.png"} <= names
    samples = client.download_artifacts(runs[0].info.run_id, "samples.jsonl", str(tmp_path))
    assert len(Path(samples).read_text().splitlines()) == 2


def test_judged_study_with_local_judge(make_spec, embedded, tmp_path):
    path = make_spec(name="judged", objective="tiered-default", budget={"trials": 2, "batch_size": 2, "prompts_per_trial": 2})
    study, df = run_study(path, embedded)
    assert len(df) == 2 and set(df["state"]) == {"COMPLETE"}
    assert df["count.samples"].tolist() == [2, 2]
    judged = df["count.samples"] - df["count.filtered"]
    assert (df["count.judge_requests"] >= 2 * judged).all()  # concept + fluency per surviving sample
    # runs/<study>/timing.json: where the time went, and the judge work the gates spared
    import json

    timing = json.loads((tmp_path / "runs" / "judged" / "timing.json").read_text())
    assert {"setup", "generation", "cheap_tier", "judge"} <= set(timing["phases"])
    assert all(timing["phases"][k]["seconds"] > 0 and timing["phases"][k]["calls"] >= 1 for k in ("generation", "judge"))
    assert timing["judge_requests"] >= df["count.judge_requests"].sum()
    # a filtered sample is judged on the concept only: the gates spare its fluency rubric (the floored axis)
    assert timing["judge_requests_spared"] >= (df["count.filtered"] - df["count.audited"]).sum()
    assert timing["since_import_s"] >= sum(v["seconds"] for v in timing["phases"].values())
    # evaluating the same samples again (as a re-run would) makes no new judge calls: the cache answers
    study = Study.from_spec(str(path))
    study.setup(lm=embedded)
    try:
        plans = [study.space.materialize({k[7:]: v for k, v in r.items() if k.startswith("params.")})
                 for r in df.to_dict("records")]
        calls = study.judge.stats.calls
        study._evaluate(plans, study.baseline_samples())
        assert study.judge.stats.calls == calls and study.judge.stats.cache_hits >= judged.sum() * 2
    finally:
        study.close()


def test_same_spec_and_seed_reproduce_trial_results(tmp_path, embedded, monkeypatch):
    from tests.study_tests.conftest import tiny_spec

    frames = []
    for k in range(2):
        d = tmp_path / f"r{k}"
        d.mkdir()
        monkeypatch.chdir(d)
        path = tiny_spec(d, name="repro", optimizer={"name": "tpe", "settings": {"n_startup_trials": 2}})
        frames.append(run_study(path, embedded)[1])
    a, b = frames
    cols = [c for c in a.columns if c.startswith(("params.", "value.")) or c in ("keyword_rate", "coherency")]
    assert a[cols].equals(b[cols])


def test_resume_continues_without_redoing(make_spec, embedded, tmp_path):
    path = make_spec(name="resume", budget={"trials": 4, "batch_size": 2, "prompts_per_trial": 2})
    _, first = run_study(path, embedded, n_trials=2)
    assert len(first) == 2
    _, second = run_study(path, embedded)
    assert len(second) == 4 and second["number"].tolist() == [0, 1, 2, 3]
    assert second.iloc[:2]["coherency"].tolist() == first["coherency"].tolist()
    _, runs = study_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "resume")
    assert sorted(int(r.data.tags["steeropt.trial"]) for r in runs) == [0, 1, 2, 3]


def test_sigkill_mid_run_then_rerun(make_spec, tmp_path):
    import datetime as dt

    from steeropt.search.optimizers.base import failed_reason

    path = make_spec(name="killed", budget={"trials": 6, "batch_size": 1, "prompts_per_trial": 2})
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "steeropt", "run", str(path)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    deadline, killed = time.time() + 600, None
    while killed is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
        try:
            st = optuna.load_study(study_name="killed", storage=storage)
        except Exception:
            continue
        trials = st.get_trials(deepcopy=False)
        # kill just after a trial started (< 0.5 s ago; generating and scoring it takes longer), once 2 are done
        fresh = [t for t in trials if t.state.name == "RUNNING"
                 and dt.datetime.now() - t.datetime_start < dt.timedelta(seconds=0.5)]
        if sum(t.state.name == "COMPLETE" for t in trials) >= 2 and fresh:
            proc.send_signal(signal.SIGKILL)
            killed = fresh[0]
    proc.kill()
    proc.wait()
    assert killed is not None, "no trial was seen running after 2 complete ones"
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    assert trials[killed.number].state.name == "RUNNING"  # the kill landed mid-trial
    before = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    assert 2 <= len(before) < 6
    rerun = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    complete = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    assert len(complete) == 6
    assert all(complete[n] == v for n, v in before.items())  # nothing lost or redone
    # the trial running at the kill is failed as stale and re-queued once, with the same params
    assert [t.number for t in trials if t.state.name == "FAIL"] == [killed.number]
    assert failed_reason(trials[killed.number]).startswith("stale")
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == killed.params
    _, runs = study_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "killed")
    logged = [int(r.data.tags["steeropt.trial"]) for r in runs]
    assert sorted(logged) == sorted(t.number for t in trials if t.state.is_finished())  # each once in MLflow


BAD = REPO / "tests" / "data" / "bad_specs"
BAD_CASES = ["yaml_syntax", "unknown_top_key", "unknown_nested_key", "wrong_type", "negative_trials",
             "missing_required", "unknown_objective", "unknown_search_space", "include_cycle", "missing_data_file",
             "empty_family_inline", "duplicate_families", "layer_out_of_range", "bad_fraction", "unknown_optimizer",
             "inverted_bounds", "unknown_controller", "bad_storage"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_malformed_spec_exit_2_names_file_and_writes_nothing(case, tmp_path):
    import yaml

    expected = yaml.safe_load((BAD / "expected.yaml").read_text())[f"{case}.yaml"]
    env = dict(os.environ, STEEROPT_SPEC_PATH=str(BAD / "support"))  # the corpus' own support specs
    r = subprocess.run([sys.executable, "-m", "steeropt", "run", str(BAD / f"{case}.yaml")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2, r.stderr[-1500:]
    msg = " ".join(r.stderr.split())
    assert f"{case}.yaml" in msg or expected.get("names", "") in msg
    assert " ".join(expected["fragment"].split()) in msg
    if expected.get("field"):
        assert expected["field"] in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no storage, no mlflow.db, no runs/


def test_three_axis_quickstart_objective_and_its_judge_card(make_spec, embedded, tmp_path):
    """The quickstart objective (calibrated cheap tier, no judge) scores every trial on concept, coherency
    (fluency) and relevance; the parent run carries a judge card naming each scorer and its held-out agreement."""
    import json

    from mlflow import MlflowClient

    path = make_spec(name="three-axis", objective="quickstart", optimizer={"name": "grid", "settings": {"grid_size": 2}},
                     budget={"trials": 2, "batch_size": 2, "prompts_per_trial": 2})
    study, df = run_study(path, embedded)
    assert set(df["state"]) == {"COMPLETE"}
    assert df["concept"].between(0, 1).all() and df["coherency"].between(0, 1).all()
    assert df["value.relevance"].between(0, 1).all()
    # the objective reads no preference/utility, so the steered completion-preference pass is skipped
    assert study.stack.tier1.preference is False
    assert "value.utility" not in df or df["value.utility"].isna().all()
    parent, _ = study_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "three-axis")
    card = json.loads(Path(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").download_artifacts(
        parent.info.run_id, "judge_card.json", str(tmp_path))).read_text())
    assert card["judge"] is None and set(card["scores"]) == {"concept", "coherency", "relevance"}
    rel = card["scores"]["relevance"]
    assert rel["calibrated"] == "cheap-v1.calibration.yaml" and rel["axis"] == "relevance"
    assert rel["agreement_on"].endswith("test.jsonl") and rel["agreement"]["spearman"] > 0.6
