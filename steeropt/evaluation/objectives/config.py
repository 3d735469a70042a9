"""ObjectiveSpec: the typed form of an objectives/*.yaml file (a tiered objective stack).

A stack has three tiers:
1. cheap metrics on every sample (see metrics.py / scoring.py, names in TIER1_METRICS);
2. gates on those metrics: a gated sample is *filtered* with its reason and gets `filtered_score`
   without a judge call (an audit share of filtered samples is still judged, to measure agreement);
3. per-sample scores, each from a judge rubric or from a tier-1 metric; then aggregation per trial.

Example (objectives/tiered-default.yaml)::

    name: tiered-default
    judge: local-default
    scores:
      concept: {rubric: concept}
      coherency: {rubric: fluency}
    gates:
      - {metric: rep_3, op: ">", value: 0.2, reason: collapsed}
    filtered_score: {coherency: 0.0, concept: 0.0}
    objectives:
      - {name: concept, direction: maximize}
      - {name: coherency, direction: maximize}
    constraints:
      - {name: coherency, op: ">=", value: 0.5}
    scalarization: {kind: harmonic_mean, of: [concept, coherency]}
"""
from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steeropt.specs.factory import FieldError

# Per-sample tier-1 metrics (metrics.py + scoring.py). Each also becomes a per-trial value (its mean).
TIER1_METRICS = (
    "rep_3", "rep_4", "distinct_1", "distinct_2", "n_tokens",
    "keyword_hits", "keyword_hit",  # keyword_hit is 0/1 per sample; its trial mean is "keyword_rate"
    "degenerate",  # 1.0 if empty / immediate EOS / cut at the token limit inside a loop, else 0.0
    "surprisal", "surprisal_drift", "kl", "coherency_proxy",
    # quality.py: neutral-context fluency and prompt/response PMI relevance
    "neutral_surprisal", "neutral_drift", "fluency_proxy", "relevance_pmi", "relevance_proxy",
)
# Per-prompt metrics from teacher-forced completions (no generation); joined onto each sample of that prompt.
PROMPT_METRICS = ("preference", "preference_base", "utility")
# Tier-1 metrics that need a teacher-forced pass of the scoring model (the rest read the tokens and text only).
FORCED_METRICS = ("surprisal", "surprisal_drift", "kl", "coherency_proxy", "neutral_surprisal", "neutral_drift",
                  "fluency_proxy", "relevance_pmi", "relevance_proxy")
# Per-trial values that are not a plain mean of a per-sample metric.
TRIAL_VALUES = ("hm", "keyword_rate", "filtered_share", "missing_share", "degenerate_rate", "scalar")

OPS = (">", ">=", "<", "<=")


