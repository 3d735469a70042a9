"""Compare controllers: several studies' Pareto fronts on one plot, with hypervolume and uncertainty.

    >>> from steeropt.report.compare import compare
    >>> cmp = compare(["studies/compare-add.yaml", "studies/compare-clamp.yaml"])   # doctest: +SKIP
    >>> cmp.table          # one row per study: hypervolume [band], best concept at coherency >= tau
    >>> cmp.files          # front.png / front.html / dose.png / table.csv / table.md

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
from steeropt.report.arms import ARMS_KEY, versus_arms

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
    from steeropt.runner.study import trial_prompts

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
    import optuna

    from steeropt.specs import build
    from steeropt.runner.study import trials_frame

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
    from steeropt.report.pareto import objective_reference

    names = [n for n, _ in objectives]
    pts = [f[names].to_numpy(float) for f in (_usable(df, objectives) for df in frames) if not f.empty]
    return objective_reference(objectives, unit=unit, points=np.vstack(pts) if pts else np.zeros((0, len(names))))


def _usable(df: pd.DataFrame, objectives) -> pd.DataFrame:
    names = [n for n, _ in objectives]
    if df.empty:
        return df
    ok = (df["state"] == "COMPLETE") & df[names].notna().all(axis=1)
    if "feasible" in df:
        ok &= df["feasible"].map(lambda f: f is not False)
    return df[ok]


def front_hypervolume(df: pd.DataFrame, objectives, reference=None, *, unit=()) -> float:
    """Hypervolume of the complete, feasible trials of `df` (reference: `reference_for` this df alone)."""
    from steeropt.report.pareto import hypervolume

    pts = _usable(df, objectives)
    if pts.empty:
        return 0.0
    ref = reference if reference is not None else reference_for(objectives, unit=unit, frames=[df])
    return hypervolume(pts[[n for n, _ in objectives]].to_numpy(float), ref, [d for _, d in objectives])


def hypervolume_band(df: pd.DataFrame, objectives, reference=None, *, n: int = 400, level: float = 0.95,
                     seed: int = 0, unit=()) -> tuple[float, float] | None:
    """Bootstrap band of the hypervolume over the trials' recorded uncertainty (see module docstring).
    `unit`: the objectives known to lie in [0, 1] (the objective's scores)."""
    from steeropt.report.pareto import hypervolume, value_bounds

    pts = _usable(df, objectives)
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


def coherency_name(objectives) -> str:
    names = [n for n, _ in objectives]
    return "coherency" if "coherency" in names else names[-1]


def concept_name(objectives) -> str:
    c = coherency_name(objectives)
    return next(n for n, _ in objectives if n != c) if len(objectives) > 1 else objectives[0][0]


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


# ---- the comparison ---------------------------------------------------------------------------------
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


def compare(refs, *, force: bool = False, taus=DEFAULT_TAUS, out_dir: str | Path | None = None,
            track: bool = True, tracking_uri: str | None = None, experiment: str | None = None,
            n_boot: int = 400, name: str | None = None, kl_levels=(0.1, 0.5, 1.0, 2.0),
            concept_target: float = 0.5, n_boot_paired: int = 200) -> Comparison:
    """Compare the fronts of several studies (spec names or files). See the module docstring."""
    refs = list(refs)
    if len(refs) < 2:
        raise SteeroptError("compare needs at least two studies")
    studies = [load_study_data(r) for r in refs]
    names = [s.name for s in studies]
    if len(set(names)) != len(names):
        raise SteeroptError(f"the same study is given twice: {names}")
    hard, soft = differences(studies)
    if hard and not force:
        raise ComparisonError("these studies are not comparable (use --force to compare anyway):\n  - "
                              + "\n  - ".join(hard))
    objectives = studies[0].objectives
    if any([n for n, _ in s.objectives] != [n for n, _ in objectives] for s in studies):
        raise ComparisonError("the studies optimise different objectives: "
                              + "; ".join(f"{s.name}: {[n for n, _ in s.objectives]}" for s in studies))
    from steeropt.report.pareto import unit_scores

    unit = unit_scores(studies[0].objective)
    ref_pt = reference_for(objectives, unit=unit, frames=[s.trials for s in studies])  # one for all studies
    rows = []
    for s in studies:
        df = s.trials
        done = df[df["state"] == "COMPLETE"] if not df.empty else df
        band = hypervolume_band(df, objectives, ref_pt, n=n_boot, unit=unit)
        from steeropt.report.analysis import pareto_front

        row = {"study": s.name, "controller": "+".join(s.controllers), "trials": len(df), "complete": len(done),
               "front_size": len(pareto_front(df, objectives)) if len(done) else 0,
               "hypervolume": front_hypervolume(df, objectives, ref_pt),
               "hv_low": band[0] if band else None, "hv_high": band[1] if band else None}
        if "value.kl" in df and len(done):
            row["max_kl"] = float(pd.to_numeric(done["value.kl"], errors="coerce").max())
        for tau in taus:
            b = best_at(df, objectives, tau)
            bc = best_at(df, objectives, tau, conservative=True)
            row[f"best@{tau:g}"] = b["value"] if b else None
            row[f"best@{tau:g}.ci"] = b["ci"] if b else None
            row[f"best@{tau:g}.alpha"] = _alpha_of(b)
            row[f"best_lcb@{tau:g}"] = bc["value"] if bc else None
        rows.append(row)
    table = pd.DataFrame(rows)
    cmp = Comparison(studies, table, tuple(taus), hard, soft, force)
    from steeropt.report.paired import paired_comparison

    cmp.paired = paired_comparison(studies, taus=tuple(taus), kl_levels=tuple(kl_levels), reference=ref_pt,
                                   concept_target=concept_target, n_boot=n_boot_paired)
    maximize = concept_name(objectives)
    axes = [maximize, *(n for n, _ in objectives if n != maximize), *(c[0] for c in studies[0].constraints)]
    cmp.prompted = {s.name: versus_arms(s.arms, s.frozen, maximize, s.constraints, list(dict.fromkeys(axes)))
                    for s in studies if s.arms}
    if cmp.paired is None:
        cmp.notes.append("no paired differences: a study's trials lack per-prompt scores (run before they were "
                         "stored); the bands above are unpaired")
    label = name or "compare-" + "-vs-".join(names)
    out = Path(out_dir) if out_dir is not None else Path("runs") / label[:120]
    out.mkdir(parents=True, exist_ok=True)
    cmp.files = write_comparison_artifacts(cmp, out, title=label)
    if track:
        cmp.run_id = log_comparison(cmp, label, tracking_uri or studies[0].spec.tracking_uri,
                                    experiment or studies[0].spec.experiment_name)
    return cmp


def _alpha_of(b) -> str | None:
    if not b:
        return None
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())


