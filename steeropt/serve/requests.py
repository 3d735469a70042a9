"""Parsing and checking one chat-completions request for `steeropt serve`: messages, decoding fields, and what
steers it (the request's `family` / `steer` fields or the profile's router). Every refusal is a BadRequest that
names the field; the HTTP side (app.py) turns it into a 400.

The `steer` override is off unless the operator allows it (`SteerPolicy.allowed`); allowed, every α must lie in
the policy's range (default: the range the profile records as searched, else [0, 1] in the normalised unit) and
a request names at most `max_sites` distinct sites.
"""
from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass

from steeropt.engine.interventions import validate_plans
from steeropt.errors import SteeroptError
from steeropt.serve.batcher import Job
from steeropt.types import CONTROLLERS, POSITIONS, InterventionPlan, Site

MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit
MAX_STOP = 4  # the OpenAI API's limit on stop sequences
UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "response_format")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
DEFAULT_STEER_RANGE = (0.0, 1.0)


class BadRequest(SteeroptError):
    """A request the server refuses with 400 (or `status`); `param` names the field."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


@dataclass(frozen=True)
class SteerPolicy:
    """What the `steer` override may ask for: off unless `allowed`; α within [low, high]; at most max_sites."""

    allowed: bool = False
    low: float = DEFAULT_STEER_RANGE[0]
    high: float = DEFAULT_STEER_RANGE[1]
    max_sites: int = 8

    @classmethod
    def for_profile(cls, profile, *, allowed: bool, alpha_range: tuple[float, float] | None = None,
                    max_sites: int = 8) -> "SteerPolicy":
        """The operator's range, else the profile's searched range (study.alpha_range), else [0, 1]."""
        rng = alpha_range or (profile.data.get("study") or {}).get("alpha_range") or DEFAULT_STEER_RANGE
        low, high = float(rng[0]), float(rng[1])
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise SteeroptError(f"steer range must be two finite numbers LOW <= HIGH, got {list(rng)}")
        return cls(allowed, low, high, int(max_sites))


class Steering:
    """Turns a request's family / steer fields into a plan, with the profile, its vectors and router.

    `tok` is the HTTP side's own copy of the tokenizer (the batcher's worker uses the model's), and `lock`
    serialises encoding with it: a fast tokenizer refuses concurrent use while its padding settings change."""

    def __init__(self, lm, profile, policy: SteerPolicy | None = None):
        self.lm, self.profile = lm, profile
        self.policy = policy or SteerPolicy()
        self.vectors = profile.vectors()
        self.router = profile.router()
        self.tok = copy.deepcopy(lm.tokenizer)
        self.lock = threading.Lock()
        self.tok("warm up", add_special_tokens=False)  # settle its truncation / padding state once

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
        pol = self.policy
        if not pol.allowed:
            raise BadRequest("the steer override is off on this server (the operator enables it with "
                             "`steeropt serve --allow-steer`); use family instead", "steer", status=403)
        items = [steer] if isinstance(steer, dict) else steer
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise BadRequest("steer must be an object or a list of objects {layer, vector, alpha, controller}", "steer")
        if len(items) > pol.max_sites:
            raise BadRequest(f"steer has {len(items)} sites; this server takes at most {pol.max_sites}", "steer")
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
            if not _is_int(layer):
                raise BadRequest(f"steer[{i}]: layer must be an integer", "steer")
            if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
                raise BadRequest(f"steer[{i}]: alpha must be a finite number", "steer")
            if not pol.low <= alpha <= pol.high:
                raise BadRequest(f"steer[{i}]: alpha {alpha:g} is outside this server's range [{pol.low:g}, "
                                 f"{pol.high:g}] (the operator sets it with --steer-range)", "steer")
            ctrl = s.get("controller", "add")
            if ctrl not in CONTROLLERS:
                raise BadRequest(f"steer[{i}]: unknown controller {ctrl!r}; expected one of {CONTROLLERS}", "steer")
            heads = s.get("heads")
            if heads is not None and (not isinstance(heads, list) or not heads or not all(map(_is_int, heads))
                                      or len(set(heads)) != len(heads)):
                raise BadRequest(f"steer[{i}]: heads must be a non-empty list of distinct integers", "steer")
            positions = s.get("positions", "all")
            if positions not in POSITIONS:
                raise BadRequest(f"steer[{i}]: positions must be one of {POSITIONS}", "steer")
            site = Site(layer, ctrl, vec, tuple(heads) if heads else None, positions)
            if site in sites:
                raise BadRequest(f"steer[{i}]: the same site (layer {layer}, {ctrl}, {vec}) is given twice", "steer")
            sites.append(site)
            alphas.append(float(alpha))
        plan = InterventionPlan(sites, alphas)
        try:
            validate_plans(self.lm, self.vectors, [plan])
        except SteeroptError as exc:
            raise BadRequest(f"steer: {exc}", "steer") from None
        return plan, {"source": "steer", "family": None, "applied": bool(plan.steered_sites()), "route": None,
                      "sites": [{"layer": s.layer, "controller": s.controller, "vector": s.vector, "alpha": a,
                                 **({"heads": list(s.heads)} if s.heads else {})} for s, a in zip(sites, alphas)]}

    def route_batch(self, texts: list[str]):
        return self.router.route(self.lm, texts)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(body, key, default, lo, hi, *, integer=False):
    v = body.get(key)
    if v is None:
        return default
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or not (lo <= v <= hi):
        kind = "an integer" if integer else "a number"
        raise BadRequest(f"{key} must be {kind} in [{lo}, {hi}], got {v!r}", key)
    return v


def _content(i: int, content) -> str:
    """A message's text: a string, or content parts [{type: text, text}] joined (other part types refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise BadRequest(f"messages[{i}].content: only text parts are supported, got {kind!r}", "messages")
            texts.append(part["text"])
        return "".join(texts)
    raise BadRequest(f"messages[{i}] must be {{role: system|developer|user|assistant, content: string or text "
                     "parts}", "messages")


