"""Paired comparisons: studies scored on the same prompts, differences of their headline figures with intervals.

    >>> pc = paired_comparison(studies, taus=(0.5, 0.6), kl_levels=(0.5, 1.0))       # doctest: +SKIP
    >>> pc["pairs"][0]   # {"a", "b", "figure", "diff", "ci", "clear"}
    >>> pc["matched"]    # per study and KL level: fitted concept / coherency / relevance at that dose

Every trial of a compared study is scored on the same selection prompts (report.compare refuses studies
whose prompts differ), and the runner stores each trial's per-prompt scores (TrialRecord.prompt_scores).
So the uncertainty of a *difference* between two controllers comes from one bootstrap over prompts shared by
both: each draw resamples the prompts (with replacement, within each family, so the family mix stays), recomputes
every trial's means of both studies on the same draw, and recomputes each figure; the 95% interval of a
difference is the 2.5-97.5 percentiles of its draws, widened for few prompts (`expanded_interval`: below 20 prompts a
percentile interval under-covers). A difference is *clear* when that interval excludes 0 by more than `margin`
(0.01: differences finer than that on a [0, 1] score are not a ranking).
Pairing removes the prompt-to-prompt spread both studies share, which the unpaired bands of compare keep.

Figures (all on the feasible trials, by the objective's constraints):
- hypervolume of the objectives (report.pareto.hypervolume, one reference for all studies);
- best concept at coherency >= τ and relevance (every other >= constraint) >= τ, for each τ;
- sweet-spot width on the common dose axis: the KL interval (nats) where the fitted concept >= the target and
  the fitted coherency and relevance >= their constraints (report.dose fits against the trials' mean KL),
  since α means something different per controller;
- matched dose: fitted concept, coherency and relevance at equal KL to the unsteered model (each study's curves
  against its trials' KL; a KL outside a study's measured range is not extrapolated and shows as None).
"""
from __future__ import annotations

import itertools

import numpy as np

from steeropt.evaluation.objectives.config import compare
from steeropt.records import TrialRecord
from steeropt.report.dose import GRID, fit_logistic, logistic, region
from steeropt.report.pareto import hypervolume


def prompt_arrays(frozen, axes) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(trial numbers [T], axis -> scores [T, P]) from the trials' stored per-prompt scores; None if a trial
    lacks them (a study run before they were stored)."""
    recs = {t.number: TrialRecord.from_trial(t) for t in frozen}
    rows = [t for t in frozen if t.state.name == "COMPLETE" and recs[t.number].values]
    if not rows or any(recs[t.number].prompt_scores is None for t in rows):
        return None
    P = 1 + max(i for t in rows for i in recs[t.number].prompt_scores["prompt"] if i is not None)
    out = {a: np.full((len(rows), P), np.nan) for a in axes}
    for r, t in enumerate(rows):
        ps = recs[t.number].prompt_scores
        for a in axes:
            for i, v in zip(ps["prompt"], ps.get(a) or []):
                if i is not None and v is not None:
                    out[a][r, i] = v
    return np.array([t.number for t in rows]), out


def _means(arr: dict, idx: np.ndarray) -> dict:
    with np.errstate(invalid="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore", RuntimeWarning)
        return {a: np.nanmean(v[:, idx], axis=1) for a, v in arr.items()}


class _Figures:
    """The figures of one study from its trials' means on one draw of prompts."""

    def __init__(self, objectives, constraints, taus, kl_levels, target, reference):
        self.objectives, self.constraints, self.taus = objectives, constraints, taus
        self.kl_levels, self.target, self.reference = kl_levels, target, reference
        self.concept = objectives[0][0]
        self.coherency = next((n for n, _ in objectives if n == "coherency"), objectives[-1][0])
        self.floors = {n: v for n, op, v in constraints if op == ">="}

    def __call__(self, m: dict, starts: dict | None = None) -> tuple[dict, dict]:
        names = [n for n, _ in self.objectives]
        T = len(m[names[0]])
        ok = np.ones(T, bool)
        for n, op, v in self.constraints:
            ok &= np.array([x == x and compare(float(x), op, v) for x in m[n]])
        pts = np.column_stack([m[n] for n in names])
        good = ok & ~np.isnan(pts).any(axis=1)
        fig = {"hypervolume": float(hypervolume(pts[good], self.reference, [d for _, d in self.objectives]))
               if good.any() else 0.0}
        for tau in self.taus:  # coherency and every other floor axis (relevance) >= τ
            sel = ~np.isnan(m[self.concept])
            for n in {self.coherency, *self.floors}:
                sel &= np.nan_to_num(m[n], nan=-1.0) >= tau
            fig[f"best@{tau:g}"] = float(np.max(m[self.concept][sel])) if sel.any() else 0.0
        # curves against the KL dose: sweet-spot width and matched-dose values
        fits = {}
        kl = m.get("kl")
        if kl is not None and np.isfinite(kl).sum() >= 3 and np.nanmax(kl) > np.nanmin(kl):
            use = np.isfinite(kl)
            x = kl[use]
            rng = (float(x.min()), float(x.max()))
            grid = np.linspace(*rng, GRID)
            curves = {}
            for a in (self.concept, *self.floors):
                y = m[a][use]
                keep = ~np.isnan(y)
                if keep.sum() < 3:
                    continue
                p = fit_logistic(x[keep], y[keep], np.ones(keep.sum()), rng,
                                 start=(starts or {}).get(a))
                fits[a] = p
                curves[a] = logistic(p, grid)
            if all(a in curves for a in (self.concept, *self.floors)):
                mask = curves[self.concept] >= self.target
                for a, tau in self.floors.items():
                    mask &= curves[a] >= tau
                r = region(mask, grid)
                fig["sweet_spot_width_kl"] = 0.0 if r is None else r[1] - r[0]
            for level in self.kl_levels:
                inside = rng[0] <= level <= rng[1]
                for a, c in curves.items():
                    fig[f"{a}@kl{level:g}"] = float(np.interp(level, grid, c)) if inside else None
        return fig, fits


