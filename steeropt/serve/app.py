"""The HTTP side of `steeropt serve`: an OpenAI-compatible `/v1/chat/completions` (FastAPI on uvicorn, both
installed with MLflow) that applies a steering profile per request.

What steers a request, first match wins:
- `"steer": [{"layer": 4, "vector": "wedding", "alpha": 0.3, "controller": "add"}]` (or one such object):
  an explicit override with the profile's vectors, α in the normalised unit; `[]` = unsteered. Off unless the
  operator starts the server with `--allow-steer`; then bounded to a strength range (serve/requests.py);
- `"family": "advice"`: that family's setting ("auto": routed; "none": unsteered);
- otherwise the profile's router picks the family of the last user message.
A family without a deployable setting, or a prompt the router calls unknown, gets the safe default: the
unsteered model. Every answer carries a `steering` object saying which family / sites / α were applied.
The openai client sends the extra fields with `extra_body={"family": ...}`.

Honoured: `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `logprobs`, `top_logprobs` (<= 20),
`stop`, `stream` (server-sent events, `stream_options.include_usage`), text content parts, the `developer` role.
Refused with a message: a missing or wrong API key (401, when the server has one), a body that is not
`application/json` (415) or too large (413), malformed JSON or messages, `n` > 1, `tools`, an unknown family or
vector, a bad layer or strength, a prompt past the context (400), the `steer` override when it is off (403),
a full queue (503 with Retry-After). A request past the time limit gets 504 and its row stops; a client that
leaves has its row stopped. A failure inside the server is logged with its traceback and answered with a 500
that says only that. A request never takes the server down.
"""
import asyncio
import hmac
import ipaddress
import json
import logging
import os
import sys
import time
import uuid
from contextlib import asynccontextmanager

from steeropt.deploy.profiles import load_profile
from steeropt.engine.models import load_model
from steeropt.errors import SteeroptError
from steeropt.serve.batcher import Cancelled, Job, MicroBatcher, Overloaded
from steeropt.serve.requests import BadRequest, Steering, SteerPolicy, parse_request
from steeropt.serve.stream import completion_body, sse_events

log = logging.getLogger("steeropt.serve")
API_KEY_ENV = "STEEROPT_SERVE_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Limits:
    """What bounds one request: body size, answer length, prompt length, time."""

    def __init__(self, *, max_tokens_cap: int = 512, max_prompt_tokens: int = 2048, max_body_bytes: int = 1_000_000,
                 request_timeout_s: float = 120.0):
        self.max_tokens_cap, self.max_prompt_tokens = max_tokens_cap, max_prompt_tokens
        self.max_body_bytes, self.request_timeout_s = max_body_bytes, request_timeout_s


