from __future__ import annotations

import pytest

from steeropt.types import Sample


@pytest.fixture(scope="session")
def lm(request):
    """The embedded model, loaded once per session (the suite-wide `embedded` fixture when there is one)."""
    try:
        return request.getfixturevalue("embedded")
    except pytest.FixtureLookupError:
        from steeropt.engine.models import load_model

        return load_model("smollm2-135m-instruct")


def make_sample(lm, prompt: str, text: str, *, candidate: int = 0, family: str = "f", finished: bool = True,
                ids: list[int] | None = None) -> Sample:
    """A Sample from a hand-written response (token ids from the real tokenizer, EOS appended if finished)."""
    tok = lm.tokenizer
    pid = tok(lm.render(prompt), add_special_tokens=False)["input_ids"]
    if ids is None:
        ids = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if finished else [])
    return Sample(prompt=prompt, family=family, prompt_ids=pid, token_ids=ids, text=text, logprobs=[],
                  finished=finished, candidate=candidate, seed=0)
