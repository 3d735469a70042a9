"""Real servers for the scale and fault tests: PostgreSQL and an MLflow tracking server, each started once
per session on 127.0.0.1 (skipped, saying why, when one cannot run here); the llama.cpp judge server and
its fault proxy come from tests/conftest.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import MlflowServer, PostgresServer, postgres_available
from tests.study_tests.conftest import tiny_spec  # noqa: F401  (re-exported for the tests here)

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra) -> dict:
    """The environment of a `python -m steeropt ...` subprocess: one thread, unbuffered output."""
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                HF_HUB_OFFLINE="1", **extra)


def steeropt(*args, cwd, env=None, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "steeropt", *map(str, args)], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="session")
def postgres():
    why = postgres_available()
    if why:
        pytest.skip(why)
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer.start(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


