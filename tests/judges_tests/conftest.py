"""Session fixtures for the judge tests: the embedded model, a real llama.cpp server, a fault proxy."""
from __future__ import annotations

import pytest

from tests.servers import FaultProxy, LlamaServer, llama_cpp_available


@pytest.fixture(scope="session")
def judge_lm(request):
    """The embedded model, loaded once (the shared `embedded` fixture when the suite has one)."""
    try:
        return request.getfixturevalue("embedded")
    except pytest.FixtureLookupError:
        from steeropt.models import load_model

        return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server (llama_cpp.server) on 127.0.0.1 serving the embedded GGUF."""
    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')")
    server = LlamaServer.start()
    yield server
    server.stop()


@pytest.fixture()
def proxy(llama_server):
    p = FaultProxy(llama_server.url).start()
    yield p
    p.stop()
