"""Session fixtures on the real embedded model (loaded once per test session)."""
from __future__ import annotations

import os

import pytest

from steeropt.engine.threads import configure_threads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
configure_threads()  # the same rule as the package: $STEEROPT_NUM_THREADS, else min(2, cores)


@pytest.fixture(scope="session")
def embedded():
    from steeropt.engine.models import load_model

    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def wedding_concept():
    from steeropt.specs.concepts import load_concept

    return load_concept("wedding")


@pytest.fixture(scope="session")
def wedding_vectors(embedded, wedding_concept):
    """'wedding' (resid, layer 4, with affine map) and 'wedding_heads' (per-head, layer 4)."""
    from steeropt.engine.vectors import VectorSet, diff_in_means

    c = wedding_concept
    vs = VectorSet()
    vs.add(diff_in_means(embedded, c.positive, c.negative, 4, name="wedding"))
    vs.add(diff_in_means(embedded, c.positive, c.negative, 4, name="wedding_heads", site="heads"))
    return vs


@pytest.fixture(scope="session")
def qwen15():
    """Qwen2.5-Coder-1.5B-Instruct, the quickstart's steered model and judge: loaded once per session (~6 GB fp32;
    its part wheels come with scripts/setup_env.sh test). Tests on it are few and batch everything."""
    from steeropt.engine.models import load_model

    return load_model("qwen2.5-coder-1.5b-instruct")


@pytest.fixture(scope="session")
def llama_server():
    """A real OpenAI-compatible server (llama_cpp.server) on 127.0.0.1 serving the embedded GGUF."""
    from tests.servers import LlamaServer, llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama-cpp-python is not installed (pip install 'llama-cpp-python[server]')")
    server = LlamaServer.start()
    yield server
    server.stop()


@pytest.fixture()
def proxy(llama_server):
    """A fault-injecting HTTP proxy in front of the real judge server."""
    from tests.servers import FaultProxy

    p = FaultProxy(llama_server.url).start()
    yield p
    p.stop()
