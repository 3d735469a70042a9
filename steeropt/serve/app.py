"""The HTTP side of `steeropt serve`: an OpenAI-compatible `/v1/chat/completions` (FastAPI on uvicorn, both
installed with MLflow) that applies a steering profile per request.

What steers a request, first match wins:
- `"steer": [{"layer": 4, "vector": "wedding", "alpha": 0.3, "controller": "add"}]` (or one such object):
  an explicit override with the profile's vectors, α in the normalised unit; `[]` = unsteered;
- `"family": "advice"`: that family's setting ("auto": routed; "none": unsteered);
- otherwise the profile's router picks the family of the last user message.
A family without a deployable setting, or a prompt the router calls unknown, gets the safe default: the
unsteered model. Every answer carries a `steering` object saying which family / sites / α were applied.
The openai client sends the extra fields with `extra_body={"family": ...}`.

Honoured: `max_tokens` (or `max_completion_tokens`), `temperature`, `top_p`, `logprobs`, `top_logprobs` (<= 20).
Refused with 400 and a message: malformed JSON or messages, `n` > 1, `stream`, `stop`, `tools`, an unknown
family or vector, a bad layer or strength, a prompt past the context. A request never takes the server down.
"""

import asyncio
import math
import time
import uuid

from steeropt.errors import SteeroptError
from steeropt.serve.batcher import Job, MicroBatcher

MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit
UNSUPPORTED = ("stop", "tools", "tool_choice", "functions", "function_call", "response_format")


class BadRequest(SteeroptError):
    """A request the server refuses with 400; `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class Steering:
    """Turns a request's family / steer fields into a plan, with the profile, its vectors and router."""

    def __init__(self, lm, profile):
        self.lm, self.profile = lm, profile
        self.vectors = profile.vectors()
        self.router = profile.router()

    def family_plan(self, family: str | None, source: str, route=None):
        info = {"source": source, "family": family, "applied": False, "sites": [],
                "route": None if route is None else {"family": route.family, "nearest": route.nearest,
                                                     "similarity": route.similarity, "margin": route.margin}}
        if family is None:
            info["reason"] = "unknown prompt (router below its threshold): unsteered" if route else "unsteered"
            return None, info
        fam = self.profile.families.get(family)
        if fam is None:  # the router knows every study family; the profile may hold only some (pick --family)
            info["reason"] = f"family '{family}' is not in this profile: unsteered"
            return None, info
        if fam.get("status") != "ok":
            info["reason"] = f"family '{family}' has no deployable setting: unsteered"
            return None, info
        plan = self.profile.plan(family)
        info.update(applied=bool(plan.steered_sites()), sites=[dict(s) for s in fam["sites"]])
        return plan, info

    def steer_plan(self, steer):
        from steeropt.engine.interventions import validate_plans
        from steeropt.types import CONTROLLERS, InterventionPlan, Site

        items = [steer] if isinstance(steer, dict) else steer
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise BadRequest("steer must be an object or a list of objects {layer, vector, alpha, controller}", "steer")
        names = list(self.vectors)
        sites, alphas = [], []
        for i, s in enumerate(items):
            extra = set(s) - {"layer", "vector", "alpha", "controller", "positions", "heads"}
            if extra:
                raise BadRequest(f"steer[{i}]: unknown field(s) {sorted(extra)}", "steer")
            vec = s.get("vector", names[0] if len(names) == 1 else None)
            if vec not in names:
                raise BadRequest(f"steer[{i}]: unknown vector {vec!r}; the profile has {names}", "steer")
            layer, alpha = s.get("layer", self.vectors[vec].layer), s.get("alpha")
            if not isinstance(layer, int) or isinstance(layer, bool):
                raise BadRequest(f"steer[{i}]: layer must be an integer", "steer")
            if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
                raise BadRequest(f"steer[{i}]: alpha must be a finite number", "steer")
            ctrl = s.get("controller", "add")
            if ctrl not in CONTROLLERS:
                raise BadRequest(f"steer[{i}]: unknown controller {ctrl!r}; expected one of {CONTROLLERS}", "steer")
            heads = tuple(s["heads"]) if s.get("heads") else None
            sites.append(Site(layer, ctrl, vec, heads, s.get("positions", "all")))
            alphas.append(float(alpha))
        plan = InterventionPlan(sites, alphas)
        try:
            validate_plans(self.lm, self.vectors, [plan])
        except SteeroptError as exc:
            raise BadRequest(f"steer: {exc}", "steer") from None
        return plan, {"source": "steer", "family": None, "applied": bool(plan.steered_sites()), "route": None,
                      "sites": [{"layer": s.layer, "controller": s.controller, "vector": s.vector, "alpha": a}
                                for s, a in zip(sites, alphas)]}

    def route_batch(self, texts: list[str]):
        return self.router.route(self.lm, texts)


def _number(body, key, default, lo, hi, *, integer=False):
    v = body.get(key)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or not (lo <= v <= hi):
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"{key} must be {kind} in [{lo}, {hi}], got {v!r}", key)
    return v


