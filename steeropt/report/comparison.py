"""The numbers of a controller comparison (no model, no drawing): each study's identity and trials, whether two
studies may be compared, the shared hypervolume reference, hypervolume bands and best-at-τ values.

report.compare runs the comparison; compare_plots draws it and compare_tables writes it as markdown.

Nothing here loads the model: each study's identity comes from its spec (``steeropt.specs.build`` and its
parts), its trials from the Optuna storage (``optuna.load_study``).

Rules:
- studies that differ in model, concept, prompts (the selection prompts every trial is scored on),
  decoding, objective or judge are refused (``ComparisonError`` names every difference) unless
  ``force=True``; differences in budget, optimizer or seed are only reported as notes.
- hypervolume uses one reference for all compared studies (``report.pareto.objective_reference``, as
  ``Study`` does): the worst end of a bounded objective (0 / 1 for a [0, 1] score), else the worst value
  over all the studies' complete, feasible trials pushed out by 10% of their range; so it is comparable
  across the studies compared together.
- the hypervolume band is a bootstrap over the trials' own uncertainty: each draw replaces every trial's
  objective values by a draw matching its recorded 95% interval (Wilson / t / BCa, see
  ``evaluation.objectives.aggregate.mean_ci``: a split normal whose sides reach the two interval ends;
  a value recorded without an interval is treated as unknown over its known range), clipped to the objective's known
  range ([0, 1] for a score, see ``report.pareto.value_bounds``), and
  recomputes the front; the band is the 2.5-97.5 percentiles of the draws. The plotted front band is the
  region between the front of the trials' lower bounds and the front of their upper bounds.
- "best concept at coherency >= tau": the largest concept value over trials whose coherency (point
  value) is >= tau, as the Style Modulation Heads paper reports it; also the same with the coherency
  interval's lower bound >= tau (a conservative column).
- a common strength axis: metrics are plotted against α (normalised units, controller-specific) and
  against a dose measured on the model, the mean next-token KL to the unsteered model (``value.kl``,
  recorded by tier 1 for every trial), which means the same thing for every controller.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.axes import coherency_name, concept_name
from steeropt.records import ARMS_KEY
from steeropt.report.compare_tables import paired_markdown, prompted_markdown, table_markdown
from steeropt.report.pareto import hypervolume, objective_reference, value_bounds
from steeropt.report.trials import trials_frame
from steeropt.specs import build
from steeropt.specs.prompts import trial_prompts

DEFAULT_TAUS = (0.3, 0.4, 0.5, 0.6, 0.7)
HARD_KEYS = ("model", "concept", "prompts", "decoding", "objective", "judge")
SOFT_KEYS = ("budget", "optimizer", "seed")


class ComparisonError(SteeroptError):
    """The studies cannot be compared as they are (they differ in what is measured or how)."""


@dataclass
class StudyData:
    """One study as compare sees it: spec, identity, trials (no model loaded)."""

    ref: str
    spec: object
    objective: object
    judge: object | None
    trials: pd.DataFrame
    objectives: list[tuple[str, str]]
    constraints: list[tuple[str, str, float]]
    identity: dict
    controllers: list[str]
    frozen: list = field(default_factory=list)  # the complete FrozenTrials (per-prompt scores for pairing)
    arms: dict = field(default_factory=dict)  # the unsteered and prompted arms the study scored (runner.arms)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def label(self) -> str:
        return f"{self.name} ({'+'.join(self.controllers)})"


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def study_identity(spec, objective, judge) -> dict:
    """What must match for two studies' numbers to be comparable (plain, JSON-able values)."""
    obj = objective.model_dump(mode="json")
    obj.pop("name", None)
    obj.pop("description", None)
    j = None
    if judge is not None:
        used = sorted({s.rubric for s in objective.scores.values() if s.rubric})
        jd = judge.model_dump(mode="json")
        j = {k: jd.get(k) for k in ("backend", "model", "base_url", "temperature", "top_logprobs")}
        j["rubrics"] = {r: _digest(jd["rubrics"].get(r)) for r in used}
    return {
        "model": spec.model,
        "concept": spec.concept.model_dump(mode="json"),
        "prompts": trial_prompts(spec),
        "decoding": spec.decoding.model_dump(mode="json"),
        "objective": obj,
        "judge": j,
        "budget": spec.budget.model_dump(mode="json"),
        "optimizer": spec.optimizer.model_dump(mode="json"),
        "seed": spec.seed,
    }


