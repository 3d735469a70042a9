"""Session fixtures for the judge tests: the embedded model, a real llama.cpp server, a fault proxy."""
from __future__ import annotations

import pytest



@pytest.fixture(scope="session")
def judge_lm(request):
    """The embedded model, loaded once (the shared `embedded` fixture when the suite has one)."""
    try:
        return request.getfixturevalue("embedded")
    except pytest.FixtureLookupError:
        from steeropt.engine.models import load_model

        return load_model("smollm2-135m-instruct")