def parse_request(body, lm, steering: Steering, defaults, *, max_tokens_cap: int, max_prompt_tokens: int) -> Job:
    """A Job from a chat-completions body, or BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("messages must be a non-empty list of {role, content}", "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise BadRequest(f"messages[{i}] must be {{role: system|user|assistant, content: string}}", "messages")
    if msgs[-1]["role"] != "user":
        raise BadRequest("the last message must be the user's", "messages")
    for key in UNSUPPORTED:
        if body.get(key) is not None:
            raise BadRequest(f"{key} is not supported by this server", key)
    if body.get("stream"):
        raise BadRequest("stream is not supported by this server", "stream")
    if _number(body, "n", 1, 1, 1, integer=True) != 1:
        raise BadRequest("n must be 1", "n")
    mt_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, mt_key, defaults.max_new_tokens, 1, max_tokens_cap, integer=True)
    temperature = float(_number(body, "temperature", defaults.temperature, 0, 2))
    top_p = float(_number(body, "top_p", defaults.top_p, 1e-9, 1))
    logprobs = body.get("logprobs")
    if logprobs is not None and not isinstance(logprobs, bool):
        raise BadRequest("logprobs must be true or false", "logprobs")
    top = _number(body, "top_logprobs", 0, 0, MAX_TOP_LOGPROBS, integer=True)
    if top and not logprobs:
        raise BadRequest("top_logprobs needs logprobs: true", "top_logprobs")
    text = lm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_prompt_tokens:
        raise BadRequest(f"the prompt has {len(ids)} tokens; this server takes at most {max_prompt_tokens}", "messages")
    job = Job(ids, max_tokens, temperature, top_p, defaults.repetition_penalty, top_logprobs=top if logprobs else 0,
              want_logprobs=bool(logprobs))
    family, steer = body.get("family"), body.get("steer")
    if family is not None and steer is not None:
        raise BadRequest("give either family or steer, not both", "family")
    if steer is not None:
        job.plan, job.steering = steering.steer_plan(steer)
        return job
    if family is not None and not isinstance(family, str):
        raise BadRequest("family must be a string", "family")
    if family == "none":
        job.plan, job.steering = steering.family_plan(None, "family")
        return job
    if family not in (None, "auto"):
        if family not in steering.profile.families:
            raise BadRequest(f"unknown family {family!r}; the profile has {sorted(steering.profile.families)} "
                             "(or 'auto', 'none')", "family")
        job.plan, job.steering = steering.family_plan(family, "family")
        return job
    if steering.router is None:
        if family == "auto":
            raise BadRequest("this profile has no router: name the family", "family")
        job.plan, job.steering = steering.family_plan(None, "default")
        job.steering["reason"] = "no family given and the profile has no router: unsteered"
        return job
    job.route_text = msgs[-1]["content"]
    job.resolve = lambda r: steering.family_plan(r.family, "routed", r)
    return job


def _token_entry(tok, t: int, lp: float) -> dict:
    s = tok.decode([t])
    return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}


def completion_body(job: Job, out, lm, model_name: str) -> dict:
    tok = lm.tokenizer
    lp = None
    if job.want_logprobs:
        lp = {"content": [{**_token_entry(tok, t, v), "top_logprobs": [_token_entry(tok, i, x) for i, x in alts]}
                          for t, v, alts in zip(out.token_ids, out.logprobs, out.top)], "refusal": None}
    n = len(out.token_ids)
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": tok.decode(out.token_ids, skip_special_tokens=True)},
                         "logprobs": lp, "finish_reason": "stop" if out.finished else "length"}],
            "usage": {"prompt_tokens": len(job.prompt_ids), "completion_tokens": n,
                      "total_tokens": len(job.prompt_ids) + n},
            "steering": out.steering}


def create_app(lm, profile, *, max_batch: int = 32, wait_ms: float = 10.0, max_tokens_cap: int = 512,
               max_prompt_tokens: int = 2048):
    """The FastAPI app; `app.state.batcher` is the MicroBatcher (closed on shutdown)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from steeropt.report.profiles import load_profile

    prof = load_profile(profile)
    prof.check_model(lm)
    steering = Steering(lm, prof)
    defaults = prof.decoding()
    batcher = MicroBatcher(lm, steering.vectors, router=steering.route_batch if steering.router else None,
                           max_batch=max_batch, wait_ms=wait_ms)
    model_name = prof.model.get("name") or "steeropt"

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="steeropt serve", lifespan=lifespan)
    app.state.batcher, app.state.profile = batcher, prof

    def error(status: int, message: str, param=None, kind="invalid_request_error"):
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status)

    @app.get("/health")
    async def health():
        return {"status": "ok", "batches": len(batcher.batches), "max_rows": max(batcher.batches, default=0)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "steeropt",
                                            "families": sorted(prof.families), "router": steering.router is not None}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except Exception:
            return error(400, "the request body is not valid JSON")
        try:
            job = parse_request(body, lm, steering, defaults, max_tokens_cap=max_tokens_cap,
                                max_prompt_tokens=max_prompt_tokens)
            out = await asyncio.wrap_future(batcher.submit(job))
        except BadRequest as exc:
            return error(400, str(exc), exc.param)
        except SteeroptError as exc:  # e.g. a steer override that breaks the activations
            return error(400, str(exc))
        except Exception as exc:  # never take the server down; say what happened
            return error(500, f"{type(exc).__name__}: {exc}", kind="server_error")
        return completion_body(job, out, lm, model_name)

    return app


def run(profile, *, host: str = "127.0.0.1", port: int = 8000, model: str | None = None, max_batch: int = 32,
        wait_ms: float = 10.0) -> None:
    """Load the model (the profile's unless `model`), build the app and serve it with uvicorn until stopped."""
    import uvicorn

    from steeropt.engine.models import load_model
    from steeropt.report.profiles import load_profile

    prof = load_profile(profile)
    lm = load_model(model or prof.model.get("name"))
    app = create_app(lm, prof, max_batch=max_batch, wait_ms=wait_ms)
    print(f"steeropt serve: {prof.path} on http://{host}:{port}/v1 (families: {', '.join(sorted(prof.families))}; "
          f"router: {'yes' if app.state.batcher.router else 'no'})", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
