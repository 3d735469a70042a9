"""Judge specs: which backend answers, and the rubrics it answers with (judges/*.yaml).

A rubric holds everything that decides a score: the prompt template, the rating scale, how the
final rating is parsed from text, and whether the rating is read from the judge's logprobs.

Example:
    >>> spec = load_judge_spec("local-default")
    >>> spec.rubrics["concept"].scale.max
    2
"""
from __future__ import annotations

import hashlib
import json
import re
import string
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steeropt.specs import build

PLACEHOLDERS = ("prompt", "response", "concept")
# Rubric fields that change a score, apart from system/template (which reach the key rendered).
SCORE_FIELDS = {"scale", "parse", "use_logprobs", "logprob_position", "min_valid_mass", "max_tokens", "answer_prefix"}


class Scale(BaseModel):
    """Integer rating scale; valid rating tokens are the integers min..max."""

    model_config = ConfigDict(extra="forbid")
    min: int = 0
    max: int = 2

    @model_validator(mode="after")
    def _ordered(self) -> "Scale":
        if self.min < 0 or self.max <= self.min:
            raise ValueError(f"expected 0 <= min < max, got min={self.min}, max={self.max}")
        return self


class Rubric(BaseModel):
    """One question put to the judge, e.g. AxBench concept (0-2) or persona coherence (0-100)."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    style: Literal["axbench", "persona", "custom"] = "custom"  # informational: where the template comes from
    system: str | None = None  # system message; None keeps the chat template's default
    template: str  # user message; placeholders {prompt}, {response}, {concept}
    scale: Scale = Field(default_factory=Scale)
    # The rating in the required format; the LAST match counts, group 1 is the number.
    parse: str = r"Rating:\s*\[*\s*(\d+(?:\.\d+)?)"
    use_logprobs: bool = True  # read the rating from the judge's token distribution when available
    # Where the logprob distribution is read: "rating" = the token where the parsed rating sits
    # (works after an explanation), "first" = the first generated token (persona_vectors).
    logprob_position: Literal["rating", "first"] = "rating"
    min_valid_mass: float = Field(0.25, ge=0.0, le=1.0)  # persona_vectors: below 0.25 the score is missing
    max_tokens: int = Field(256, ge=1)  # openai backend: tokens the judge may generate
    # local backend: text put at the start of the assistant turn before reading the next token,
    # e.g. 'Rating: [[' so a small model rates without writing an explanation first.
    answer_prefix: str = ""

    @field_validator("template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as e:
            raise ValueError(f"template is not a valid format string ({e}); write literal braces as {{{{ }}}}")
        unknown = sorted(names - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; allowed: {list(PLACEHOLDERS)}")
        if "response" not in names:
            raise ValueError("template must contain {response}")
        return v

    @field_validator("parse")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            rx = re.compile(v)
        except re.error as e:
            raise ValueError(f"parse is not a valid regular expression: {e}")
        if rx.groups < 1:
            raise ValueError("parse must have a group capturing the rating number")
        return v

    def render(self, prompt: str, response: str, concept: str = "") -> str:
        return self.template.format(prompt=prompt, response=response, concept=concept)

    def messages(self, prompt: str, response: str, concept: str = "") -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self.render(prompt, response, concept)}]

    def score_settings(self) -> dict:
        """The fields that change a score besides the rendered messages (not description or style)."""
        return self.model_dump(include=SCORE_FIELDS)

    def digest(self) -> str:
        """Hash of everything in the rubric that changes a score (recorded next to cached results)."""
        blob = json.dumps(self.model_dump(include=SCORE_FIELDS | {"system", "template"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class JudgeSpec(BaseModel):
    """A judge: backend settings plus named rubrics. The API key itself is never part of it."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    backend: Literal["local", "openai"]
    # local: a model ref for steeropt.engine.models.load_model; openai: the model name sent to the endpoint.
    model: str = "smollm2-135m-instruct"
    base_url: str | None = None  # openai: None means api.openai.com
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the env var holding the key; None = no key needed
    concurrency: int = Field(8, ge=1)  # openai: requests in flight at once
    batch_size: int = Field(8, ge=1)  # local: rows per forward pass
    threads: int | None = Field(None, ge=1)  # local: torch threads while judging; None keeps the process setting
    timeout_s: float = Field(60.0, gt=0)  # openai: per HTTP attempt
    max_retries: int = Field(4, ge=0)  # openai: retries after the first attempt (429/5xx/timeouts/connection)
    backoff_s: float = Field(0.5, ge=0)  # first backoff; doubles per retry, with jitter
    max_backoff_s: float = Field(30.0, ge=0)  # cap on one wait, Retry-After included
    temperature: float = Field(0.0, ge=0)
    top_logprobs: int = Field(20, ge=0, le=20)
    cache: str | None = "judge_cache.sqlite"  # SQLite file; None disables the cache
    rubrics: dict[str, Rubric]

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError("api_key_env is the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return v

    @model_validator(mode="after")
    def _some_rubric(self) -> "JudgeSpec":
        if not self.rubrics:
            raise ValueError("a judge needs at least one rubric")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "JudgeSpec":
        """A judge spec file (with `include:`), through the project's spec loader."""
        return load_judge_spec(Path(path))


def load_judge_spec(ref: str | Path | dict | JudgeSpec, *, search_paths: list[Path] | None = None) -> JudgeSpec:
    """A JudgeSpec from a name (the `name:` key in judges/*.yaml), a .yaml path, a mapping or a spec.

    Names, paths and includes go through steeropt.specs (loader -> index -> factory), like every other spec.
    """
    if isinstance(ref, JudgeSpec):
        return ref
    return build("judge", ref, search_paths=search_paths)
