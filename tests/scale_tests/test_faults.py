"""Faults during a study: a judge endpoint that misbehaves (through a fault-injecting proxy in front of a
real llama.cpp server), NaN/Inf activations, and API keys that must never leak into what a study writes."""
from __future__ import annotations

import collections
import json
import sqlite3
import uuid
from pathlib import Path

import optuna
import pytest

from steeropt.tracking import study_runs

from .conftest import cli_env, steeropt, tiny_spec

# One-token 0-2 rubrics: cheap for the 135M server model; the text goes last so llama.cpp reuses the prefix.
RUBRIC = {"scale": {"min": 0, "max": 2}, "parse": r"^\s*(\d)(?!\d)", "logprob_position": "first",
          "max_tokens": 1, "min_valid_mass": 0.01}
MAX_RETRIES = 2


def judge_spec(base_url: str) -> dict:
    return {"name": "llama-behind-proxy", "backend": "openai", "base_url": base_url, "model": "smollm2",
            "api_key_env": "STEEROPT_TEST_JUDGE_KEY", "concurrency": 1, "timeout_s": 10, "max_retries": MAX_RETRIES,
            "backoff_s": 0.05, "max_backoff_s": 2.0, "cache": "judge_cache.sqlite", "rubrics": {
                "concept": {**RUBRIC, "template": "Does the text talk about {concept}? Answer with one digit: "
                                                  "0 (no), 1 (a little) or 2 (yes).\nText: {response}"},
                "fluency": {**RUBRIC, "template": "Is the text below fluent English? Answer with one digit: "
                                                  "0 (no), 1 (partly) or 2 (yes).\nText: {response}"}}}


@pytest.fixture(scope="module")
def judged_run(llama_server, tmp_path_factory):
    """One judged study through the CLI, with faults injected on the judge's HTTP traffic and a dummy API key
    in the environment. Returns what the tests below inspect."""
    from tests.servers import FaultProxy

    tmp = tmp_path_factory.mktemp("judged")
    proxy = FaultProxy(llama_server.url).start()
    key = f"sk-steeropt-test-{uuid.uuid4().hex}"
    # Faults go to HTTP attempts in arrival order. One request is in flight at a time (concurrency 1), but a
    # request waiting out its backoff lets the next one go first, so which request gets which fault depends on
    # timing: the test rebuilds that from the proxy's log (FaultProxy.bodies) instead of assuming it.
    # Trial 1 (batch_size 1, <= 4 judge requests) takes 3 x 4 HTTP 500s: with at most 3 attempts per request,
    # every one of its requests gives up -> its samples are missing -> the trial fails with that reason.
    injected = ["500"] * ((MAX_RETRIES + 1) * 4)
    injected += ["429", "delay", "truncate", "garbage"]  # later requests: retried (or, garbage, missing at once)
    for f in injected:
        proxy.inject(f, **({"retry_after": 1} if f == "429" else {"seconds": 11} if f == "delay" else {}))
    path = tiny_spec(tmp, name="judged-faults", objective="tiered-default", judge=judge_spec(proxy.base_url),
                     search_space={"name": "gentle", "sites": [{"layer": 4, "vector": "wedding", "controller": "add",
                                                                "alpha": {"low": 0.0, "high": 0.3}}]},
                     budget={"trials": 3, "batch_size": 1, "prompts_per_trial": 2})
    r = steeropt("run", path, cwd=tmp, env=cli_env(STEEROPT_TEST_JUDGE_KEY=key), timeout=900)
    proxy.stop()
    (tmp / "cli.stdout.log").write_text(r.stdout)
    (tmp / "cli.stderr.log").write_text(r.stderr)
    (tmp / "proxy-log.json").write_text(json.dumps({"bodies": proxy.bodies, "injected": injected}))
    st = optuna.load_study(study_name="judged-faults", storage=f"sqlite:///{tmp / 'study.db'}")
    return {"proc": r, "tmp": tmp, "proxy": proxy, "key": key, "trials": st.trials, "injected": injected,
            "arms": st.user_attrs.get("arms") or {}}


def replay(bodies: list[dict], injected: list[str]) -> list[tuple[tuple, str, int]]:
    """The judge requests as the proxy saw them: (rubric, response) -> outcome per request, in order.
    An attempt that got "pass" succeeds; "garbage" is final (malformed); any other fault is a failed attempt,
    retried until MAX_RETRIES + 1 attempts have failed."""
    open_: dict[tuple, int] = {}
    out = []
    for i, body in enumerate(bodies):
        fault = injected[i] if i < len(injected) else "pass"
        content = body["messages"][-1]["content"]
        key = ("concept" if content.startswith("Does the text") else "fluency", content.split("\nText: ", 1)[1])
        failed = open_.pop(key, 0)
        if fault == "pass":
            out.append((key, "scored", failed + 1))
        elif fault == "garbage":
            out.append((key, "malformed response", failed + 1))
        elif failed + 1 == MAX_RETRIES + 1:
            out.append((key, f"gave up after {MAX_RETRIES + 1} attempts", failed + 1))
        else:
            open_[key] = failed + 1
    assert not open_, f"requests left without an outcome: {open_}"
    return out


