"""Issue 16 on real parts: a tiny study on the embedded model logs its samples as traces to a real `mlflow server`
on loopback; `steeropt review` tags samples to label; a person's HUMAN feedback (added through the API, as the UI
does) comes back as labels in `steeropt judge check --from-mlflow`, and nothing else does."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.study_tests.conftest import tiny_spec

STUDY = "review-loop"


def _records(runs_dir: Path, number: int) -> list[dict]:
    from steeropt.tracking.run_dir import samples_file

    return [json.loads(line) for line in samples_file(runs_dir, number).read_text().splitlines() if line.strip()]


def _run_study(spec_path: Path, runs_dir: Path, lm):
    from steeropt.runner.study import Study
    from steeropt.tracking.run_dir import write_baseline

    st = Study.from_spec(spec_path, runs_dir=runs_dir)
    st.setup(lm=lm)
    # the unsteered answers on disk, as the runner keeps them once its baseline_samples() calls write_baseline
    write_baseline(st.runs_dir, st.baseline_samples())
    try:
        st.run()
    finally:
        st.close()
    return st


@pytest.fixture(scope="module")
def study(tmp_path_factory, mlflow_server, embedded):
    tmp = tmp_path_factory.mktemp("review-loop")
    spec = tiny_spec(tmp, name=STUDY, objective="quickstart", tracking_uri=mlflow_server.url)
    st = _run_study(spec, tmp / "runs", embedded)
    import optuna

    trials = optuna.load_study(study_name=STUDY, storage=st.spec.storage).get_trials(deepcopy=False)
    return SimpleNamespace(spec=spec, tmp=tmp, runs=st.runs_dir, tracker=st.tracker, url=mlflow_server.url, trials=trials)


def _traces(tracker, **kw):
    return tracker.client.search_traces([tracker.experiment_id], max_results=500, **kw)


def test_samples_are_traces_with_scores_as_feedback(study):
    from steeropt.tracking import EXPERIMENT_KIND
    from steeropt.tracking.run_dir import read_baseline

    tr = study.tracker
    exp = tr.client.get_experiment(tr.experiment_id)
    assert exp.tags.get(EXPERIMENT_KIND[0]) == EXPERIMENT_KIND[1]
    run_ids = tr.trial_run_ids()
    assert sorted(run_ids) == [0, 1, 2, 3]
    base = read_baseline(study.runs)
    card = json.loads(Path(tr.client.download_artifacts(tr.parent_id, "judge_card.json", str(study.tmp))).read_text())
    traces = _traces(tr)
    assert len(traces) == 4 * 2  # traces: 1.0 (the default), 4 trials x 2 prompts
    differs = 0
    for t in traces:
        tags = t.info.tags
        number, index = int(tags["steeropt.trial"]), int(tags["steeropt.sample"])
        rec = next(r for r in _records(study.runs, number) if r["index"] == index)
        trial = next(x for x in study.trials if x.number == number)
        assert tags["steeropt.study"] == STUDY and tags["steeropt.family"] == rec["family"]
        assert tags["steeropt.controller"] == "add" and json.loads(tags["steeropt.alpha"]) == trial.params
        assert tags["steeropt.concept"] == "wedding"
        assert t.info.trace_metadata["mlflow.sourceRun"] == run_ids[number]  # the trace shows on its trial's run
        assert json.loads(t.data.request) == {"prompt": rec["prompt"]}
        outputs = json.loads(t.data.response)
        assert outputs["steered"] == rec["text"]
        assert outputs["unsteered"] == base[(rec["family"], rec["prompt"])]
        differs += outputs["unsteered"] != outputs["steered"]
        fb = {a.name: a for a in t.info.assessments}
        assert set(fb) == {"concept", "coherency", "relevance", "gate", "cheap_tier"}
        for name in ("concept", "coherency", "relevance"):
            a = fb[name]
            # the quickstart's scores are the calibrated cheap tier: computed by code, not by a judge
            assert a.source.source_type == "CODE" and a.source.source_id == "steeropt/quickstart"
            assert a.metadata["calibrated"] == "cheap-v1.calibration.yaml"
            assert a.metadata["sha256"] == card["scores"][name]["sha256"]
            if rec["scores"][name] is None:
                assert a.value is None and a.feedback.error is not None
            else:
                assert math.isclose(a.value, rec["scores"][name], abs_tol=1e-9)
            assert ("floor" in a.metadata) == (rec["filtered"] and name in ("coherency", "relevance"))
        assert fb["gate"].value == ("filtered" if rec["filtered"] else "pass")
        assert (fb["gate"].rationale or "") == ", ".join(rec["filter_reasons"])
        cheap = fb["cheap_tier"].value
        for k in ("rep_3", "fluency_proxy", "relevance_pmi", "keyword_hits"):
            assert math.isclose(cheap[k], rec["metrics"][k], rel_tol=1e-3, abs_tol=1e-9)
    assert differs >= 1  # steering changed at least one answer: steered and unsteered are not the same field twice
    files = {f.path for f in tr.client.list_artifacts(tr.parent_id, "study")}
    assert "study/front.png" in files


def test_review_tags_the_selected_samples_and_says_how_to_label(study, monkeypatch):
    from typer.testing import CliRunner

    from steeropt.cli import app
    from steeropt.runner.review import front_ranks, select
    from steeropt.specs import build

    monkeypatch.chdir(study.tmp)  # no profiles/ here: the chosen α is what pick would choose
    res = CliRunner().invoke(app, ["review", str(study.spec), "--n", "5", "--runs-dir", str(study.runs.parent)])
    assert res.exit_code == 0, res.output
    tagged = _traces(study.tracker, filter_string="tags.`steeropt.review` = '1'", include_spans=False)
    keys = {(int(t.info.tags["steeropt.trial"]), int(t.info.tags["steeropt.sample"])) for t in tagged}
    spec = build("study", study.spec)
    items = select(spec, study.trials, study.runs, n=5, chosen={})
    assert len(keys) == 5 and keys == {(x.trial, x.index) for x in items}
    assert len({(x.prompt, x.text) for x in items}) == 5
    ranks = front_ranks(study.trials, spec.part("objective").directions)
    assert any(ranks.get(x.trial) == 0 for x in items)  # the front is asked about
    exp_id = study.tracker.experiment_id
    assert f"{study.url}/#/experiments/{exp_id}/traces?workflowType=genai" in res.output
    # MLflow's review queue (the UI's "Review"): the same samples, one question per label
    import mlflow
    from mlflow.genai import label_schemas, review_queues

    mlflow.set_tracking_uri(study.url)
    [queue] = [q for q in review_queues.list_review_queues(experiment_id=exp_id) if q.name == "steeropt review 1"]
    assert f"selectedQueueId={queue.queue_id}" in res.output
    items_in_queue = {i.item_id for i in review_queues.list_review_queue_items(queue.queue_id)}
    assert items_in_queue == {t.info.trace_id for t in tagged}
    schemas = {x.schema_id: x for x in label_schemas.list_label_schemas(exp_id)}
    assert sorted(schemas[i].name for i in queue.schema_ids) == ["coherency", "concept", "relevance"]
    assert all(schemas[i].input.options == ["0", "1", "2"] for i in queue.schema_ids)
    assert "coherency" in res.output and "judge check --from-mlflow" in res.output
    res2 = CliRunner().invoke(app, ["review", str(study.spec), "--n", "2", "--runs-dir", str(study.runs.parent)])
    assert res2.exit_code == 0, res2.output
    assert "review round 2" in res2.output
    assert {q.name for q in review_queues.list_review_queues(experiment_id=exp_id)} >= {"steeropt review 1",
                                                                                       "steeropt review 2"}


def test_select_prefers_samples_near_the_chosen_alpha(study):
    from steeropt.runner.review import select
    from steeropt.specs import build

    spec = build("study", study.spec)
    far = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
    plain = {(x.trial, x.index): x for x in select(spec, study.trials, study.runs, n=100)}
    near = {(x.trial, x.index): x for x in select(spec, study.trials, study.runs, n=100,
                                                    chosen={"advice": dict(far.params)})}
    for key, x in near.items():
        if x.trial == far.number and x.family == "advice":
            assert math.isclose(x.priority, plain[key].priority + 1.0, abs_tol=1e-9)  # closeness 1 at the chosen α
            assert any("near the chosen α for advice" in r for r in x.reasons)
        elif x.family == "open_ended":
            assert math.isclose(x.priority, plain[key].priority, abs_tol=1e-9)  # another family's α is not its own


def test_human_feedback_read_back_as_labels(study, tmp_path, capsys):
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    from steeropt.cli import main
    from steeropt.tracking.labels import read_mlflow_labels
    from steeropt.evaluation.validation import read_labels

    mlflow.set_tracking_uri(study.url)
    human = AssessmentSource(AssessmentSourceType.HUMAN, "alice@example.com")
    traces = sorted(_traces(study.tracker, include_spans=False), key=lambda t: t.info.trace_id)
    expected = {}
    for t, (c, f, r) in zip(traces[:3], [(2, 2, 1), (0, 1, 2), (1, 0, 0)]):
        for name, v in (("concept", c), ("coherency", f), ("relevance", r)):
            mlflow.log_feedback(trace_id=t.info.trace_id, name=name, value=v, source=human)
        expected[t.info.trace_id] = {"concept": c, "coherency": f, "relevance": r}
    # a person changes their mind: the latest value counts; "fluency" is read as coherency
    t = traces[3]
    mlflow.log_feedback(trace_id=t.info.trace_id, name="concept", value=1, source=human)
    mlflow.log_feedback(trace_id=t.info.trace_id, name="concept", value=2.0, source=human)
    mlflow.log_feedback(trace_id=t.info.trace_id, name="fluency", value="1", source=human)
    expected[t.info.trace_id] = {"concept": 2, "coherency": 1}
    # not labels: a judge's feedback under a label's name, a person's comment, traces nobody labelled
    t = traces[4]
    mlflow.log_feedback(trace_id=t.info.trace_id, name="concept", value=2,
                        source=AssessmentSource(AssessmentSourceType.LLM_JUDGE, "some-judge"))
    mlflow.log_feedback(trace_id=t.info.trace_id, name="comment", value="odd one", source=human)

    items = read_mlflow_labels(STUDY, study.url)
    assert {it.extra["trace_id"]: it.labels for it in items} == expected
    by_id = {t.info.trace_id: t for t in traces}
    for it in items:
        tags = by_id[it.extra["trace_id"]].info.tags
        rec = next(r for r in _records(study.runs, int(tags["steeropt.trial"])) if r["index"] == int(tags["steeropt.sample"]))
        assert (it.prompt, it.response, it.concept) == (rec["prompt"], rec["text"], "wedding")
        assert it.extra["finished"] == rec["finished"]

    out = tmp_path / "labels.jsonl"
    with pytest.raises(SystemExit) as done:  # the entry point exits 0 on success
        main(["judge", "export", "--from-mlflow", STUDY, "--tracking-uri", study.url, "--out", str(out)])
    assert done.value.code in (0, None)
    assert {it.extra["trace_id"]: it.labels for it in read_labels(out)} == expected

    def check(*args):
        from typer.testing import CliRunner

        from steeropt.cli import app

        res = CliRunner().invoke(app, ["judge", "check", *args, "--json"])
        assert res.exit_code == 0, res.output
        return json.loads(res.output)

    from_mlflow = check("--from-mlflow", STUDY, "--tracking-uri", study.url)
    from_file = check(str(out))
    assert from_mlflow["n_items"] == 4
    assert from_mlflow["axes"]["concept"]["n"] == 4 and from_mlflow["axes"]["fluency"]["n"] == 4
    assert from_mlflow["axes"]["relevance"]["n"] == 3
    assert from_mlflow["labels"].startswith(f"mlflow:{STUDY}")
    from_mlflow.pop("labels"), from_file.pop("labels")
    assert from_mlflow == from_file  # the same per-axis report as from the JSONL file

    # a value outside the guide's scale is an error naming the trace, not a silent label
    mlflow.log_feedback(trace_id=traces[5].info.trace_id, name="relevance", value=7, source=human)
    with pytest.raises(SystemExit) as exc:
        main(["judge", "check", "--from-mlflow", STUDY, "--tracking-uri", study.url])
    assert exc.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert traces[5].info.trace_id in err and "HUMAN feedback 'relevance': expected 0, 1 or 2, got 7" in err


def test_trace_share_and_judge_feedback(tmp_path, embedded, monkeypatch):
    """A judged objective: its judge's scores are LLM_JUDGE feedback with the judge's identity and rubric hash;
    the spec's share picks a fixed subset of samples (the same in every worker and resume)."""
    from steeropt.tracking import traced

    monkeypatch.chdir(tmp_path)  # MLflow's local artifact root (./mlruns) stays in the test's directory
    gentle = {"name": "gentle", "sites": [{"layer": 4, "vector": "wedding", "controller": "add", "positions": "all",
                                           "alpha": {"low": 0.0, "high": 0.15}}]}  # samples that pass the gates
    spec = tiny_spec(tmp_path, name="judged", objective="quickstart-judge135m", traces=0.5, search_space=gentle,
                     budget={"trials": 4, "batch_size": 4, "prompts_per_trial": 2})
    st = _run_study(spec, tmp_path / "runs", embedded)
    tr = st.tracker
    card = json.loads(Path(tr.client.download_artifacts(tr.parent_id, "judge_card.json", str(tmp_path))).read_text())
    want = {(n, r["index"]) for n in range(4) for r in _records(st.runs_dir, n) if traced("judged", n, r["index"], 0.5)}
    traces = _traces(tr)
    got = {(int(t.info.tags["steeropt.trial"]), int(t.info.tags["steeropt.sample"])) for t in traces}
    assert got == want and 0 < len(got) < 8
    judged = 0
    for t in traces:
        number, index = int(t.info.tags["steeropt.trial"]), int(t.info.tags["steeropt.sample"])
        rec = next(r for r in _records(st.runs_dir, number) if r["index"] == index)
        fb = {a.name: a for a in t.info.assessments}
        assert fb["concept"].source.source_type == "CODE" and fb["concept"].metadata["metric"] == "keyword_hit"
        coh = fb["coherency"]
        if "coherency" in rec["judge"] and not rec["filtered"]:
            judged += 1
            assert coh.source.source_type == "LLM_JUDGE" and coh.source.source_id == card["judge"]
            assert coh.metadata["rubric"] == "fluency_yn"
            assert coh.metadata["rubric_sha"] == card["scores"]["coherency"]["rubric_sha"]
        else:
            assert coh.source.source_type == "CODE"
    assert judged >= 1


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,900", "--virtual-time-budget=15000"]


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_experiment_link_opens_the_runs_table(study, tmp_path):
    """The link steeropt prints opens the study's runs, not MLflow's empty GenAI overview (headless Chromium)."""
    from steeropt.tracking import ui_url

    url, serve = ui_url(study.url, study.tracker.experiment_id, "runs")
    assert serve is None and url.endswith("/runs?workflowType=machine_learning")
    def chromium(*args):  # a fresh profile each time: no saved UI mode
        profile = f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"
        return subprocess.run([_chromium(), *CHROMIUM_FLAGS, profile, *args, url], capture_output=True, text=True,
                              timeout=120)

    dom = chromium("--dump-dom").stdout
    assert "matching runs" in dom and STUDY in dom  # the runs table, with the study's parent run
    shot = tmp_path / "experiment.png"
    chromium(f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
