"""The answers of `steeropt serve`: a chat.completion body, or server-sent events (`stream: true`) as the
OpenAI API sends them: chat.completion.chunk deltas, then `data: [DONE]`.

Streamed text follows generation token by token (held back only while it could still be the start of a stop
sequence, or ends in an incomplete character). With `logprobs`, the token chunks are sent once the answer is
complete, each with its logprobs. An error after the stream started is an `error` event, then the end.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from steeropt.errors import SteeroptError
from steeropt.serve.batcher import Cancelled, Job, Output, eos_ids


def _token_entry(tok, t: int, lp: float) -> dict:
    s = tok.decode([t])
    return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}


def _logprobs(tok, out: Output) -> list[dict]:
    return [{**_token_entry(tok, t, v), "top_logprobs": [_token_entry(tok, i, x) for i, x in alts]}
            for t, v, alts in zip(out.token_ids, out.logprobs, out.top)]


def _text(tok, out: Output) -> str:
    return out.text if out.text is not None else tok.decode(out.token_ids, skip_special_tokens=True)


def _usage(job: Job, out: Output) -> dict:
    n = len(out.token_ids)
    return {"prompt_tokens": len(job.prompt_ids), "completion_tokens": n, "total_tokens": len(job.prompt_ids) + n}


def completion_body(job: Job, out: Output, tok, model_name: str) -> dict:
    lp = {"content": _logprobs(tok, out), "refusal": None} if job.want_logprobs else None
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": _text(tok, out)},
                         "logprobs": lp, "finish_reason": "stop" if out.finished else "length"}],
            "usage": _usage(job, out), "steering": out.steering}


def _event(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def safe_prefix(text: str, stops: list[str]) -> str:
    """The part of `text` that can be sent now: before any stop sequence, without a tail that could begin
    one, and without a trailing incomplete character."""
    cut = min([i for i in (text.find(s) for s in stops) if i >= 0], default=len(text))
    hold = max((len(s) for s in stops), default=1) - 1
    text = text[: min(cut, len(text) - hold)] if hold else text[:cut]
    return text.rstrip("\ufffd")


async def sse_events(job: Job, batcher, tok, lm, model_name: str):
    """Server-sent events for one streamed job. Submits it on the first step (a full queue raises there)."""
    loop = asyncio.get_running_loop()
    tokens: asyncio.Queue = asyncio.Queue()
    if not job.want_logprobs:
        job.on_token = lambda t: loop.call_soon_threadsafe(tokens.put_nowait, t)
    batcher.submit(job)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict, finish=None, **extra) -> str:
        return _event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                       "choices": [{"index": 0, "delta": delta, "logprobs": extra.pop("logprobs", None),
                                    "finish_reason": finish}], **extra})

    fut = asyncio.wrap_future(job.future)
    try:
        yield chunk({"role": "assistant", "content": ""}, steering=job.steering)
        ids, sent, ended, eos = [], "", False, eos_ids(lm)
        timed_out = _event({"error": {"message": "the request took longer than this server's time limit",
                                      "type": "timeout", "param": None, "code": None}})
        while not fut.done() or not tokens.empty():
            if time.monotonic() > job.deadline:
                job.cancelled.set()
                yield timed_out
                return
            try:
                t = await asyncio.wait_for(tokens.get(), timeout=0.2)
            except asyncio.TimeoutError:
                continue
            if ended or t in eos:
                ended = True
                continue
            ids.append(t)
            now = safe_prefix(tok.decode(ids, skip_special_tokens=True), job.stop)
            if len(now) > len(sent) and now.startswith(sent):
                yield chunk({"content": now[len(sent):]})
                sent = now
        try:
            out = fut.result()
        except Cancelled:  # the batcher stopped the row at the deadline before this loop saw it pass
            yield timed_out
            return
        except Exception as exc:  # noqa: BLE001  (a row that failed: said in the stream, the server goes on)
            msg = str(exc) if isinstance(exc, SteeroptError) else "internal server error (see the server log)"
            yield _event({"error": {"message": msg, "type": "invalid_request_error", "param": None, "code": None}})
            return
        text = _text(tok, out)
        if job.want_logprobs:
            for entry in _logprobs(tok, out):
                yield chunk({"content": entry["token"]}, logprobs={"content": [entry], "refusal": None})
        elif text.startswith(sent) and len(text) > len(sent):
            yield chunk({"content": text[len(sent):]})
        yield chunk({}, "stop" if out.finished else "length", steering=out.steering)
        if job.include_usage:
            yield _event({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model_name,
                          "choices": [], "usage": _usage(job, out)})
        yield "data: [DONE]\n\n"
    finally:
        if not fut.done():
            job.cancelled.set()  # the client left mid-stream: its row stops at the next step
            fut.cancel()
