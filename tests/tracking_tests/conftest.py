"""A real `mlflow server` on 127.0.0.1 for the review-loop tests (the same helper as tests/scale_tests)."""
from __future__ import annotations

import pytest

from tests.servers import MlflowServer


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MlflowServer.start(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()