def expanded_interval(d: float, lo: float, hi: float, n: int) -> tuple[float, float]:
    """The percentile interval of a difference widened for few prompts (Hesterberg's expanded percentile: the
    factor t(0.975, n−1)/z(0.975)·√(n/(n−1)) below 20 prompts, as the project's mean_ci switches to t there);
    a 9-prompt percentile interval alone covers well under 95%."""
    from scipy import stats

    if n >= 20 or n < 2:
        return float(lo), float(hi)
    f = stats.t.ppf(0.975, n - 1) / stats.norm.ppf(0.975) * np.sqrt(n / (n - 1))
    return float(d - f * (d - lo)), float(d + f * (hi - d))


def paired_comparison(studies, *, taus, kl_levels=(0.1, 0.5, 1.0, 2.0), concept_target: float = 0.5,
                      reference, n_boot: int = 200, seed: int = 0, margin: float = 0.01) -> dict | None:
    """Figures per study, paired differences with intervals for every pair (module docstring). None when a
    study lacks per-prompt scores (then compare reports the unpaired bands only)."""
    first = studies[0]
    constraints = list(first.constraints)
    axes = sorted({n for n, _ in first.objectives} | {n for n, _, _ in constraints} | {"kl"})
    data = []
    for s in studies:
        arr = prompt_arrays(s.frozen, axes)
        if arr is None:
            return None
        data.append(arr[1])
    P = min(next(iter(d.values())).shape[1] for d in data)
    families = [f for f, _ in first.identity["prompts"]][:P]
    strata = [np.flatnonzero(np.array(families) == f) for f in dict.fromkeys(families)]
    figs = _Figures(first.objectives, constraints, taus, kl_levels, concept_target, reference)
    full = np.arange(P)
    point, starts = zip(*(figs(_means(d, full)) for d in data))
    rng = np.random.default_rng(seed)
    draws = [[] for _ in studies]
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata])
        for k, d in enumerate(data):
            draws[k].append(figs(_means(d, idx), starts[k])[0])
    names = [k for k in point[0]]
    pairs = []
    for i, j in itertools.combinations(range(len(studies)), 2):
        for name in names:
            a, b = point[i].get(name), point[j].get(name)
            diffs = [x.get(name) - y.get(name) for x, y in zip(draws[i], draws[j])
                     if x.get(name) is not None and y.get(name) is not None]
            if a is None or b is None or len(diffs) < n_boot // 2:
                pairs.append({"a": studies[i].name, "b": studies[j].name, "figure": name, "a_value": a, "b_value": b,
                              "diff": None, "ci": None, "clear": None})
                continue
            lo, hi = expanded_interval(a - b, *np.percentile(diffs, [2.5, 97.5]), P)
            pairs.append({"a": studies[i].name, "b": studies[j].name, "figure": name, "a_value": a, "b_value": b,
                          "diff": a - b, "ci": (lo, hi), "clear": bool(lo > margin or hi < -margin)})
    per_study = []
    for k, s in enumerate(studies):
        row = {"study": s.name}
        for name in names:
            vals = [d.get(name) for d in draws[k] if d.get(name) is not None]
            ci = tuple(float(v) for v in np.percentile(vals, [2.5, 97.5])) if len(vals) >= n_boot // 2 else None
            row[name] = point[k].get(name)
            row[f"{name}.ci"] = ci
        per_study.append(row)
    matched = [{"study": r["study"], "kl": level,
                **{a: r.get(f"{a}@kl{level:g}") for a in (figs.concept, *figs.floors)},
                **{f"{a}.ci": r.get(f"{a}@kl{level:g}.ci") for a in (figs.concept, *figs.floors)}}
               for r in per_study for level in kl_levels]
    return {"prompts": P, "n_boot": n_boot, "concept_target": concept_target, "kl_levels": list(kl_levels),
            "margin": margin,
            "figures": per_study, "pairs": pairs, "matched": matched}