def load_study_data(ref: str) -> StudyData:
    """Spec + parts + trials of one study, read from its Optuna storage."""
    import optuna  # heavy optional dependency (imported when studies are loaded)

    spec = build("study", ref)
    objective = spec.part("objective")
    judge = spec.part("judge") if getattr(objective, "judge", None) not in (None, "none") else None
    space = spec.part("search_space")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        st = optuna.load_study(study_name=spec.name, storage=spec.storage)
    except KeyError:
        raise SteeroptError(f"no study '{spec.name}' in {spec.storage}: run it first with 'steeropt run {ref}'") from None
    trials = trials_frame(st, objective.directions)
    controllers = sorted({s.controller for s in space.sites} | {k.controller for k in space.kernels})
    if space.controller is not None:
        controllers = list(space.controller.choices)
    return StudyData(str(ref), spec, objective, judge, trials, list(objective.directions),
                     [(c.name, c.op, c.value) for c in objective.constraints],
                     study_identity(spec, objective, judge), controllers,
                     [t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE"],
                     st.user_attrs.get(ARMS_KEY) or {})


def _describe_diff(key: str, a, b) -> str:
    if key == "prompts":
        sa, sb = set(map(tuple, a)), set(map(tuple, b))
        return (f"prompts differ: {len(a)} vs {len(b)} selection prompts, {len(sa - sb)} only in the first, "
                f"{len(sb - sa)} only in the second")
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        parts = [f"{k}: {_short(a.get(k))} vs {_short(b.get(k))}" for k in keys[:6]]
        return f"{key} differs ({'; '.join(parts)}{'; ...' if len(keys) > 6 else ''})"
    return f"{key} differs: {_short(a)} vs {_short(b)}"


def _short(v) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "..."


def differences(studies: list[StudyData]) -> tuple[list[str], list[str]]:
    """(hard, soft) differences of every study against the first one, as sentences."""
    hard, soft = [], []
    first = studies[0]
    for other in studies[1:]:
        for keys, out in ((HARD_KEYS, hard), (SOFT_KEYS, soft)):
            for k in keys:
                if first.identity[k] != other.identity[k]:
                    out.append(f"{first.name} vs {other.name}: " + _describe_diff(k, first.identity[k], other.identity[k]))
    return hard, soft


# ---- numbers --------------------------------------------------------------------------------------
def reference_for(objectives, *, unit=(), frames=()) -> list[float]:
    """The hypervolume reference Study uses (report.pareto.objective_reference): the worst end of a bounded
    objective, else derived from the complete, feasible trials of all `frames` together."""
    names = [n for n, _ in objectives]
    pts = [f[names].to_numpy(float) for f in (usable(df, objectives) for df in frames) if not f.empty]
    return objective_reference(objectives, unit=unit, points=np.vstack(pts) if pts else np.zeros((0, len(names))))


def usable(df: pd.DataFrame, objectives) -> pd.DataFrame:
    names = [n for n, _ in objectives]
    if df.empty:
        return df
    ok = (df["state"] == "COMPLETE") & df[names].notna().all(axis=1)
    if "feasible" in df:
        ok &= df["feasible"].map(lambda f: f is not False)
    return df[ok]


def front_hypervolume(df: pd.DataFrame, objectives, reference=None, *, unit=()) -> float:
    """Hypervolume of the complete, feasible trials of `df` (reference: `reference_for` this df alone)."""
    pts = usable(df, objectives)
    if pts.empty:
        return 0.0
    ref = reference if reference is not None else reference_for(objectives, unit=unit, frames=[df])
    return hypervolume(pts[[n for n, _ in objectives]].to_numpy(float), ref, [d for _, d in objectives])


def hypervolume_band(df: pd.DataFrame, objectives, reference=None, *, n: int = 400, level: float = 0.95,
                     seed: int = 0, unit=()) -> tuple[float, float] | None:
    """Bootstrap band of the hypervolume over the trials' recorded uncertainty (see module docstring).
    `unit`: the objectives known to lie in [0, 1] (the objective's scores)."""
    pts = usable(df, objectives)
    if pts.empty:
        return None
    names, dirs = [o for o, _ in objectives], [d for _, d in objectives]
    ref = reference if reference is not None else reference_for(objectives, unit=unit, frames=[df])
    lo_b, hi_b = np.array(value_bounds(names, unit)).T  # draws stay inside each objective's known range
    mu = pts[names].to_numpy(float)
    # Each end of the interval sets the spread on its side (Wilson intervals near 0 or 1 are lopsided).
    # A value without an interval (one sample) is unknown: spread over half its known range ([0, 1] for a
    # score), or over the trials' spread of that objective when the range is unbounded.
    width = np.where(np.isfinite(hi_b - lo_b), hi_b - lo_b, np.ptp(mu, axis=0))
    below, above = np.tile(width / 2, (len(mu), 1)), np.tile(width / 2, (len(mu), 1))
    z = 1.959964  # recorded intervals are 95%
    for j, name in enumerate(names):
        lo, hi = pts.get(f"{name}.ci_low"), pts.get(f"{name}.ci_high")
        if lo is not None and hi is not None:
            lo, hi = lo.astype(float).to_numpy(), hi.astype(float).to_numpy()
            known = ~(np.isnan(lo) | np.isnan(hi))
            below[known, j] = np.maximum(mu[known, j] - lo[known], 0.0) / z
            above[known, j] = np.maximum(hi[known] - mu[known, j], 0.0) / z
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n):
        e = rng.standard_normal(mu.shape)
        draws.append(hypervolume(np.clip(mu + e * np.where(e < 0, below, above), lo_b, hi_b), ref, dirs))
    a = (1 - level) / 2
    return float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))