def create_app(lm, profile, *, max_batch: int = 32, wait_ms: float = 10.0, max_queue: int = 64,
               limits: Limits | None = None, api_key: str | None = None, policy: SteerPolicy | None = None,
               allow_steer: bool = False):
    """The FastAPI app; `app.state.batcher` is the MicroBatcher (closed on shutdown). `api_key`: required as
    `Authorization: Bearer <key>` on /v1 (None: no key). `policy` bounds the `steer` override (default: off
    unless allow_steer, then the profile's range)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    limits = limits or Limits()
    prof = load_profile(profile)
    prof.check_model(lm)
    steering = Steering(lm, prof, policy or SteerPolicy.for_profile(prof, allowed=allow_steer))
    defaults = prof.decoding()
    batcher = MicroBatcher(lm, steering.vectors, router=steering.route_batch if steering.router else None,
                           max_batch=max_batch, wait_ms=wait_ms, max_queue=max_queue)
    model_name = prof.model.get("name") or "steeropt"

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="steeropt serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.profile, app.state.steering = batcher, prof, steering

    def error(status: int, message: str, param=None, kind="invalid_request_error", code=None, headers=None):
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status,
                            headers=headers)

    def internal(exc: BaseException):
        ref = uuid.uuid4().hex[:12]
        log.error("request %s failed: %s", ref, type(exc).__name__, exc_info=exc)
        return error(500, f"internal server error (reference {ref}; the server log has the details)",
                     kind="server_error")

    def authorized(request: Request) -> bool:
        if api_key is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())

    def refuse_unauthorized():
        return error(401, "missing or wrong API key (send Authorization: Bearer <key>)", code="invalid_api_key",
                     headers={"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes | None:
        """The body, or None past max_body_bytes (checked on Content-Length and while reading)."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_body_bytes:
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(raw: bytes) -> Job:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the request body is not valid JSON") from None
        return parse_request(body, lm, steering, defaults, max_tokens_cap=limits.max_tokens_cap,
                             max_prompt_tokens=limits.max_prompt_tokens)

    async def wait(job: Job, request: Request):
        """The job's Output; marks it cancelled when the client leaves (None) or the deadline passes (504)."""
        fut = asyncio.wrap_future(job.future)
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.2)
            if done:
                return fut.result()
            if await request.is_disconnected():
                job.cancelled.set()
                fut.cancel()  # nobody will read it
                return None
            if time.monotonic() > job.deadline:
                job.cancelled.set()
                fut.cancel()
                raise TimeoutError

    @app.get("/health")
    async def health():
        return {"status": "ok", "batches": len(batcher.batches), "max_rows": max(batcher.batches, default=0),
                "queued": batcher.q.qsize(), "dropped": batcher.dropped}

    @app.get("/v1/models")
    async def models(request: Request):
        if not authorized(request):
            return refuse_unauthorized()
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "steeropt",
                                            "families": sorted(prof.families), "router": steering.router is not None}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if not authorized(request):
            return refuse_unauthorized()
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return error(415, f"the body must be sent as Content-Type: application/json, not {ctype or 'none'!r}")
        raw = await read_body(request)
        if raw is None:
            return error(413, f"the body is larger than this server's limit of {limits.max_body_bytes} bytes")
        try:
            job = await run_in_threadpool(parse, raw)  # tokenizing a long prompt must not block the event loop
            job.deadline = time.monotonic() + limits.request_timeout_s
            if job.stream:
                events = sse_events(job, batcher, steering.tok, lm, model_name)
                first = await events.__anext__()  # the submit: a full queue is still a plain 503
                return StreamingResponse(_prepend(first, events), media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache"})
            batcher.submit(job)
            out = await wait(job, request)
            if out is None:
                return error(499, "the client closed the request")
            return await run_in_threadpool(completion_body, job, out, steering.tok, model_name)
        except BadRequest as exc:
            return error(exc.status, str(exc), exc.param)
        except Overloaded as exc:
            return error(503, str(exc), kind="server_busy", headers={"Retry-After": str(exc.retry_after)})
        except (TimeoutError, Cancelled):
            return error(504, f"the request took longer than this server's limit of {limits.request_timeout_s:g} s",
                         kind="timeout")
        except SteeroptError as exc:  # e.g. a steer override that drives the activations to NaN
            return error(400, str(exc))
        except Exception as exc:  # noqa: BLE001  (never take the server down; say nothing of the internals)
            return internal(exc)

    return app


async def _prepend(first, rest):
    yield first
    async for item in rest:
        yield item


def run(profile, *, host: str = "127.0.0.1", port: int = 8000, model: str | None = None, max_batch: int = 32,
        wait_ms: float = 10.0, max_queue: int = 64, limits: Limits | None = None, api_key: str | None = None,
        allow_steer: bool = False, steer_range: tuple[float, float] | None = None, max_steer_sites: int = 8) -> None:
    """Load the model (the profile's unless `model`), build the app and serve it with uvicorn until stopped."""
    import uvicorn

    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    prof = load_profile(profile)
    policy = SteerPolicy.for_profile(prof, allowed=allow_steer, alpha_range=steer_range, max_sites=max_steer_sites)
    lm = load_model(model or prof.model.get("name"))
    app = create_app(lm, prof, max_batch=max_batch, wait_ms=wait_ms, max_queue=max_queue, limits=limits,
                     api_key=api_key, policy=policy)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if api_key is None and not is_loopback(host):
        print(f"WARNING: steeropt serve is listening on {host}, beyond loopback, WITHOUT an API key: anyone who "
              f"can reach port {port} can run generations. Set --api-key or ${API_KEY_ENV}.", file=sys.stderr,
              flush=True)
    steer_note = f"steer override: {policy.low:g}..{policy.high:g}" if policy.allowed else "steer override: off"
    print(f"steeropt serve: {prof.path} on http://{host}:{port}/v1 (families: {', '.join(sorted(prof.families))}; "
          f"router: {'yes' if app.state.batcher.router else 'no'}; {steer_note}; "
          f"API key: {'required' if api_key else 'none'})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
