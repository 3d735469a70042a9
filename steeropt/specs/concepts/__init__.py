"""Concept files: contrast sentences, keywords and a judge description for one concept.

A concept is found by name (the `name:` written in the file, else the file stem) in `./concepts/` (and
`<P>/concepts` for each directory P of $STEEROPT_SPEC_PATH) first, then among the built-in concepts next to
this module; a path ending in .yaml is read as is. The file is checked like a spec: a typo'd key, a wrong
type or an unedited `steeropt new concept` placeholder raises SpecError naming the file and the field, with
"did you mean" (specs.factory.spec_error), and the CLI exits 2.

    >>> c = load_concept("wedding")
    >>> c.layer, len(c.positive) == len(c.negative)
    (10, True)
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from steeropt.errors import SpecError
from steeropt.specs.factory import FieldError, spec_error
from steeropt.specs.index import _peek
from steeropt.specs.loader import read_yaml
from steeropt.specs.study import check_keywords

_HERE = Path(__file__).parent
FOLDER = "concepts"  # ./concepts/<name>.yaml is where `steeropt new concept` writes
PLACEHOLDER = "TODO"  # scaffolded entries start with this until the user writes them


def _no_placeholder(value: str, where: str) -> str:
    if value.strip().startswith(PLACEHOLDER):
        raise FieldError(where, f"still the placeholder written by `steeropt new concept` ({value.strip()[:60]!r}): "
                                "replace it with your own text")
    return value


class Concept(BaseModel):
    """One concept file (see `steeropt new concept` for a commented template)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)  # short label: vector name, keyword metric and judge concept
    description: str = ""  # one phrase the judge rubric inserts as "the concept"
    keywords: list[str] = Field(min_length=1)  # whole words, `stem*` or `re:<regex>`, case-insensitive
    positive: list[str] = Field(min_length=2)  # sentences showing the concept ...
    negative: list[str] = Field(min_length=2)  # ... and matched neutral sentences (same structure, same count)
    positive_completions: list[str] = []  # answers showing the concept (cheap preference signal; optional)
    negative_completions: list[str] = []  # matched answers without it (same count)
    prompts: list[str] = Field(min_length=1)  # prompts on which the concept is off topic: what `sweep` steers
    layer: int | None = Field(None, ge=0)  # default layer for `sweep` and `new study`

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        if v.strip().startswith(PLACEHOLDER):
            raise ValueError("still the placeholder written by `steeropt new concept`: describe the concept")
        return v

    @field_validator("positive", "negative", "positive_completions", "negative_completions", "prompts", "keywords")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        for i, text in enumerate(v):
            if not text.strip():
                raise FieldError(str(i), "is empty")
            _no_placeholder(text, str(i))
        return v

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: list[str]) -> list[str]:
        return check_keywords(v)

    @model_validator(mode="after")
    def _matched(self) -> Concept:
        for pos, neg in (("positive", "negative"), ("positive_completions", "negative_completions")):
            a, b = getattr(self, pos), getattr(self, neg)
            if len(a) != len(b):
                raise FieldError(neg, f"{pos} has {len(a)} entries and {neg} {len(b)}: write them as matched "
                                      "pairs (the same sentence with the concept swapped out)")
        return self


def concept_dirs() -> list[Path]:
    """Where concepts are looked up, in priority order."""
    env = [Path(p).expanduser() for p in os.environ.get("STEEROPT_SPEC_PATH", "").split(os.pathsep) if p]
    dirs = [p / FOLDER for p in env] + [Path.cwd() / FOLDER, _HERE]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in out:
            out.append(d.resolve())
    return out


def concept_files() -> dict[str, Path]:
    """name -> file over concept_dirs() (earlier directories win)."""
    found: dict[str, Path] = {}
    for d in concept_dirs():
        for path in sorted(d.glob("*.y*ml")):
            found.setdefault(_peek(path)[0], path)
    return found


def builtin_concepts() -> list[str]:
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def concept_path(ref: str | Path) -> Path:
    """The file a concept name or path refers to; unknown names get "did you mean"."""
    ref_s = str(ref)
    if isinstance(ref, Path) or ref_s.endswith((".yaml", ".yml")) or os.sep in ref_s or "/" in ref_s:
        path = Path(ref_s).expanduser()
        if not path.is_file():
            raise SpecError(str(path), None, "concept file not found")
        return path
    known = concept_files()
    if ref_s in known:
        return known[ref_s]
    close = difflib.get_close_matches(ref_s, sorted(known), n=3, cutoff=0.5)
    hint = f" did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise SpecError(None, None, f"unknown concept {ref_s!r}.{hint} Known concepts: {', '.join(sorted(known))}. "
                                f"Searched: {', '.join(str(d) for d in concept_dirs())}. "
                                f"Write one with: steeropt new concept {ref_s}")


def load_concept(ref: str | Path) -> Concept:
    """A concept by name or a concept YAML file, checked (SpecError names the file and the field)."""
    path = concept_path(ref)
    try:
        data = read_yaml(path)  # YAML syntax errors with the line, duplicate keys refused
    except SpecError as e:
        if "mapping values are not allowed" not in e.message:
            raise
        raise SpecError(e.file, e.field, f"{e.message} (a value containing ': ' needs quotes: \"...\")") from None
    try:
        return Concept.model_validate(data)
    except ValidationError as e:
        # a typo'd key also makes its field "missing": report the typo (with its "did you mean") first
        errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
        if errors[0]["type"] == "extra_forbidden" and e.errors()[0]["type"] != "extra_forbidden":
            e = ValidationError.from_exception_data(e.title, [{k: x[k] for k in ("type", "loc", "input")}
                                                              for x in errors if x["type"] == "extra_forbidden"])
        raise spec_error(e, str(path), Concept) from None