def did_you_mean(name: str, known) -> str:
    """" did you mean 'x'?" for the closest known name, or ""."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" did you mean '{close[0]}'?" if close else ""


def compare(x: float, op: str, value: float) -> bool:
    return {">": x > value, ">=": x >= value, "<": x < value, "<=": x <= value}[op]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScoreSource(_Spec):
    """Where one per-sample score comes from: a judge rubric, or a tier-1 metric (in [0, 1])."""

    rubric: str | None = None  # rubric name in the judge spec (e.g. coherency -> "fluency")
    metric: str | None = None  # tier-1 metric name (for studies without a judge)
    # a calibration file from `steeropt judge calibrate` and the axis in it (calibration.py)
    calibrated: str | None = None
    axis: Literal["concept", "fluency", "relevance"] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ScoreSource:
        if sum(x is not None for x in (self.rubric, self.metric, self.calibrated)) != 1:
            raise ValueError("give exactly one of 'rubric', 'metric' or 'calibrated'")
        if (self.calibrated is None) != (self.axis is None):
            raise ValueError("'calibrated' and 'axis' go together")
        if self.metric is not None and self.metric not in TIER1_METRICS + PROMPT_METRICS:
            known = TIER1_METRICS + PROMPT_METRICS
            raise FieldError("metric", f"unknown metric '{self.metric}'.{did_you_mean(self.metric, known)} "
                                       f"Metrics: {', '.join(known)}")
        return self


class Gate(_Spec):
    """A sample whose `metric op value` holds is filtered with `reason` (a missing metric never gates)."""

    metric: str
    op: Literal[">", ">=", "<", "<="] = ">"
    value: float
    reason: str

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TIER1_METRICS:
            raise ValueError(f"unknown gate metric '{v}'.{did_you_mean(v, TIER1_METRICS)} "
                             f"Gate metrics: {', '.join(TIER1_METRICS)}")
        return v


class Audit(_Spec):
    """Judge a seeded share of filtered samples anyway and report how often the judge agrees."""

    share: float = Field(0.1, ge=0.0, le=1.0)
    seed: int = 0
    score: str = "coherency"  # which score the agreement is measured on
    below: float = 0.5  # the judge "agrees" with the gate when that score is below this


class ObjectiveDef(_Spec):
    name: str
    direction: Literal["maximize", "minimize"]


class Constraint(_Spec):
    """`name op value` must hold for a feasible trial (e.g. coherency >= 0.5)."""

    name: str
    op: Literal[">=", "<="] = ">="
    value: float


class Scalarization(_Spec):
    """One number for single-objective optimizers, exposed as the trial value `scalar`."""

    kind: Literal["harmonic_mean", "weighted"] = "harmonic_mean"
    of: list[str]  # value names; harmonic_mean expects values in [0, 1]
    weights: dict[str, float] | None = None  # weighted: name -> weight (sign included; default 1)


class Tier1Settings(_Spec):
    batch_size: int = Field(16, ge=1)  # rows per teacher-forced forward pass
    kl_positions: int = Field(8, ge=0)  # first k generated positions for KL(steered || unsteered); 0 = skip KL
    loop_max_period: int = Field(20, ge=1)  # longest repeated token pattern that counts as a loop
    loop_min_span: int = Field(12, ge=2)  # a loop must cover at least this many trailing tokens
    proxy_tau: float = Field(1.0, gt=0)  # coherency_proxy = exp(-max(0, surprisal_drift) / proxy_tau)
    # quality.py: the neutral context, and fluency_proxy = exp(-max(0, neutral_drift) / fluency_tau) * (1 - rep_3)
    neutral_instruction: str = "Write something."
    fluency_tau: float = Field(2.0, gt=0)  # greedy own answers set the reference; fluent human text drifts ~1-3 nats
    # preference, preference_base, utility: a steered teacher-forced pass over the concept's example completions
    # for every plan x prompt, about half of the cheap tier's time (bench/speed.py). None = only when the
    # objective uses one of them (a score, gate, objective, constraint or calibration feature); true = always.
    preference: bool | None = None
    # surprisal, KL and the quality metrics: teacher-forced passes of the scoring model over every sample. On a 1.5B
    # model they cost more than generating (bench/speed.py). None = only when the objective reads one of them
    # (a score, gate, objective, constraint or calibration feature); true = always (KL doses in the reports).
    teacher_forced: bool | None = None


class Bootstrap(_Spec):
    n: int = Field(1000, ge=10)
    level: float = Field(0.95, gt=0, lt=1)
    seed: int = 0


class ObjectiveSpec(_Spec):
    name: str
    description: str = ""
    judge: str | None = None  # judge spec name; None / "none" = no judge (scores must all be metrics)
    scores: dict[str, ScoreSource]
    gates: list[Gate] = []
    # Score given to a filtered sample instead of judging it. A score not listed here is left unscored
    # for filtered samples (excluded from that mean, never counted as missing).
    filtered_score: dict[str, float] = {}
    audit: Audit = Audit()
    max_missing_share: float = Field(0.5, ge=0.0, le=1.0)  # more missing than this -> trial failed
    objectives: list[ObjectiveDef]
    constraints: list[Constraint] = []
    scalarization: Scalarization | None = None
    tier1: Tier1Settings = Tier1Settings()
    bootstrap: Bootstrap = Bootstrap()

    @field_validator("judge")
    @classmethod
    def _none(cls, v: str | None) -> str | None:
        return None if v is None or v.strip().lower() in ("", "none", "null") else v

    def uses(self) -> set[str]:
        """The value and metric names this objective reads: score sources, gates, objectives, constraints,
        scalarization (calibration files add their features: ObjectiveStack)."""
        names = {s.metric for s in self.scores.values() if s.metric} | {g.metric for g in self.gates}
        names |= {o.name for o in self.objectives} | {c.name for c in self.constraints}
        if self.scalarization is not None:
            names |= set(self.scalarization.of) | set(self.scalarization.weights or {})
        return names

    def value_names(self) -> list[str]:
        """Every per-trial value name an objective, constraint or scalarization may use."""
        return sorted(set(self.scores) | set(TIER1_METRICS) | set(PROMPT_METRICS) | set(TRIAL_VALUES))

    @model_validator(mode="after")
    def _check(self) -> ObjectiveSpec:
        if not self.scores:
            raise ValueError("'scores' needs at least one entry")
        known = set(self.value_names())
        if self.scalarization is None:
            known.discard("scalar")
        rubric_scores = [k for k, s in self.scores.items() if s.rubric is not None]
        if rubric_scores and self.judge is None:
            raise ValueError(f"scores {rubric_scores} use a judge rubric but 'judge' is none")
        for k in self.filtered_score:
            if k not in self.scores:
                raise ValueError(f"filtered_score names '{k}', which is not in 'scores' ({', '.join(self.scores)})")
        if self.gates and self.audit.share > 0 and self.audit.score not in self.scores:
            raise ValueError(f"audit.score '{self.audit.score}' is not in 'scores'")
        if not self.objectives:
            raise ValueError("'objectives' needs at least one entry")
        used = [(f"objectives.{i}.name", o.name) for i, o in enumerate(self.objectives)]
        used += [(f"constraints.{i}.name", c.name) for i, c in enumerate(self.constraints)]
        if self.scalarization is not None:
            used += [(f"scalarization.of.{i}", n) for i, n in enumerate(self.scalarization.of)]
            used += [(f"scalarization.weights.{n}", n) for n in self.scalarization.weights or {}]
        for path, n in used:
            if n not in known:
                trial = [v for v in TRIAL_VALUES if v in known]
                raise FieldError(path, f"unknown value '{n}'.{did_you_mean(n, known)} A value is one of this "
                                       f"file's scores ({', '.join(self.scores)}), a trial value ({', '.join(trial)}) "
                                       f"or the mean of a tier-1 metric (e.g. rep_3, distinct_1, fluency_proxy)")
        return self

    @property
    def directions(self) -> list[tuple[str, str]]:
        """[(value name, "maximize" | "minimize"), ...] in the order of the file."""
        return [(o.name, o.direction) for o in self.objectives]