def test_judge_faults_study_completes_missing_counted_never_zero(judged_run):
    r, proxy, trials = judged_run["proc"], judged_run["proxy"], judged_run["trials"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    assert not proxy.faults  # every injected fault reached the judge
    requests = replay(proxy.bodies, judged_run["injected"])
    assert all(n <= MAX_RETRIES + 1 for _, _, n in requests)  # bounded retries
    counts = [t.user_attrs.get("counts") or {} for t in trials]
    # after the trials the study scores its unsteered and prompted arms with the same judge (runner.arms)
    arms = judged_run["arms"]
    assert set(arms) == {"unsteered", "prompted"}
    calls = sum(c.get("judge_calls", 0) for c in counts) + sum(a["counts"]["judge_calls"] for a in arms.values())
    assert proxy.requests == sum(n for _, _, n in requests)
    assert len(requests) == calls, (requests, counts)
    # the samples: a failed request makes exactly the samples of that judge call missing (None, never 0)
    expected = collections.Counter((k, why) for k, why, _ in requests if why != "scored")
    seen: collections.Counter = collections.Counter()
    rubric = {"concept": "concept", "coherency": "fluency"}
    runs_dir = judged_run["tmp"] / "runs" / "judged-faults"
    for t in trials:
        recs = [json.loads(x) for f in runs_dir.glob(f"trial-{t.number:05d}.jsonl") for x in f.read_text().splitlines()]
        per_call = set()
        for rec in recs:
            for name, j in rec["judge"].items():
                if j["missing"] is None:
                    assert 0 <= rec["scores"][name] <= 1
                    continue
                assert rec["scores"][name] is None and rec["missing"][name] == j["missing"]
                why = next((w for w in ("malformed response", "gave up after") if j["missing"].startswith(w)), j["missing"])
                per_call.add(((rubric[name], rec["text"]), why if why != "gave up after" else
                              f"gave up after {MAX_RETRIES + 1} attempts"))
        seen.update(per_call)
        if not recs:  # a failed trial keeps its samples too? (then they are checked above)
            assert t.state.name == "FAIL"
    by_fault = collections.Counter({k: v for k, v in seen.items() if k[1] in ("malformed response",
                                    f"gave up after {MAX_RETRIES + 1} attempts")})
    assert by_fault == expected, (by_fault, expected)
    missing = sum(c.get("missing", 0) for c in counts)
    failed = [t for t in trials if t.state.name == "FAIL"]
    for t in failed:  # too many missing samples: failed with the reason, not given a bad value
        assert "samples missing" in t.user_attrs["failed_reason"], t.user_attrs["failed_reason"]
    assert failed and any(why.startswith("gave up") for _, why in expected)
    n_faults = collections.Counter(judged_run["injected"])
    print(f"\nFIGURES judge faults: trials=3, judge requests={calls}, http attempts={proxy.requests}, "
          f"faults injected={len(judged_run['injected'])} {dict(n_faults)}, retried attempts={proxy.requests - calls}, "
          f"requests missing={sum(expected.values())} {dict(collections.Counter(w for _, w in expected))}, "
          f"samples missing={missing}, trials failed={len(failed)}, crashes=0")


def test_api_key_never_written(judged_run):
    key, tmp, proxy = judged_run["key"], judged_run["tmp"], judged_run["proxy"]
    assert proxy.auth and all(a == f"Bearer {key}" for a in proxy.auth)  # the key was used ...
    hits = []
    for f in tmp.rglob("*"):  # ... and is nowhere in the storage, MLflow store + artifacts, runs/, cache, logs
        if f.is_file() and key.encode() in f.read_bytes():
            hits.append(str(f.relative_to(tmp)))
    assert hits == []
    assert {"study.db", "mlflow.db", "judge_cache.sqlite", "cli.stderr.log"} <= {p.name for p in tmp.iterdir()}
    parent, runs = study_runs(f"sqlite:///{tmp / 'mlflow.db'}", "judged-faults")
    for run in [parent, *runs]:
        blob = json.dumps([run.data.params, run.data.tags, run.data.metrics])
        assert key not in blob and "STEEROPT_TEST_JUDGE_KEY" not in json.dumps(run.data.params.get("judge", ""))
    db = sqlite3.connect(tmp / "study.db")
    rows = [r for table in ("trial_user_attributes", "study_user_attributes", "trial_system_attributes")
            for r in db.execute(f"select * from {table}")]
    assert rows and key not in json.dumps(rows, default=str)


def test_nan_activations_fail_the_trial_and_the_study_goes_on(embedded, tmp_path, monkeypatch):
    """α so large that the residual stream overflows: generation meets non-finite logits, that candidate's
    trial fails with the reason (alone, even inside a batch), the others complete."""
    from steeropt.runner.study import Study

    monkeypatch.chdir(tmp_path)
    path = tiny_spec(tmp_path, name="overflow", optimizer={"name": "grid", "settings": {"grid_size": 4}},
                     search_space={"name": "overflow", "sites": [{"layer": 4, "vector": "wedding", "controller": "add",
                                                                  "alpha": {"low": 0.0, "high": 3e38}}]},
                     budget={"trials": 4, "batch_size": 3, "prompts_per_trial": 2})
    study = Study.from_spec(str(path))
    study.setup(lm=embedded)
    try:
        df = study.run()
    finally:
        study.close()
    assert len(df) == 4
    by_alpha = {r["params.alpha_l4_wedding"]: r for r in df.to_dict("records")}
    assert by_alpha[0.0]["state"] == "COMPLETE"
    bad = [r for a, r in by_alpha.items() if a > 0]
    assert all(r["state"] == "FAIL" and "non-finite" in r["failed_reason"] for r in bad), bad
    _, runs = study_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "overflow")
    tags = {int(r.data.tags["steeropt.trial"]): r.data.tags for r in runs}
    assert sorted(tags) == sorted(df["number"])
    assert all("non-finite" in tags[int(r["number"])]["failed_reason"] for r in bad)
    print(f"\nFIGURES NaN: trials=4, failed with non-finite logits={len(bad)}, completed=1")
