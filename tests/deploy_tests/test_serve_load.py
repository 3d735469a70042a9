"""A bounded load test of `steeropt serve` on loopback: for a fixed window, steady clients (families, routed,
unsteered; logprobs on), clients that give up after 0.3 s, and clients sending bad requests, all at once.
Reports p50/p99 latency, rejects (503) and errors, and checks that an answer served under load equals the same
request served alone (tokens exactly on the first tokens; kernels may flip a late near-tie with the batch shape)."""
from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai

from .serving import ServeThread, chat

WINDOW_S = 20.0
STEADY, LEAVING, BAD = 6, 2, 2
MAX_TOKENS = 8
MODES = ({"family": "open_ended"}, {"family": "advice"}, {"family": "none"}, {})
BAD_BODIES = ({"family": "nope"}, {"max_tokens": 0}, {"messages": []}, {"top_logprobs": 3})


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def test_bounded_load_with_leaving_and_bad_clients(embedded, deploy, tmp_path):
    splits = deploy[1]
    prompts = list(splits["open_ended"].held_out[:2]) + list(splits["advice"].held_out[:2])
    combos = [(p, m) for p in prompts for m in MODES]
    s = ServeThread(embedded, deploy[0], max_batch=16, max_queue=24, wait_ms=20).start()
    lock = threading.Lock()
    served: list[tuple[int, list[str], float]] = []  # (combo, tokens, latency)
    stats = {"rejects": 0, "errors": [], "bad_ok": 0, "bad_wrong": [], "left": 0}
    stop_at = time.monotonic() + WINDOW_S

    def steady(k):
        i = k
        while time.monotonic() < stop_at:
            p, m = combos[i % len(combos)]
            i += STEADY
            t0 = time.monotonic()
            try:
                status, headers, out = chat(s.url, p, max_tokens=MAX_TOKENS, logprobs=True, timeout=60, **m)
            except OSError as exc:
                with lock:
                    stats["errors"].append(repr(exc))
                continue
            dt = time.monotonic() - t0
            with lock:
                if status == 200:
                    served.append((combos.index((p, m)), [t["token"] for t in out["choices"][0]["logprobs"]["content"]], dt))
                elif status == 503:
                    stats["rejects"] += 1
                    time.sleep(min(float(headers.get("retry-after", 1)), 2.0))
                else:
                    stats["errors"].append((status, out))

    def leaving(k):
        c = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0, timeout=0.3)
        while time.monotonic() < stop_at:
            try:
                c.chat.completions.create(model="x", messages=[{"role": "user", "content": f"A long story {k}"}],
                                          max_tokens=200, extra_body={"family": "none"})
            except (openai.APITimeoutError, openai.APIConnectionError):
                with lock:
                    stats["left"] += 1
            except openai.APIStatusError as exc:
                with lock:
                    if exc.status_code == 503:
                        stats["rejects"] += 1
                    else:
                        stats["errors"].append((exc.status_code, str(exc)))
            time.sleep(0.5)

    def bad(k):
        i = k
        while time.monotonic() < stop_at:
            status, _, out = chat(s.url, "Hello", **BAD_BODIES[i % len(BAD_BODIES)])
            i += 1
            with lock:
                if status == 400 and out["error"]["message"]:
                    stats["bad_ok"] += 1
                else:
                    stats["bad_wrong"].append((status, out))
            time.sleep(0.2)

    try:
        with ThreadPoolExecutor(STEADY + LEAVING + BAD) as pool:
            futs = [pool.submit(steady, k) for k in range(STEADY)] + [pool.submit(leaving, k) for k in range(LEAVING)]
            futs += [pool.submit(bad, k) for k in range(BAD)]
            for f in futs:
                f.result()
        batches = list(s.batcher.batches)
        alone = {}
        for ci in sorted({c for c, _, _ in served}):  # each request served again, alone
            p, m = combos[ci]
            out = chat(s.url, p, max_tokens=MAX_TOKENS, logprobs=True, **m)[2]
            alone[ci] = [t["token"] for t in out["choices"][0]["logprobs"]["content"]]
    finally:
        s.stop()
    lat = [dt for _, _, dt in served]
    equal = sum(toks == alone[ci] for ci, toks, _ in served)
    report = {"window_s": WINDOW_S, "clients": {"steady": STEADY, "leaving": LEAVING, "bad": BAD},
              "served": len(served), "p50_s": round(statistics.median(lat), 3), "p99_s": round(_pct(lat, 0.99), 3),
              "rejects_503": stats["rejects"], "errors": len(stats["errors"]), "bad_requests_400": stats["bad_ok"],
              "clients_left": stats["left"], "equal_to_alone": f"{equal}/{len(served)}",
              "generate_calls": len(batches), "max_rows": max(batches), "dropped_rows": s.batcher.dropped}
    (tmp_path / "load.json").write_text(json.dumps(report, indent=1))
    print("serve load:", json.dumps(report))
    assert stats["errors"] == [] and stats["bad_wrong"] == [], (stats["errors"][:3], stats["bad_wrong"][:3])
    assert len(served) >= 30 and stats["bad_ok"] >= 20 and stats["left"] >= 4
    assert report["p99_s"] < 15.0, report
    assert max(batches) > 1  # batched under load
    for ci, toks, _ in served:
        assert toks[:4] == alone[ci][:4], (combos[ci], toks, alone[ci])
    assert equal >= 0.95 * len(served), report