def messages(body) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("messages must be a non-empty list of {role, content}", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"messages[{i}] must be {{role: system|developer|user|assistant, content: string or "
                             "text parts}", "messages")
        out.append({"role": ROLES[m["role"]], "content": _content(i, m.get("content"))})
    if out[-1]["role"] != "user":
        raise BadRequest("the last message must be the user's", "messages")
    return out


def stop_sequences(body) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items) or len(items) > MAX_STOP:
        raise BadRequest(f"stop must be a non-empty string or a list of at most {MAX_STOP} of them", "stop")
    return items


def parse_request(body, lm, steering: Steering, defaults, *, max_tokens_cap: int, max_prompt_tokens: int) -> Job:
    """A Job from a chat-completions body, or BadRequest naming the field. Tokenizes: call it off the event loop."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    msgs = messages(body)
    for key in UNSUPPORTED:
        if body.get(key) is not None:
            raise BadRequest(f"{key} is not supported by this server", key)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise BadRequest("stream must be true or false", "stream")
    opts = body.get("stream_options")
    if opts is not None and (not stream or not isinstance(opts, dict) or set(opts) - {"include_usage"}):
        raise BadRequest("stream_options must be {include_usage: bool}, with stream: true", "stream_options")
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
    stops = stop_sequences(body)
    family, steer = body.get("family"), body.get("steer")
    if family is not None and steer is not None:
        raise BadRequest("give either family or steer, not both", "family")
    with steering.lock:
        text = steering.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = steering.tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_prompt_tokens:
        raise BadRequest(f"the prompt has {len(ids)} tokens; this server takes at most {max_prompt_tokens}", "messages")
    job = Job(ids, max_tokens, temperature, top_p, defaults.repetition_penalty, top_logprobs=top if logprobs else 0,
              want_logprobs=bool(logprobs), stop=stops)
    job.stream, job.include_usage = bool(stream), bool((opts or {}).get("include_usage"))
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
