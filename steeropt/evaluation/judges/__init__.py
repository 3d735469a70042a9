"""LLM-as-judge (tier 2 of the objective stack): rubrics from judges/*.yaml, local or OpenAI-compatible backends.

Example:
    >>> judge = make_judge("local-default")
    >>> [r] = judge.judge([JudgeRequest("concept", "Tell me about your day.", "We married in June.", "weddings")])
    >>> r.score, r.rating, r.missing      # score in [0, 1], raw rating on the 0-2 scale, or None + reason

A judge call that fails or cannot be parsed is missing (score None, reason in `missing`), never 0.
"""
from __future__ import annotations

from pathlib import Path

from steeropt.errors import JudgeError
from steeropt.evaluation.judges.base import Judge, JudgeRequest, JudgeResult, JudgeStats
from steeropt.evaluation.judges.cache import JudgeCache
from steeropt.evaluation.judges.config import JudgeSpec, Rubric, Scale, load_judge_spec

__all__ = ["Judge", "JudgeCache", "JudgeError", "JudgeRequest", "JudgeResult", "JudgeSpec", "JudgeStats",
           "Rubric", "Scale", "load_judge_spec", "make_judge"]


def make_judge(spec: JudgeSpec | str | Path | dict, *, lm=None, cache: str | Path | None | bool = True) -> Judge:
    """Build the judge a spec describes.

    lm: an already loaded steeropt.engine.models.LoadedModel for the local backend (else spec.model is loaded).
    cache: True = the spec's `cache` path, a path = that file, None/False = no cache.
    """
    spec = load_judge_spec(spec)
    path = spec.cache if cache is True else (cache or None)
    if spec.backend == "local":
        from steeropt.evaluation.judges.local_backend import LocalJudge

        judge = LocalJudge(spec, None, lm=lm)
    elif spec.backend == "openai":
        from steeropt.evaluation.judges.openai_backend import OpenAIJudge

        judge = OpenAIJudge(spec, None)
    else:
        raise JudgeError(f"unknown judge backend {spec.backend!r}")
    judge.cache = JudgeCache(path) if path else None  # the cache file only once the judge could be made
    return judge
