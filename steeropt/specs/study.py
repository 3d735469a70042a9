"""StudySpec: the typed form of a studies/*.yaml file (model + vectors + prompts + space + objective + optimizer).

A study file holds only what differs from the defaults below (as in nanoGPT's config files):

    name: wedding-add
    vectors:
      - {name: wedding, method: diff_in_means, layer: 4,
         positive: data/wedding_positive.txt, negative: data/wedding_neutral.txt}
    concept: {name: wedding, description: "talks about weddings", keywords: ["wedd", "bride"]}
    prompts:
      families: [{name: open_ended, path: data/open_ended.jsonl}, {name: advice, path: data/advice.jsonl}]
    search_space: add-single-layer
    objective: tiered-default

Relative paths (data files, a HF dir or .gguf model) are resolved against the spec file's
directory at build time, so every path in a built StudySpec is absolute.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from steeropt.errors import SpecError
from steeropt.specs.factory import FieldError, INLINE, build, load_spec
from steeropt.specs.prompts import check_unique, load_family, split_families

EMBEDDED_MODEL = "smollm2-135m-instruct"
OPTIMIZERS = ("grid", "random", "sobol", "tpe", "nsga2", "botorch")
# The VectorSource fields each method needs (the others must stay unset).
METHOD_FIELDS = {"diff_in_means": ("positive", "negative"), "caa": ("pairs",), "sae": ("path", "feature"),
                 "file": ("path",)}


def _base(info: ValidationInfo) -> Path:
    return Path((info.context or {}).get("base_dir") or Path.cwd())


def resolve_path(value: str, info: ValidationInfo) -> str:
    """Absolute path of a spec-relative path (relative to the spec file's directory)."""
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (_base(info) / p).resolve())


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Pair(_Spec):
    """One CAA contrast pair: the same prompt answered with and without the concept."""

    prompt: str = ""  # shared user prompt (may be empty)
    positive: str  # completion showing the concept
    negative: str  # matched completion without it


class VectorSource(_Spec):
    """How to get one steering vector; search-space sites refer to it by `name`."""

    name: str  # referenced by search-space sites (Site.vector)
    method: Literal["diff_in_means", "caa", "sae", "file"]  # how the vector is computed or loaded
    layer: int = Field(ge=0)  # decoder layer whose output activations define the vector
    site: Literal["resid", "heads"] = "resid"  # resid: layer output; heads: per-head outputs before o_proj
    heads: list[int] | None = None  # site=heads: which heads to compute (None = all)
    positive: str | list[str] | None = None  # diff_in_means: texts with the concept (file path or inline list)
    negative: str | list[str] | None = None  # diff_in_means: matched texts without it (same structure)
    pairs: str | list[Pair] | None = None  # caa: JSONL of {prompt?, positive, negative} or an inline list
    path: str | None = None  # sae: SAE weights file; file: a saved vector (.pt / .safetensors / .npy)
    feature: int | None = Field(None, ge=0)  # sae: feature index whose decoder row is the direction

    @field_validator("positive", "negative", "pairs", "path")
    @classmethod
    def _resolve(cls, v: Any, info: ValidationInfo) -> Any:
        return resolve_path(v, info) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _method_fields(self) -> VectorSource:
        needed = METHOD_FIELDS[self.method]
        for f in needed:
            if getattr(self, f) is None:
                raise FieldError(f, f"required when method is {self.method}")
        for f in ("positive", "negative", "pairs", "path", "feature"):
            if f not in needed and getattr(self, f) is not None:
                raise FieldError(f, f"not used by method {self.method} (it uses: {', '.join(needed)})")
        for f in ("positive", "negative", "pairs"):
            if isinstance(getattr(self, f), list) and not getattr(self, f):
                raise FieldError(f, "is an empty list")
        if self.heads is not None:
            if self.site != "heads":
                raise FieldError("heads", "only used with site: heads")
            if not self.heads or any(h < 0 for h in self.heads) or len(set(self.heads)) != len(self.heads):
                raise FieldError("heads", f"expected distinct non-negative head indices, got {self.heads}")
        return self


class ConceptSpec(_Spec):
    """What the steering should produce, for the judge and the cheap keyword metric."""

    name: str  # short label (e.g. "wedding")
    description: str = ""  # one sentence the judge rubric inserts as the concept
    keywords: list[str] = []  # whole words, `stem*` or `re:<regex>` (case-insensitive), for the keyword-hit metric
    positive_completions: list[str] = []  # answers showing the concept: the cheap preference/utility signal
    negative_completions: list[str] = []  # matched answers without it (same count)

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: list[str]) -> list[str]:
        return check_keywords(v)


