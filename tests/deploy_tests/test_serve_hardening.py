"""`steeropt serve` behind a port: authentication, content type and body limits, a bounded `steer` override,
bounded work (queue limit, time limit, clients that leave), correct logprobs at unmeasured layers, and the
OpenAI client as users use it (streaming, stop, content parts, the developer role). Real uvicorn on loopback,
real embedded model (tests/deploy_tests/serving.py)."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from steeropt.serve.app import Limits
from steeropt.serve.requests import SteerPolicy

from .serving import ServeThread, chat, request

KEY = "serve-test-key-5b1e"


@pytest.fixture
def serve(embedded, deploy):
    started = []

    def make(**kw):
        s = ServeThread(embedded, deploy[0], **kw).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def client(url, key=KEY, **kw):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=kw.pop("timeout", 300), **kw)


def test_api_key_content_type_and_body_limit(serve):
    s = serve(api_key=KEY, limits=Limits(max_body_bytes=50_000), wait_ms=1)
    assert chat(s.url)[0] == 401
    status, headers, out = chat(s.url, key="wrong")
    assert status == 401 and headers.get("www-authenticate") == "Bearer" and "API key" in out["error"]["message"]
    assert request(s.url, "/v1/models", method="GET")[0] == 401
    assert request(s.url, "/health", method="GET")[0] == 200  # liveness needs no key
    r = client(s.url).chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert r.usage.completion_tokens <= 3
    with pytest.raises(openai.AuthenticationError):
        client(s.url, key="nope").chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}])
    # a text/plain POST (what any web page may send cross-origin without a preflight) runs nothing
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode()
    status, _, out = request(s.url, "/v1/chat/completions", body, headers={"Content-Type": "text/plain",
                                                                            "Authorization": f"Bearer {KEY}"})
    assert status == 415 and "application/json" in out["error"]["message"]
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 60_000}]}).encode()
    status, _, out = request(s.url, "/v1/chat/completions", big, headers={"Authorization": f"Bearer {KEY}"})
    assert status == 413 and "50000" in out["error"]["message"]
    assert s.batcher.batches == [1]  # only the one authorised, well-formed request reached the model


def test_steer_override_is_off_unless_allowed(serve):
    s = serve(wait_ms=1)
    status, _, out = chat(s.url, steer={"layer": 4, "alpha": 0.2})
    assert status == 403 and "--allow-steer" in out["error"]["message"] and out["error"]["param"] == "steer"
    assert chat(s.url, family="advice")[0] == 200


@pytest.mark.parametrize("steer, words", [
    ({"layer": 4, "alpha": 1e9}, "outside this server's range [0, 1]"),
    ({"layer": 4, "alpha": -5}, "outside this server's range [0, 1]"),
    ([{"layer": 4, "alpha": 0}, {"layer": 4, "alpha": 0.5}], "given twice"),
    ({"layer": 4, "alpha": 0.2, "heads": 5}, "heads must be a non-empty list"),
    ({"layer": 4, "alpha": 0.2, "heads": ["a"]}, "heads must be a non-empty list"),
    ({"layer": 4, "alpha": 0.2, "positions": "sometimes"}, "positions must be one of"),
    ([{"layer": i % 30, "alpha": 0.1} for i in range(200)], "at most 8"),
])
def test_steer_override_is_bounded(serve, steer, words):
    s = serve(policy=SteerPolicy(allowed=True), wait_ms=1)
    status, _, out = chat(s.url, steer=steer)
    assert status == 400, out
    assert words in out["error"]["message"] and out["error"]["param"] == "steer"
    assert s.batcher.batches == []  # refused before any generation


def test_unmeasured_layers_get_correct_logprobs(serve, embedded):
    s = serve(policy=SteerPolicy(allowed=True), wait_ms=1)
    for layer in (7, 11):  # never measured: steer() measures their neutral norm (forward passes) first
        embedded._neutral_norms.pop((layer, "resid"), None)
    steer = [{"layer": 7, "alpha": 0.1}, {"layer": 11, "alpha": 0.1}]
    fields = dict(max_tokens=6, logprobs=True, top_logprobs=2, steer=steer)
    first = chat(s.url, "Tell me about your day.", **fields)
    assert first[0] == 200, first
    again = chat(s.url, "Tell me about your day.", **fields)[2]
    a, b = first[2]["choices"][0]["logprobs"]["content"], again["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in a] == [t["token"] for t in b]
    for x, y in zip(a, b):
        assert x["logprob"] == pytest.approx(y["logprob"], abs=1e-3)
        assert x["token"] == x["top_logprobs"][0]["token"]  # greedy: the chosen token is the best one, not shifted
        assert x["logprob"] == pytest.approx(x["top_logprobs"][0]["logprob"], abs=1e-4)


def test_openai_client_stream_stop_parts_developer(serve, deploy):
    s = serve(wait_ms=1)
    c = client(s.url, key="unused")
    prompt = deploy[1]["open_ended"].held_out[0]
    msgs = [{"role": "user", "content": prompt}]
    plain = c.chat.completions.create(model="x", messages=msgs, max_tokens=12, extra_body={"family": "open_ended"})
    text = plain.choices[0].message.content
    chunks = list(c.chat.completions.create(model="x", messages=msgs, max_tokens=12, stream=True,
                                            stream_options={"include_usage": True},
                                            extra_body={"family": "open_ended"}))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) >= 2  # token by token
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == plain.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    words = text.split()
    assert len(words) >= 3, text
    stop = " " + words[2]
    cut = c.chat.completions.create(model="x", messages=msgs, max_tokens=12, stop=[stop],
                                    extra_body={"family": "open_ended"})
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].message.content == text[:text.index(stop)]
    streamed_cut = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="x", messages=msgs, max_tokens=12, stop=stop, stream=True, extra_body={"family": "open_ended"})
        if ch.choices)
    assert streamed_cut == cut.choices[0].message.content
    parts = c.chat.completions.create(model="x", max_tokens=12, extra_body={"family": "open_ended"}, messages=[
        {"role": "user", "content": [{"type": "text", "text": prompt[:10]}, {"type": "text", "text": prompt[10:]}]}])
    assert parts.choices[0].message.content == text
    sys_msg = "You are a terse assistant."
    dev = c.chat.completions.create(model="x", max_tokens=8, extra_body={"family": "none"},
                                    messages=[{"role": "developer", "content": sys_msg}, *msgs])
    ref = c.chat.completions.create(model="x", max_tokens=8, extra_body={"family": "none"},
                                    messages=[{"role": "system", "content": sys_msg}, *msgs])
    assert dev.choices[0].message.content == ref.choices[0].message.content
    status, _, out = chat(s.url, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])
    assert status == 400 and "only text parts" in out["error"]["message"]


def test_full_queue_gets_503_with_retry_after(serve):
    s = serve(max_batch=1, max_queue=2, wait_ms=1)

    def one(i):
        return chat(s.url, f"Count to {i}.", max_tokens=24, family="none")

    with ThreadPoolExecutor(10) as pool:
        got = list(pool.map(one, range(10)))
    codes = sorted(g[0] for g in got)
    assert set(codes) == {200, 503} and codes.count(200) >= 3, codes
    busy = next(g for g in got if g[0] == 503)
    assert int(busy[1]["retry-after"]) >= 1 and busy[2]["error"]["type"] == "server_busy"


def test_clients_that_leave_and_the_time_limit_free_the_model(serve):
    s = serve(max_batch=4, wait_ms=1, limits=Limits(request_timeout_s=2.0, max_tokens_cap=512))
    t0 = time.monotonic()
    alone = chat(s.url, "Say hi.", max_tokens=4, family="none")
    single_s = time.monotonic() - t0
    assert alone[0] == 200

    def gives_up(i):
        try:
            client(s.url, timeout=0.5).chat.completions.create(
                model="x", messages=[{"role": "user", "content": f"Write a long story number {i}."}], max_tokens=500,
                extra_body={"family": "none"})
        except openai.APITimeoutError:
            return "gave up"

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(gives_up, range(3))) == ["gave up"] * 3
    t0 = time.monotonic()
    after = chat(s.url, "Say hi.", max_tokens=4, family="none")
    waited = time.monotonic() - t0
    assert after[0] == 200 and after[2]["choices"][0]["message"]["content"] == alone[2]["choices"][0]["message"]["content"]
    assert waited < single_s + 3.0, (waited, single_s)  # not behind three 500-token generations
    assert s.batcher.dropped >= 3
    # Past the limit the row is stopped; its partial text is not an answer and must not come back as a 200
    # with finish_reason "length".
    short = serve(max_batch=4, wait_ms=1, limits=Limits(request_timeout_s=0.3, max_tokens_cap=512))
    t0 = time.monotonic()
    status, _, out = chat(short.url, "Write a very long story.", max_tokens=500, family="none")
    assert status == 504 and "limit of 0.3 s" in out["error"]["message"] and time.monotonic() - t0 < 3


def test_long_body_is_tokenized_off_the_event_loop(serve):
    s = serve(wait_ms=1, limits=Limits(max_body_bytes=20_000_000, max_prompt_tokens=2048))
    done = threading.Event()
    result = {}

    def post():
        result["r"] = chat(s.url, "word " * 2_000_000)
        done.set()

    threading.Thread(target=post, daemon=True).start()
    worst = 0.0
    while not done.is_set():
        t0 = time.monotonic()
        assert request(s.url, "/health", method="GET", timeout=10)[0] == 200
        worst = max(worst, time.monotonic() - t0)
        time.sleep(0.05)
    status, _, out = result["r"]
    assert status == 400 and "tokens; this server takes at most 2048" in out["error"]["message"]
    assert worst < 1.0, worst


def test_a_nan_row_fails_alone_in_one_batch(serve):
    s = serve(policy=SteerPolicy(allowed=True, low=-1e40, high=1e40), max_batch=8, wait_ms=300)
    bodies = [dict(steer={"layer": 4, "alpha": 1e38})] + [dict(family="none")] * 4

    with ThreadPoolExecutor(5) as pool:
        got = list(pool.map(lambda b: chat(s.url, "Hi", max_tokens=4, **b), bodies))
    assert got[0][0] == 400 and "NaN" in got[0][2]["error"]["message"]
    assert [g[0] for g in got[1:]] == [200] * 4
    assert len({g[2]["choices"][0]["message"]["content"] for g in got[1:]}) == 1
    assert len(s.batcher.batches) <= 2 and max(s.batcher.batches) >= 4  # no row-by-row retries


def test_an_internal_failure_is_logged_and_not_shown(serve, caplog):
    s = serve(wait_ms=1)
    s.app.state.steering.tok = None  # fault injection: the HTTP side's tokenizer is gone
    with caplog.at_level("ERROR", logger="steeropt.serve"):
        status, _, out = chat(s.url, family="none")
    assert status == 500 and out["error"]["type"] == "server_error"
    msg = out["error"]["message"]
    assert "NoneType" not in msg and "AttributeError" not in msg and "Traceback" not in msg
    ref = msg.split("reference ")[1].split(";")[0]
    logged = [r for r in caplog.records if ref in r.getMessage()]
    assert logged and logged[0].exc_info and logged[0].exc_info[0] is AttributeError