def _plain(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def _fmt(v, nd=3) -> str:
    return "—" if v is None or v != v else f"{v:.{nd}f}"


def paired_markdown(paired: dict) -> str:
    """The paired differences and the matched-dose table as markdown."""
    lines = [f"Paired differences (a − b; bootstrap over the {paired['prompts']} shared prompts, "
             f"{paired['n_boot']} draws, interval widened below 20 prompts; clear = the 95% interval excludes 0 by "
             f"more than {paired.get('margin', 0.0):g}; best@τ: concept with coherency and relevance ≥ τ):", "",
             "| a | b | figure | a | b | a − b [95%] | clear at 95% |", "|---|---|---|---|---|---|---|"]
    for r in paired["pairs"]:
        if "@kl" in r["figure"]:
            continue
        ci = f" [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r["ci"] else ""
        clear = "—" if r["clear"] is None else ("**yes**" if r["clear"] else "no")
        lines.append(f"| {r['a']} | {r['b']} | {r['figure']} | {_fmt(r['a_value'])} | {_fmt(r['b_value'])} | "
                     f"{_fmt(r['diff'])}{ci} | {clear} |")
    axes = [k for k in paired["matched"][0] if k not in ("study", "kl") and not k.endswith(".ci")] if paired["matched"] else []
    lines += ["", "Matched dose (fitted curves against the mean next-token KL to the unsteered model; — = outside "
              "the study's measured KL range):", "",
              "| study | KL (nats) | " + " | ".join(axes) + " |", "|---|---|" + "---|" * len(axes)]
    for r in paired["matched"]:
        cells = []
        for a in axes:
            ci = r.get(f"{a}.ci")
            cells.append(_fmt(r[a], 2) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and r[a] is not None else ""))
        lines.append(f"| {r['study']} | {r['kl']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prompted_markdown(prompted: dict, maximize: str) -> str:
    """Per study and family: the best feasible trial against the prompted and unsteered arms (paired over the
    family's trial prompts)."""
    lines = [f"Steered against the baselines ({maximize}; the best feasible trial per family; paired over its prompts):",
             "", "| study | family | trial | prompted | unsteered | trial − prompted | trial − unsteered |",
             "|---|---|---|---|---|---|---|"]

    def arm(row, name):
        v = (row.get(name) or {}).get(maximize) or {}
        return _fmt(v.get("value"))

    def diff(row, name):
        d = (row.get(f"trial_vs_{name}") or {}).get(maximize)
        if not d:
            return "—"
        return f"{d['diff']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]" + (" clear" if d["clear"] else "")

    for study, fams in prompted.items():
        for fam, row in fams.items():
            lines.append(f"| {study} | {fam} | {row.get('best_trial') if row.get('best_trial') is not None else 'none feasible'} "
                         f"| {arm(row, 'prompted')} | {arm(row, 'unsteered')} | {diff(row, 'prompted')} | {diff(row, 'unsteered')} |")
    return "\n".join(lines)


def table_markdown(table: pd.DataFrame, taus) -> str:
    head = ["study", "controller", "trials", "front", "hypervolume [95% band]", "max KL"] + [f"best concept @ coh≥{t:g}" for t in taus]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        hv = f"{r['hypervolume']:.3f}" + (f" [{r['hv_low']:.3f}, {r['hv_high']:.3f}]" if r.get("hv_low") is not None
                                          and r["hv_low"] == r["hv_low"] else "")
        cells = [r["study"], r["controller"], f"{r['complete']}/{r['trials']}", str(r["front_size"]), hv,
                 f"{r['max_kl']:.2f}" if r.get("max_kl") is not None and r["max_kl"] == r["max_kl"] else "-"]
        for t in taus:
            v = r.get(f"best@{t:g}")
            if v is None or v != v:
                cells.append("—")
            else:
                ci = r.get(f"best@{t:g}.ci")
                a = r.get(f"best@{t:g}.alpha")
                s = f"{v:.2f}"
                if isinstance(ci, tuple) and ci[0] is not None:
                    s += f" [{ci[0]:.2f}, {ci[1]:.2f}]"
                if a:
                    s += f" (α={a.split('=', 1)[-1]})" if a.count("=") == 1 else f" ({a})"
                cells.append(s)
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


# ---- artifacts ------------------------------------------------------------------------------------
def _attainment(points: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """For maximise-maximise points [n, 2]: the best y reachable with x >= each xs (NaN if none)."""
    out = np.full(len(xs), np.nan)
    for i, x in enumerate(xs):
        ok = points[:, 0] >= x
        if ok.any():
            out[i] = points[ok, 1].max()
    return out


def plot_comparison(cmp: Comparison, png: Path, html: Path | None = None, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steeropt.report.analysis import pareto_front

    objectives = cmp.studies[0].objectives
    (x, dx), (y, dy) = objectives[0], objectives[1]
    sx, sy = (1 if dx == "maximize" else -1), (1 if dy == "maximize" else -1)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    grid = np.linspace(0, 1, 201)
    for i, s in enumerate(cmp.studies):
        color = f"C{i}"
        row = cmp.table.iloc[i]
        df = _usable(s.trials, objectives)
        if df.empty:
            continue
        ax.scatter(df[x], df[y], s=14, color=color, alpha=0.3)
        # band: between the attainment curves of the trials' lower and upper interval ends (both maximised)
        cols = [f"{x}.ci_low", f"{x}.ci_high", f"{y}.ci_low", f"{y}.ci_high"]
        if sx > 0 and sy > 0 and all(c in df for c in cols):
            lo = df[[cols[0], cols[2]]].astype(float).dropna().to_numpy()
            hi = df[[cols[1], cols[3]]].astype(float).dropna().to_numpy()
            if len(lo) and len(hi):
                ylo, yhi = _attainment(lo, grid), _attainment(hi, grid)
                ok = ~np.isnan(yhi)
                ax.fill_between(grid[ok], np.nan_to_num(ylo[ok], nan=0.0), yhi[ok], step="post", color=color,
                                alpha=0.12, lw=0)
        front = pareto_front(s.trials, objectives)
        hv = f"HV {row['hypervolume']:.3f}"
        if row.get("hv_low") is not None and row["hv_low"] == row["hv_low"]:
            hv += f" [{row['hv_low']:.3f}, {row['hv_high']:.3f}]"
        ax.plot(front[x], front[y], "o-", color=color, ms=5, drawstyle="steps-pre" if len(front) > 1 else "default",
                label=f"{s.label}: {hv}")
    for t in cmp.taus:
        ax.axhline(t, color="grey", lw=0.5, ls=":")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{x} ({dx})")
    ax.set_ylabel(f"{y} ({dy})")
    ax.set_title(title or "controller comparison")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    if html is not None:
        import plotly.graph_objects as go

        figp = go.Figure()
        for i, s in enumerate(cmp.studies):
            df = _usable(s.trials, objectives)
            front = pareto_front(s.trials, objectives)
            row = cmp.table.iloc[i]
            text = [_hover(r) for _, r in df.iterrows()]
            figp.add_trace(go.Scatter(x=df[x], y=df[y], mode="markers", opacity=0.35, name=f"{s.name} trials",
                                      text=text, legendgroup=s.name))
            err = {}
            if f"{x}.ci_low" in front:
                err = {"error_x": dict(type="data", symmetric=False, array=(front[f"{x}.ci_high"] - front[x]).tolist(),
                                       arrayminus=(front[x] - front[f"{x}.ci_low"]).tolist()),
                       "error_y": dict(type="data", symmetric=False, array=(front[f"{y}.ci_high"] - front[y]).tolist(),
                                       arrayminus=(front[y] - front[f"{y}.ci_low"]).tolist())}
            figp.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines+markers", line_shape="vh", legendgroup=s.name,
                                      name=f"{s.label} front, HV {row['hypervolume']:.3f}",
                                      text=[_hover(r) for _, r in front.iterrows()], **err))
        figp.update_layout(title=title or "controller comparison", xaxis_title=x, yaxis_title=y)
        figp.write_html(html, include_plotlyjs=True)  # embedded: the page must render offline


def _hover(row) -> str:
    keep = [k for k in row.index if k.startswith(("params.", "raw.")) or k in ("number", "value.kl")]
    return "<br>".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keep)