def check_keywords(v: list[str]) -> list[str]:
    """Each keyword compiled by the rules the keyword-hit metric applies; a bad one is a FieldError at its index
    (shared by study specs and concept files)."""
    # imported here: the evaluation package loads torch, and reading a spec must not (steeropt validate, status)
    from steeropt.evaluation.objectives.metrics import compile_keywords

    for i, kw in enumerate(v):
        try:
            compile_keywords([kw])
        except (ValueError, re.error) as e:
            raise FieldError(str(i), f"invalid keyword {kw!r}: {e}") from None
    return v


class FamilySpec(_Spec):
    """One prompt family: a JSONL file or an inline list of prompts."""

    name: str  # family label; a deployable α is picked per family
    path: str | None = None  # JSONL with one {"prompt": ...} per line
    prompts: list[str] | None = None  # or the prompts inline

    @field_validator("path")
    @classmethod
    def _resolve(cls, v: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(v, info) if v is not None else v

    @model_validator(mode="after")
    def _one_source(self) -> FamilySpec:
        if (self.path is None) == (self.prompts is None):
            raise ValueError(f"family {self.name!r}: give exactly one of 'path' or 'prompts'")
        if self.prompts is not None and len(self.prompts) < 2:
            raise FieldError("prompts", f"family {self.name!r} needs at least 2 prompts, got {len(self.prompts)}")
        return self


class PromptsSpec(_Spec):
    families: list[FamilySpec] = Field(min_length=1)  # each gets its own α and its own split
    selection_fraction: float = Field(0.5, gt=0.0, lt=1.0)  # share of each family used to choose α (rest: held out)
    split_seed: int = 0  # fixed apart from `seed`, so reruns with new seeds keep the same held-out prompts

    @field_validator("families")
    @classmethod
    def _unique(cls, v: list[FamilySpec]) -> list[FamilySpec]:
        names = [f.name for f in v]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate prompt family names: {', '.join(dups)}")
        return v


class DecodingSpec(_Spec):
    max_new_tokens: int = Field(48, gt=0)  # short completions: enough to see steering, cheap to judge
    temperature: float = Field(0.0, ge=0.0)  # 0 = greedy, so candidates differ only by their α
    top_p: float = Field(1.0, gt=0.0, le=1.0)  # nucleus mass when sampling
    repetition_penalty: float = Field(1.0, gt=0.0)  # 1 = off: repetition is a symptom we want to measure


class OptimizerSpec(_Spec):
    name: Literal["grid", "random", "sobol", "tpe", "nsga2", "botorch"] = "tpe"  # TPE: robust default, cheap
    settings: dict[str, Any] = {}  # passed to make_optimizer(**settings)


class ReevaluationSpec(_Spec):
    """Re-evaluation of the points that will be reported, on fresh selection prompts (runner.reeval)."""

    prompts: int = Field(3, gt=0)  # fresh selection prompts per family and round for each live candidate
    rounds: int = Field(2, ge=1)  # racing rounds; a candidate whose question the intervals settle stops early
    keep: float = Field(0.5, gt=0.0, le=1.0)  # share of the unsettled candidates kept for the next round
    max_candidates: int = Field(8, gt=0)  # front members + per-family choices re-evaluated in round 1


class PromptedSpec(_Spec):
    """The prompt baseline every study scores beside its steered trials (runner.arms): the unsteered model with the
    concept asked for after the user's prompt. A steering setting is worth deploying only beside what asking gives."""

    # follows the prompt in the user's turn ({description} and {name} are the concept's); measured: the 1.5B model
    # ignored the same request as a system message
    instruction: str = "In your answer, bring in this topic: {description}."
    steered: bool = False  # pick also scores prompted + steered at each family's chosen setting

    @field_validator("instruction")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        try:
            v.format(description="", name="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"instruction may use {{description}} and {{name}} only: {e}") from None
        return v


class BudgetSpec(_Spec):
    trials: int = Field(30, gt=0)  # candidates evaluated in total
    batch_size: int = Field(8, gt=0)  # candidates asked for and generated in one batched generate call
    prompts_per_trial: int = Field(8, gt=0)  # selection prompts each candidate is scored on (across families)
    max_judge_calls: int | None = Field(None, ge=0)  # hard cap on judge requests for the study (None = no cap)
    reevaluation: ReevaluationSpec | None = None  # None = report the trials' own (lucky-draw prone) values


class StudySpec(_Spec):
    """A tuning study: everything `steeropt run` needs, validated before any weights load."""

    name: str  # study name: Optuna study name and default MLflow experiment
    description: str = ""  # free text shown by `steeropt list`
    model: str = EMBEDDED_MODEL  # embedded name, a HF model directory or a .gguf path
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$")  # where the model runs (one worker per GPU: cuda)
    vectors: list[VectorSource] = Field(min_length=1)  # steering directions; sites refer to them by name
    concept: ConceptSpec  # what steering should produce (judge description + keywords)
    prompts: PromptsSpec  # prompt families and their selection / held-out split
    decoding: DecodingSpec = DecodingSpec()  # generation settings shared by all candidates
    search_space: str | dict[str, Any]  # search_spaces/ name, .yaml path, or inline mapping
    objective: str | dict[str, Any]  # objectives/ name, .yaml path, or inline mapping
    judge: str | dict[str, Any] | None = None  # overrides the objective's judge (e.g. an HTTP endpoint)
    optimizer: OptimizerSpec = OptimizerSpec()  # which sampler proposes candidates
    budget: BudgetSpec = BudgetSpec()  # how much work the study may do
    prompted: PromptedSpec | None = PromptedSpec()  # the prompt baseline scored beside the trials; null = none
    seed: int = 0  # seeds the optimizer and sampling; same spec + seed -> same trials
    storage: str = "sqlite:///steeropt.db"  # Optuna storage URL (PostgreSQL for several workers)
    tracking_uri: str | None = None  # MLflow tracking URI; None = MLflow's default (./mlflow.db)
    experiment: str | None = None  # MLflow experiment name; None = the study name
    # share of samples logged as MLflow traces with their scores as feedback, for review and labelling: all
    # by default, since labels decide what the scores are worth; ~0.1 s each, exported in the background
    traces: float = Field(1.0, ge=0.0, le=1.0)

    _source: str = PrivateAttr("<inline>")  # the spec file (set by specs.build)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)  # relative paths in the file resolve from here
    _search_paths: list = PrivateAttr(default_factory=list)  # where nested spec names are looked up

    @field_validator("model")
    @classmethod
    def _model_path(cls, v: str, info: ValidationInfo) -> str:
        """Paths (with a '/', a .gguf ending, or existing next to the spec) become absolute; names stay."""
        local = _base(info) / v
        if v.endswith(".gguf") or "/" in v or "\\" in v or local.exists():
            return resolve_path(v, info)
        return v

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError(f"expected a storage URL such as sqlite:///steeropt.db or postgresql://host/db, got {v!r}")
        scheme, rest = v.split("://", 1)
        if scheme in ("postgresql", "postgres"):  # one PostgreSQL driver: psycopg2, what steeropt[postgres] installs
            return f"postgresql+psycopg2://{rest}"
        if scheme.startswith("postgresql+") and scheme != "postgresql+psycopg2":
            raise ValueError(f"PostgreSQL storage uses the psycopg2 driver (pip install 'steeropt[postgres]'): "
                             f"write postgresql://... or postgresql+psycopg2://..., not {scheme}://")
        return v

    @field_validator("vectors")
    @classmethod
    def _unique_vectors(cls, v: list[VectorSource]) -> list[VectorSource]:
        names = [s.name for s in v]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate vector names: {', '.join(dups)}")
        return v

    @property
    def source(self) -> str:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    def part_ref(self, kind: str) -> tuple[Any, dict] | None:
        """(ref, build keywords) of a nested spec; the judge falls back to the objective's `judge:`."""
        where = {"search_paths": self._search_paths, "base_dir": self._base_dir, "origin": (self._source, kind)}
        ref = getattr(self, kind)
        if kind == "judge" and ref is None:
            _, osrc = load_spec("objective", self.objective, **{**where, "origin": (self._source, "objective")})
            ref = getattr(self.part("objective"), "judge", None)
            if osrc != INLINE:
                where = {**where, "base_dir": Path(osrc).parent, "origin": (osrc, "judge")}
            else:
                where = {**where, "origin": (self._source, "objective.judge")}
        if not isinstance(ref, (str, dict)):
            return None
        return ref, where

    def part(self, kind: str):
        """Build the nested search_space / objective / judge spec (a name, a path or an inline mapping)."""
        found = self.part_ref(kind)
        return None if found is None else build(kind, found[0], **found[1])

    def families(self):
        """Load and check the prompt families (files read now)."""
        fams = []
        for i, f in enumerate(self.prompts.families):
            field = f"prompts.families.{i}"
            try:
                fams.append(load_family(f.name, path=f.path, prompts=f.prompts, source=self._source, field=field))
            except SpecError as e:
                if e.file == self._source:
                    raise
                # a problem inside the data file: name the spec field and the data file (in str(e))
                raise SpecError(self._source, f"{field}.path", str(e)) from None
        check_unique(fams, source=self._source, field="prompts.families")
        return fams

    def splits(self):
        """family name -> PromptSplit(selection, held_out), deterministic in prompts.split_seed."""
        return split_families(self.families(), self.prompts.selection_fraction, self.prompts.split_seed)
