"""The openai backend against a real llama.cpp server, directly and through a fault-injecting proxy."""
from __future__ import annotations

import pytest

from steeropt.errors import JudgeError
from steeropt.evaluation.judges import JudgeRequest, Rubric, load_judge_spec, make_judge

# A short 0-2 rubric answered in one token: keeps 200 requests through the 135M server fast.
# The text comes last so llama.cpp reuses the KV cache of the shared prefix between requests.
DIGIT = Rubric(template="Is the text below fluent English? Answer with one digit: 0 (no), 1 (partly) or 2 (yes).\n"
                        "Text: {response}", scale={"min": 0, "max": 2}, parse=r"^\s*(\d)(?!\d)",
               logprob_position="first", max_tokens=1, min_valid_mass=0.01)
# min_valid_mass is low on purpose: the 135M server model puts only ~5% of its first-token mass on
# digits (it likes to start with "The"); at persona_vectors' 0.25 these would all be missing.
FLUENT = "The bride walked down the aisle and the guests cheered."


def make(base_url, tmp_path, cache=True, **settings):
    spec = load_judge_spec("llama-server")
    spec = spec.model_copy(update={"base_url": base_url, "backoff_s": 0.05, "max_backoff_s": 5.0, "timeout_s": 20.0,
                                   "rubrics": {**spec.rubrics, "digit": DIGIT}, **settings})
    return make_judge(spec, cache=(tmp_path / "cache.sqlite") if cache else None)


def test_logprobs_through_the_real_server(llama_server, tmp_path):
    # a long timeout: on a loaded 2-core machine one request took > 20 s, was retried and broke the count below
    judge = make(llama_server.base_url, tmp_path, timeout_s=120.0)
    res = judge.judge([JudgeRequest("digit", "p", FLUENT), JudgeRequest("digit", "p", "xq plorm vantish grebble")])
    for r in res:  # the server returns top_logprobs: the score is the weighted mean, not the sampled digit
        assert r.missing is None and r.method == "logprobs" and r.valid_mass >= 0.01
        assert 0 <= r.score <= 1 and r.rating is not None
    assert judge.stats.http_attempts == 2 and judge.stats.retries == 0
    strict = make(llama_server.base_url, tmp_path, cache=False)
    strict.spec.rubrics["digit"] = DIGIT.model_copy(update={"min_valid_mass": 0.9})
    [r] = strict.judge([JudgeRequest("digit", "p", FLUENT)])
    assert r.score is None and "probability mass" in r.missing  # too little mass on ratings: missing, not 0


def test_shipped_rubrics_through_the_server_score_or_say_why(llama_server, tmp_path):
    judge = make(llama_server.base_url, tmp_path)
    reqs = [JudgeRequest(name, "Tell me about your weekend.", FLUENT, "weddings")
            for name in ("coherence", "trait", "fluency")]
    for r in judge.judge(reqs):
        # a 135M judge often ignores the format: then the score is missing with a reason, never 0
        assert (r.score is None) == (r.missing is not None)
        assert r.score is None or 0 <= r.score <= 1


def test_rerun_makes_zero_new_requests_and_the_key_stays_out(proxy, tmp_path, monkeypatch):
    monkeypatch.setenv("STEEROPT_TEST_JUDGE_KEY", "sk-test-SECRET-1234")
    judge = make(proxy.base_url, tmp_path, api_key_env="STEEROPT_TEST_JUDGE_KEY")
    reqs = [JudgeRequest("digit", "p", f"Sentence number {i} is short.") for i in range(5)]
    first = judge.judge(reqs)
    assert proxy.requests == 5 and all(a == "Bearer sk-test-SECRET-1234" for a in proxy.auth)
    again = make(proxy.base_url, tmp_path, api_key_env="STEEROPT_TEST_JUDGE_KEY")
    second = again.judge(reqs)
    assert proxy.requests == 5 and again.stats.calls == 0 and all(r.cached for r in second)
    assert [r.score for r in first] == [r.score for r in second]  # exact: read back from SQLite, not recomputed
    blob = (tmp_path / "cache.sqlite").read_bytes() + repr(judge).encode() + judge.identity.encode()
    blob += repr(judge.spec).encode() + repr(judge.stats).encode()
    assert b"SECRET" not in blob
    monkeypatch.delenv("STEEROPT_TEST_JUDGE_KEY")
    with pytest.raises(JudgeError, match="STEEROPT_TEST_JUDGE_KEY"):
        make(proxy.base_url, tmp_path, cache=False, api_key_env="STEEROPT_TEST_JUDGE_KEY").judge(
            [JudgeRequest("digit", "p", "new text")])


def test_429_retry_after_is_honoured_and_counted(proxy, tmp_path):
    proxy.inject("429", retry_after=1)
    judge = make(proxy.base_url, tmp_path)
    [r] = judge.judge([JudgeRequest("digit", "p", FLUENT)])
    assert r.missing is None and r.score is not None
    assert proxy.requests == 2 and judge.stats.retries == 1 and judge.stats.http_attempts == 2
    assert proxy.times[1] - proxy.times[0] >= 0.95  # backoff alone would be ~0.05 s


def test_5xx_retries_are_bounded_then_missing_not_cached(proxy, tmp_path):
    proxy.inject("500", times=10)
    judge = make(proxy.base_url, tmp_path, max_retries=2)
    [r] = judge.judge([JudgeRequest("digit", "p", FLUENT)])
    assert r.score is None and r.rating is None and "gave up after 3 attempts: HTTP 500" in r.missing
    assert proxy.requests == 3 and judge.stats.retries == 2 and judge.stats.missing == 1
    assert len(judge.cache) == 0  # a later run retries it
    proxy.reset()
    [r] = make(proxy.base_url, tmp_path).judge([JudgeRequest("digit", "p", FLUENT)])
    assert r.score is not None and not r.cached and proxy.requests == 1


def test_timeouts_and_truncated_bodies_are_retried(proxy, tmp_path):
    proxy.inject("delay", seconds=3.0).inject("truncate")
    judge = make(proxy.base_url, tmp_path, timeout_s=1.0)
    [r] = judge.judge([JudgeRequest("digit", "p", FLUENT)])
    assert r.missing is None and r.score is not None
    assert judge.stats.retries == 2 and proxy.requests == 3


def test_garbage_response_is_missing_not_zero(proxy, tmp_path):
    proxy.inject("garbage")
    judge = make(proxy.base_url, tmp_path)
    [r] = judge.judge([JudgeRequest("digit", "p", FLUENT)])
    assert r.score is None and r.rating is None and "malformed response" in r.missing
    assert judge.stats.missing == 1 and len(judge.cache) == 0


def test_200_concurrent_requests_bounded_and_answered_once(llama_server, tmp_path):
    from tests.servers import FaultProxy

    proxy = FaultProxy(llama_server.url, delay_s=0.05).start()
    try:
        judge = make(proxy.base_url, tmp_path, concurrency=4, cache=False)
        texts = [f"Item {i}: the cat sat on mat {i}." for i in range(200)]
        res = judge.judge([JudgeRequest("digit", "p", t) for t in texts])
    finally:
        proxy.stop()
    assert len(res) == 200 and all(r.missing is None for r in res)
    assert proxy.requests == 200 and judge.stats.http_attempts == 200 and judge.stats.retries == 0
    seen = [b["messages"][-1]["content"] for b in proxy.bodies]
    assert all(sum(t in s for s in seen) == 1 for t in texts)  # each request sent exactly once
    assert 1 < proxy.max_in_flight <= 4
