"""The records a study stores and its readers share: one trial's summary and the re-evaluation's outcome.

    >>> rec = TrialRecord.from_trial(frozen_trial)               # doctest: +SKIP
    >>> rec.values["concept"], rec.family("advice").values["concept"], rec.prompt_scores["concept"][:3]
    >>> trial.user_attrs == rec.to_user_attrs()                   # what the runner stored

A trial's record lives in its Optuna user attributes (one attribute per field, plain JSON), written once by the
study loop (runner.study) and read by pick, paired, power, dose, review, tracking and compare. Studies written
before a field existed load with that field empty. The re-evaluation's record is one study user attribute
(`REEVALUATION_KEY`), written by runner.reeval and read by pick and status.
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field, fields

REEVALUATION_KEY = "steeropt.reevaluation"  # the Optuna study user attribute holding the ReevalRecord
ARMS_KEY = "arms"  # the Optuna study user attribute holding the arms' summaries (runner.arms)


def jsonable(x):
    """x as plain JSON (NaN -> None, unknown objects -> str): what Optuna user attributes and files can hold."""
    return json.loads(json.dumps(x, default=lambda o: None if o != o else str(o)))


@dataclass
class FamilyValues:
    """One prompt family's share of a trial (or an arm, or a re-evaluated candidate)."""

    values: dict = field(default_factory=dict)
    intervals: dict = field(default_factory=dict)  # name -> [low, high] (95%)
    n: int | None = None  # samples behind the values

    @classmethod
    def from_dict(cls, d: dict | None) -> "FamilyValues":
        d = d or {}
        return cls(d.get("values") or {}, d.get("intervals") or {}, d.get("n"))

    def to_dict(self) -> dict:
        return {"values": self.values, "intervals": self.intervals, "n": self.n}


@dataclass
class TrialRecord:
    """What the runner stores about one told trial. A failed trial has raw α (and counts when it got that far)."""

    raw_alphas: dict = field(default_factory=dict)  # site name -> raw α (controller units)
    alphas: dict | None = None  # site name -> normalised α, for KL-unit spaces (the parameter is a KL dose)
    values: dict | None = None  # every objective, constraint, score and rate (None: not computed)
    intervals: dict | None = None  # name -> [low, high]
    counts: dict | None = None  # samples, filtered, missing, judge requests, ...
    families: dict[str, FamilyValues] | None = None
    feasible: bool | None = None
    prompt_scores: dict | None = None  # name -> per-sample values aligned with the trial prompts (records.prompt_scores)

    @classmethod
    def from_user_attrs(cls, ua: dict) -> "TrialRecord":
        keep = {f.name: ua[f.name] for f in fields(cls) if f.name in ua}
        if keep.get("families") is not None:
            keep["families"] = {k: FamilyValues.from_dict(v) for k, v in keep["families"].items()}
        keep["raw_alphas"] = keep.get("raw_alphas") or {}
        return cls(**keep)

    @classmethod
    def from_trial(cls, trial) -> "TrialRecord":
        """The record of an Optuna FrozenTrial written by the runner (an old study's missing fields stay None)."""
        return cls.from_user_attrs(trial.user_attrs)

    def to_user_attrs(self) -> dict:
        """The user attributes the runner stores: only the fields that are set, as plain JSON."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None and not (f.name == "feasible" and self.values is not None):  # a told trial says it
                continue
            if f.name == "families":
                v = {k: fv.to_dict() for k, fv in v.items()}
            out[f.name] = v if f.name in ("raw_alphas", "alphas", "feasible") else jsonable(v)
        return out

    def family(self, name: str) -> FamilyValues | None:
        return (self.families or {}).get(name)

    def family_values(self, name: str) -> dict:
        fam = self.family(name)
        return fam.values if fam else {}


class Settled(str, enum.Enum):
    """Why a re-evaluated candidate stopped racing."""

    INFEASIBLE = "infeasible"  # a constraint's interval lies wholly on the wrong side of τ
    FEASIBLE = "feasible"  # every constraint's interval clears τ (a front member only)
    BEATEN = "beaten"  # its family concept interval lies below the family's best
    NOT_KEPT = "not kept"  # the budget kept others for the next round
    ROUNDS_SPENT = "rounds spent"
    PROMPTS_SPENT = "fresh prompts spent"


@dataclass
class ReevalCandidate:
    """One point the re-evaluation raced on fresh selection prompts."""

    params: dict
    trial: int | None = None
    scope: list = field(default_factory=list)  # the families it is scored on
    sources: list = field(default_factory=list)  # "front", "pick:<family>", "best-trial:<family>"
    rounds: int = 0
    settled: Settled | None = None
    why: str = ""  # settled, in words
    scores: dict = field(default_factory=dict)  # family -> name -> per-sample values
    families: dict[str, FamilyValues] = field(default_factory=dict)
    values: dict = field(default_factory=dict)  # pooled over its families
    intervals: dict = field(default_factory=dict)
    n: int = 0

    def settle(self, how: Settled, why: str) -> None:
        self.settled, self.why = how, why

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["settled"] = None if self.settled is None else self.settled.value
        out["families"] = {k: v.to_dict() for k, v in self.families.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "ReevalCandidate":
        keep = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        keep["families"] = {k: FamilyValues.from_dict(v) for k, v in (d.get("families") or {}).items()}
        settled = d.get("settled")
        if settled is not None and not keep.get("why"):  # older records kept the words in `settled`
            keep["why"] = settled
        keep["settled"] = None if settled is None else _settled(settled)
        return cls(**keep)


def _settled(text: str) -> Settled:
    for s in Settled:
        if text == s.value or text.startswith(s.value):
            return s
    if text.startswith("budget: not kept"):
        return Settled.NOT_KEPT
    if text.startswith("budget: rounds"):
        return Settled.ROUNDS_SPENT
    raise ValueError(f"unknown re-evaluation outcome {text!r}")


@dataclass
class ReevalRecord:
    """The re-evaluation of a study's trials: every candidate's fresh-prompt values and how the race went."""

    trials: int  # complete trials it describes (a record for fewer trials is stale)
    budget: dict
    candidates: list[ReevalCandidate] = field(default_factory=list)
    rounds: int = 0
    spent_samples: int = 0
    fresh_prompts_left: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    prompts: dict = field(default_factory=dict)  # family -> the fresh prompts used
    unsteered: dict = field(default_factory=dict)  # values, intervals, families, n of the unsteered model
    seconds: float | None = None

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["candidates"] = [c.to_dict() for c in self.candidates]
        return jsonable(out)

    @classmethod
    def from_dict(cls, d: dict) -> "ReevalRecord":
        keep = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        keep["candidates"] = [ReevalCandidate.from_dict(c) for c in d.get("candidates") or []]
        return cls(**keep)

    @classmethod
    def stored(cls, optuna_study, trials: int) -> "ReevalRecord | None":
        """The study's stored record when it describes `trials` complete trials, else None."""
        d = optuna_study.user_attrs.get(REEVALUATION_KEY)
        return cls.from_dict(d) if d and d.get("trials") == trials else None
