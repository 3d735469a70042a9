"""The Judge protocol: requests in, one result per request out, through the cache.

Backends implement `_rate(requests) -> list[Rating]` for the requests the cache does not hold.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from steeropt.errors import JudgeError
from steeropt.evaluation.judges.cache import JudgeCache, cache_key
from steeropt.evaluation.judges.config import JudgeSpec, Rubric
from steeropt.evaluation.judges.scoring import Rating, normalise
from steeropt.redact import redact


@dataclass(frozen=True)
class JudgeRequest:
    """One response to rate with one rubric (a name in the judge spec)."""

    rubric: str
    prompt: str
    response: str
    concept: str = ""


@dataclass
class JudgeResult:
    """score in [0, 1] or None when missing (then `missing` says why; never 0 for a failure)."""

    score: float | None
    missing: str | None
    cached: bool
    raw: str | None  # the judge's text, or the rating distribution for logprob scores
    rating: float | None = None  # the raw rating on the rubric's scale
    method: str | None = None  # "logprobs" | "parsed"
    valid_mass: float | None = None


@dataclass
class JudgeStats:
    requests: int = 0  # results asked for
    cache_hits: int = 0
    calls: int = 0  # judgments the backend actually made (not cached)
    missing: int = 0
    retries: int = 0  # openai: retried HTTP attempts
    http_attempts: int = 0  # openai: HTTP requests sent, retries included
    forward_passes: int = 0  # local: model forward calls
    missing_reasons: dict = field(default_factory=dict)


class Judge:
    """Base class: cache lookup, dedup, normalisation and counting around a backend's `_rate`."""

    backend = "base"

    def __init__(self, spec: JudgeSpec, cache: JudgeCache | None):
        self.spec = spec
        self.cache = cache
        self.stats = JudgeStats()

    @property
    def identity(self) -> str:  # backend + model (+ base_url); never the key
        raise NotImplementedError

    def _rate(self, requests: list[JudgeRequest]) -> list[tuple[Rating, str | None]]:
        """(rating, raw text) per request, same order."""
        raise NotImplementedError

    def score_settings(self, rubric: Rubric) -> dict:
        """Settings that change this rubric's scores: the rubric's own plus the judge's sampling settings.

        A backend that ignores a sampling setting may leave it out (a needless key change only costs a
        cache miss; a missing one would reuse a score made under other settings)."""
        return {**rubric.score_settings(), "temperature": self.spec.temperature,
                "top_logprobs": self.spec.top_logprobs}

    def cache_key(self, req: JudgeRequest) -> str:
        rubric = self.spec.rubrics[req.rubric]
        return cache_key(self.identity, self.score_settings(rubric), rubric.messages(req.prompt, req.response, req.concept))

    def judge(self, requests: list[JudgeRequest]) -> list[JudgeResult]:
        """Rate every request; cached ones cost nothing, identical ones are judged once."""
        for r in requests:
            if r.rubric not in self.spec.rubrics:
                raise JudgeError(f"judge '{self.spec.name}' has no rubric '{r.rubric}'; "
                                 f"it has: {', '.join(self.spec.rubrics)}")
        ident = self.identity
        digests = {name: rb.digest() for name, rb in self.spec.rubrics.items()}
        keys = [self.cache_key(r) for r in requests]
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        todo: dict[str, JudgeRequest] = {}
        for k, r in zip(keys, requests):
            if k not in hits and k not in todo:
                todo[k] = r
        fresh: dict[str, JudgeResult] = {}
        if todo:
            rated = self._rate(list(todo.values()))
            self.stats.calls += len(todo)
            rows = []
            for (k, r), (rating, raw) in zip(todo.items(), rated):
                rubric = self.spec.rubrics[r.rubric]
                if rating.rating is None:
                    fresh[k] = JudgeResult(None, rating.missing or "unknown failure", False, raw,
                                           valid_mass=rating.valid_mass)
                    continue
                score = normalise(rating.rating, rubric)
                fresh[k] = JudgeResult(score, None, False, raw, rating.rating, rating.method, rating.valid_mass)
                rows.append({"key": k, "identity": redact(ident), "rubric": r.rubric, "rubric_digest": digests[r.rubric],
                             "rating": rating.rating, "score": score, "method": rating.method,
                             "valid_mass": rating.valid_mass, "raw": raw})
            if self.cache is not None:
                self.cache.put_many(rows)
        out = []
        for k in keys:
            if k in hits:
                h = hits[k]
                out.append(JudgeResult(h["score"], None, True, h["raw"], h["rating"], h["method"], h["valid_mass"]))
            else:
                out.append(fresh[k])
        self.stats.requests += len(requests)
        self.stats.cache_hits += sum(1 for k in keys if k in hits)
        for res in out:
            if res.score is None:
                self.stats.missing += 1
                why = res.missing.split(":")[0][:80]
                self.stats.missing_reasons[why] = self.stats.missing_reasons.get(why, 0) + 1
        return out

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.spec.name!r}, identity={self.identity!r})"
