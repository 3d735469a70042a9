"""Bad input through the real CLI: `python -m steeropt run <file>` in an empty directory exits 2 with one
message naming what is wrong, prints no traceback, and writes nothing (no storage, no MLflow store, no
runs/, no judge cache; nothing on a tracking server).

Corpus: tests/data/bad_inputs (vector and model files, storage, tracking, judge key; expected.yaml) plus the
study-kind cases of tests/data/bad_specs that tests/study_tests/test_study.py does not already run.
The cases run two at a time in one fixture (each loads the model when it gets that far)."""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.servers import ReadOnlyProxy
from tests.study_tests.test_study import BAD_CASES

from .conftest import REPO, cli_env

INPUTS = REPO / "tests" / "data" / "bad_inputs"
SPECS = REPO / "tests" / "data" / "bad_specs"
EXPECTED = yaml.safe_load((INPUTS / "expected.yaml").read_text())
SPEC_EXPECTED = yaml.safe_load((SPECS / "expected.yaml").read_text())
SPEC_CASES = sorted(n for n, c in SPEC_EXPECTED.items()
                    if c.get("kind", "study") == "study" and n[:-5] not in BAD_CASES)
ALL = [("bad_inputs", n) for n in sorted(EXPECTED)] + [("bad_specs", n) for n in SPEC_CASES]


def test_corpus_is_complete_and_large_enough():
    files = {p.name for p in INPUTS.glob("*.yaml")} - {"expected.yaml", "good.yaml", "base.part.yaml"}
    assert files == set(EXPECTED)
    assert len(EXPECTED) + len(SPEC_CASES) + len(BAD_CASES) >= 30


def test_control_is_valid(tmp_path):
    r = subprocess.run([sys.executable, "-m", "steeropt", "validate", str(INPUTS / "good.yaml")], cwd=tmp_path,
                       env=cli_env(COLUMNS="300"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path)) == []


@pytest.fixture(scope="module")
def results(request):
    """Run every case once (two at a time); {(corpus, name): (returncode, stderr, files left behind)}."""
    readonly = None
    env = cli_env(COLUMNS="300")
    env.pop("STEEROPT_TEST_UNSET_KEY", None)
    extra: dict = {}
    if any("mlflow_server" in c.get("needs", []) for c in EXPECTED.values()):
        server = request.getfixturevalue("mlflow_server")
        readonly = ReadOnlyProxy(server.url).start()
        from mlflow import MlflowClient

        before = {e.name for e in MlflowClient(server.url).search_experiments()}
        extra["tracking_refuses_writes.yaml"] = {"MLFLOW_TRACKING_URI": readonly.url}

    def run(case):
        corpus, name = case
        folder = INPUTS if corpus == "bad_inputs" else SPECS
        case_env = {**env, **extra.get(name, {})}
        if corpus == "bad_specs":
            case_env["STEEROPT_SPEC_PATH"] = str(SPECS / "support")
        with tempfile.TemporaryDirectory() as cwd:
            r = subprocess.run([sys.executable, "-m", "steeropt", "run", str(folder / name)], cwd=cwd, env=case_env,
                               capture_output=True, text=True, timeout=600)
            return case, (r.returncode, r.stderr, sorted(os.listdir(cwd)))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        out = dict(pool.map(run, ALL))
    if readonly is not None:
        out["readonly_refused"] = readonly.refused
        out["experiments_added"] = {e.name for e in MlflowClient(server.url).search_experiments()} - before
        readonly.stop()
    return out


@pytest.mark.parametrize("corpus, name", ALL, ids=[f"{c}/{n}" for c, n in ALL])
def test_bad_input_exit_2_clear_message_nothing_written(results, corpus, name):
    code, err, left = results[(corpus, name)]
    case = (EXPECTED if corpus == "bad_inputs" else SPEC_EXPECTED)[name]
    msg = " ".join(err.split())
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "error:" in msg
    frags = case["fragment"] if isinstance(case["fragment"], list) else [case["fragment"]]
    for frag in frags:
        assert " ".join(frag.split()) in msg, msg[-1500:]
    if case.get("field"):
        assert f"field '{case['field']}'" in msg, msg[-1500:]
    if case.get("stage", "spec") == "spec" or corpus == "bad_specs":
        assert name in msg or case.get("names", "") in msg  # a spec error names the file
    assert left == []  # no storage, no mlflow.db/mlruns, no runs/, no judge cache, no PWNED from a pickle
    assert "sk-live-0123456789abcdef" not in err  # a key written into a spec is not echoed back


def test_refusing_tracking_server_got_nothing(results):
    assert results["readonly_refused"] >= 1  # the write was attempted, refused, and nothing else was written
    assert results["experiments_added"] == set()