def plot_dose(cmp: Comparison, png: Path) -> None:
    """Concept and coherency against α (controller units) and against the measured KL dose."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = cmp.studies[0].objectives
    metrics = [concept_name(objectives), coherency_name(objectives)]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False)
    for i, s in enumerate(cmp.studies):
        df = s.trials[s.trials["state"] == "COMPLETE"] if not s.trials.empty else s.trials
        if df.empty:
            continue
        alpha = alpha_axis(df)
        kl = pd.to_numeric(df["value.kl"], errors="coerce") if "value.kl" in df else pd.Series(np.nan, index=df.index)
        for r, m in enumerate(metrics):
            for c, (xs, xl) in enumerate(((alpha, "α (normalised; meaning differs per controller)"),
                                          (kl, "dose: mean next-token KL vs unsteered (nats)"))):
                ax = axes[r][c]
                order = np.argsort(xs.to_numpy())
                xv, yv = xs.to_numpy()[order], pd.to_numeric(df[m], errors="coerce").to_numpy()[order]
                ax.plot(xv, yv, "o-", color=f"C{i}", ms=4, label=s.label)
                if f"{m}.ci_low" in df:
                    lo = pd.to_numeric(df[f"{m}.ci_low"], errors="coerce").to_numpy()[order]
                    hi = pd.to_numeric(df[f"{m}.ci_high"], errors="coerce").to_numpy()[order]
                    ax.fill_between(xv, lo, hi, color=f"C{i}", alpha=0.1, lw=0)
                ax.set_xlabel(xl)
                ax.set_ylabel(m)
                ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("metrics vs strength: α per controller (left) and a common measured dose (right)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_comparison_artifacts(cmp: Comparison, out: Path, title: str) -> list[Path]:
    files = [out / "compare.png", out / "compare.html", out / "dose.png", out / "table.csv", out / "table.md",
             out / "comparison.json"]
    if cmp.paired:
        pd.DataFrame(cmp.paired["pairs"]).to_csv(out / "paired.csv", index=False)
        pd.DataFrame(cmp.paired["matched"]).to_csv(out / "matched.csv", index=False)
        files += [out / "paired.csv", out / "matched.csv"]
    plot_comparison(cmp, files[0], files[1], title=title)
    plot_dose(cmp, files[2])
    cmp.table.to_csv(files[3], index=False)
    md = cmp.markdown()
    if cmp.differences:
        md += "\n\nForced comparison; the studies differ:\n" + "\n".join(f"- {d}" for d in cmp.differences)
    if cmp.notes:
        md += "\n\nNotes:\n" + "\n".join(f"- {d}" for d in cmp.notes)
    files[4].write_text(md + "\n")
    files[5].write_text(json.dumps(cmp.to_dict(), indent=2))
    return files


def log_comparison(cmp: Comparison, label: str, tracking_uri: str | None, experiment: str) -> str:
    """One MLflow run (tag steeropt.kind=comparison) with the table as metrics and the plots as artifacts."""
    from mlflow.entities import Metric, Param
    from mlflow.utils.time import get_current_time_millis

    from steeropt.runner.tracking import KIND_TAG, _clean_params, _client, _finite_metrics

    try:
        client = _client(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    except Exception as exc:
        raise SteeroptError(f"tracking URI {tracking_uri or '(MLflow default)'} refused the comparison: "
                            f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    run = client.create_run(exp_id, run_name=label[:250], tags={KIND_TAG: "comparison",
                                                                "steeropt.studies": ",".join(s.name for s in cmp.studies),
                                                                "steeropt.forced": str(cmp.forced)})
    rid = run.info.run_id
    params = {"studies": ",".join(s.ref for s in cmp.studies), "taus": ",".join(f"{t:g}" for t in cmp.taus),
              "forced": cmp.forced, "differences": " | ".join(cmp.differences) or "none",
              "notes": " | ".join(cmp.notes) or "none"}
    metrics = {}
    for _, r in cmp.table.iterrows():
        p = r["study"]
        metrics |= {f"{p}.hypervolume": r["hypervolume"], f"{p}.hv_low": r.get("hv_low"), f"{p}.hv_high": r.get("hv_high"),
                    f"{p}.front_size": r["front_size"]}
        for t in cmp.taus:
            metrics[f"{p}.best_at_{t:g}"] = r.get(f"best@{t:g}")
            metrics[f"{p}.best_lcb_at_{t:g}"] = r.get(f"best_lcb@{t:g}")
    for r in (cmp.paired or {}).get("pairs", []):
        if r["diff"] is not None and "@kl" not in r["figure"]:
            key = f"diff.{r['a']}-{r['b']}.{r['figure']}"
            metrics |= {key: r["diff"], f"{key}.ci_low": r["ci"][0], f"{key}.ci_high": r["ci"][1]}
    now = get_current_time_millis()
    metrics = {k: v for k, v in metrics.items() if v is not None}
    client.log_batch(rid, params=[Param(k, v) for k, v in _clean_params(params).items()],
                     metrics=[Metric(k.replace("@", "_at_"), v, now, 0) for k, v in _finite_metrics(metrics).items()])
    for f in cmp.files:
        client.log_artifact(rid, str(f), "comparison")
    client.set_terminated(rid, "FINISHED")
    return rid


# `steeropt.report.compare` is both this module and the function (`steeropt.report.compare(...)`): make the module callable.
import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return compare(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