def best_at(df: pd.DataFrame, objectives, tau: float, *, conservative: bool = False) -> dict | None:
    """The trial with the best concept value among those with coherency >= tau (its lower bound with
    conservative=True). None if no trial qualifies."""
    c, k = concept_name(objectives), coherency_name(objectives)
    done = df[(df["state"] == "COMPLETE") & df[c].notna() & df[k].notna()] if not df.empty else df
    if done.empty:
        return None
    col = f"{k}.ci_low" if conservative and f"{k}.ci_low" in done else k
    ok = done[done[col].astype(float) >= tau]
    if ok.empty:
        return None
    row = ok.sort_values([c, k], ascending=[False, False]).iloc[0]
    return {"value": float(row[c]), "ci": (_f(row.get(f"{c}.ci_low")), _f(row.get(f"{c}.ci_high"))),
            "coherency": float(row[k]), "trial": int(row["number"]), "params": _params(row)}


def _f(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _params(row) -> dict:
    return {k[7:]: row[k] for k in row.index if k.startswith("params.") and row[k] == row[k]}


def alpha_axis(df: pd.DataFrame) -> pd.Series:
    """One strength per trial: the largest |α| over the trial's numeric α parameters."""
    cols = [c for c in df.columns if c.startswith("params.") and ("alpha" in c) and pd.api.types.is_numeric_dtype(df[c])]
    if not cols:
        cols = [c for c in df.columns if c.startswith("params.") and pd.api.types.is_numeric_dtype(df[c])]
    if not cols:
        return pd.Series(np.nan, index=df.index)
    return df[cols].abs().max(axis=1)


@dataclass
class Comparison:
    studies: list[StudyData]
    table: pd.DataFrame
    taus: tuple[float, ...]
    differences: list[str]
    notes: list[str]
    forced: bool
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None
    paired: dict | None = None  # report.paired.paired_comparison (None: a study lacks per-prompt scores)
    prompted: dict = field(default_factory=dict)  # study -> family -> arms, best trial, paired trial − arm

    def markdown(self) -> str:
        md = table_markdown(self.table, self.taus)
        if self.paired:
            md += "\n\n" + paired_markdown(self.paired)
        if self.prompted:
            md += "\n\n" + prompted_markdown(self.prompted, concept_name(self.studies[0].objectives))
        return md

    def to_dict(self) -> dict:
        """Plain JSON-able result (`steeropt compare --json`)."""
        return json.loads(json.dumps({
            "studies": [s.ref for s in self.studies], "names": [s.name for s in self.studies],
            "controllers": {s.name: s.controllers for s in self.studies}, "forced": self.forced,
            "differences": self.differences, "notes": self.notes, "taus": list(self.taus),
            "table": json.loads(self.table.to_json(orient="records")), "paired": self.paired,
            "prompted": self.prompted,
            "files": [str(f) for f in self.files], "run_id": self.run_id}, default=_plain))


def _plain(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


