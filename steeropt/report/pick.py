"""Pick a deployable setting per prompt family, confirm it on held-out prompts, export a profile.

    >>> from steeropt.report.pick import pick
    >>> res = pick("studies/quickstart.yaml", out="profiles/quickstart")          # doctest: +SKIP
    >>> res.families["advice"].status                   # "ok" | "no_deployable_setting"
    >>> res.families["advice"].held_out["concept"]      # (value, (ci_low, ci_high)) on held-out prompts
    >>> res.to_dict()                                   # what `steeropt pick --json` prints

How a family's setting is chosen, on the *selection* prompts only:
1. dose-response fits (1-D spaces: the strength is the space's one α parameter): the trials' per-family means
   of the maximised value (concept), coherency and every other `>=` constraint (relevance) are fitted with a
   monotone logistic each, with a bootstrap band (report.dose). The trials are the curves' data; the setting
   is read off the curves: the strength with the best fitted concept among those whose constraint curves'
   lower band meets τ (robust), or whose fitted curves meet it when none does; then the smallest strength
   whose fitted concept lies within the best's band (smallest intervention among ties). The sweet spot is
   the strength interval where the fitted concept >= `concept_target` and every constraint curve >= τ, with
   an interval for each end, its width and the chance it is empty.
   Larger spaces (several α, tents, controller choices) are chosen from the trials themselves (step 1'):
   the fitted curves there use the measured KL dose as x and are reported, not used to choose.
1'. from the trials: those meeting every constraint on the family's values; the robust ones (coherency lower
   bound >= τ) preferred; the best maximised value; ties within the best's interval go to the smallest
   intervention (fewest steering sites, lowest KL dose, smallest |α|).
2. re-evaluation (budget.reevaluation in the study spec, done by `steeropt run` after the trials): the
   candidates were evaluated again on *fresh* selection prompts no trial used (report.reeval). The fresh
   values check the claim: the choice stands unless they refute it (a constraint interval wholly below τ),
   in which case the best unrefuted re-evaluated candidate of the family takes its place; the values shown
   for the selection are the fresh ones (a winner on the trial prompts is not trusted on those alone).
3. held-out: the chosen setting and the unsteered model are generated on the family's held-out prompts
   (never used for the choice) and scored with the study's objective stack; those are the reported numbers
   (AxBench: select on one half, report on the other).
4. verdict: status "ok" only when the held-out concept beats the unsteered model's with non-overlapping 95%
   intervals AND the held-out values meet every constraint; otherwise "no_deployable_setting" with the
   reason and the fitted curves (dose_fits.png) that show why. No candidate meeting the constraints on the
   selection prompts is "no_deployable_setting" too, with the closest candidates.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.stack import sample_value

DEFAULT_CONCEPT_TARGET = 0.5  # a calibrated concept score of 0.5 ≈ label 1 of 2: the concept is clearly "partly" there


@dataclass
class Candidate:
    trial: int | None  # None: a strength read off the fitted curves (not a trial)
    params: dict
    value: float
    value_ci: tuple | None
    coherency: float
    coherency_ci: tuple | None
    dose: float | None
    n_sites: int
    alpha_sum: float
    values: dict = field(default_factory=dict)  # every per-family value (for other constraints)
    intervals: dict = field(default_factory=dict)

    @property
    def robust_for(self):
        # an unknown interval's lower bound is the worst a [0, 1] coherency can be: robust only for τ <= 0
        known = self.coherency_ci is not None and self.coherency_ci[0] is not None
        return lambda tau: (self.coherency_ci[0] if known else 0.0) >= tau

    def brief(self) -> dict:
        return {"trial": self.trial, "params": self.params, "value": self.value, "value_ci": self.value_ci,
                "coherency": self.coherency, "coherency_ci": self.coherency_ci, "dose_kl": self.dose}


@dataclass
class FamilyPick:
    family: str
    status: str  # "ok" | "no_deployable_setting"
    chosen: Candidate | None = None
    robust: bool = False  # the constraints hold at the lower bound (interval or fitted band)
    ties: list = field(default_factory=list)  # trials tied with the best (within its uncertainty)
    sweet_spot: dict = field(default_factory=dict)
    closest: list = field(default_factory=list)
    reason: str = ""
    selection_prompts: list = field(default_factory=list)
    held_out_prompts: list = field(default_factory=list)
    held_out: dict = field(default_factory=dict)  # value name -> (value, (lo, hi))
    unsteered_held_out: dict = field(default_factory=dict)
    arms_held_out: dict = field(default_factory=dict)  # "prompted" (and "prompted_steered") -> like held_out
    arm_differences: dict = field(default_factory=dict)  # arm -> value name -> paired steered − arm (runner.arms)
    held_out_texts: list = field(default_factory=list)  # per held-out prompt: the steered, unsteered, prompted texts
    next_steps: list = field(default_factory=list)  # what to try when the family has no deployable setting
    held_out_counts: dict = field(default_factory=dict)
    sites: list = field(default_factory=list)
    source: str = "trials"  # what chose the setting: "fit" | "trials", then "+reevaluation"
    curves: dict = field(default_factory=dict)  # axis -> report.dose.Curve (1-D spaces and KL dose)
    fit: dict | None = None  # report.dose.fitted_choice
    reevaluated: dict | None = None  # the chosen candidate's values on fresh selection prompts
    verdict: dict = field(default_factory=dict)  # beats_unsteered, meets_constraints (held-out)


@dataclass
class PickResult:
    study: str
    maximize: str
    coherency: str
    min_coherency: float
    share: float
    families: dict
    profile: Path | None = None
    constraints: list = field(default_factory=list)  # (name, op, value) a deployable setting meets
    concept_target: float = DEFAULT_CONCEPT_TARGET
    x_label: str = ""
    files: list = field(default_factory=list)

    def table_rows(self) -> list[dict]:
        rows = []
        for f, p in self.families.items():
            c = p.chosen
            row = {"family": f, "status": p.status, "trial": c.trial if c else None,
                   "setting": _fmt_params(c.params) if c else "—", "robust": p.robust if c else None,
                   "selection": f"{c.value:.2f} / coh {c.coherency:.2f}" if c else "—",
                   "held_out": "—", "unsteered": "—", "prompted": "—", "sweet_spot": _fmt_spot(p.sweet_spot),
                   "source": p.source}
            if p.held_out:
                v, vc = p.held_out[self.maximize], p.held_out[self.coherency]
                row["held_out"] = f"{_fmt_ci(*v)} / coh {_fmt_ci(*vc)}"
            if p.unsteered_held_out:
                v, vc = p.unsteered_held_out[self.maximize], p.unsteered_held_out[self.coherency]
                row["unsteered"] = f"{_fmt_ci(*v)} / coh {_fmt_ci(*vc)}"
            if "prompted" in p.arms_held_out:
                v, vc = p.arms_held_out["prompted"][self.maximize], p.arms_held_out["prompted"][self.coherency]
                row["prompted"] = f"{_fmt_ci(*v)} / coh {_fmt_ci(*vc)}"
            if p.status != "ok":
                row["setting"] = ("no deployable setting" + (f" (best: {_fmt_params(c.params)})" if c else "")
                                  + ": " + p.reason)
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        """Plain JSON-able result (`steeropt pick --json`): per family status, setting, sweet spot, held-out and
        unsteered values with intervals."""
        fams = {}
        for f, p in self.families.items():
            c = p.chosen
            fams[f] = {"status": p.status, "reason": p.reason or None, "source": p.source,
                       "setting": None if c is None else {"params": c.params, "trial": c.trial, "sites": p.sites},
                       "selection": None if c is None else {
                           self.maximize: _vci(c.value, c.value_ci), self.coherency: _vci(c.coherency, c.coherency_ci),
                           **{n: _vci(c.values.get(n), c.intervals.get(n)) for n, _, _ in self.constraints
                              if n not in (self.maximize, self.coherency)}},
                       "robust": p.robust, "sweet_spot": _jsonable(p.sweet_spot), "fit": _jsonable(p.fit),
                       "curves": {a: cv.summary() for a, cv in p.curves.items()},
                       "reevaluated": _jsonable(p.reevaluated),
                       "held_out": {k: _vci(*v) for k, v in p.held_out.items() if k in self._shown()},
                       "unsteered_held_out": {k: _vci(*v) for k, v in p.unsteered_held_out.items() if k in self._shown()},
                       **{f"{arm}_held_out": {k: _vci(*v) for k, v in vals.items() if k in self._shown()}
                          for arm, vals in p.arms_held_out.items()},
                       "versus": _jsonable(p.arm_differences), "held_out_texts": p.held_out_texts,
                       "next_steps": p.next_steps,
                       "held_out_counts": _jsonable(p.held_out_counts), "verdict": _jsonable(p.verdict),
                       "selection_prompts": p.selection_prompts, "held_out_prompts": p.held_out_prompts,
                       "closest": _jsonable(p.closest)}
        return {"study": self.study, "maximize": self.maximize, "coherency": self.coherency,
                "min_coherency": self.min_coherency, "constraints": [list(c) for c in self.constraints],
                "concept_target": self.concept_target, "x": self.x_label, "families": fams,
                "profile": str(self.profile) if self.profile else None, "files": [str(f) for f in self.files]}

    def _shown(self) -> set:
        return {self.maximize, self.coherency, "hm", "kl", *(n for n, _, _ in self.constraints)}


def _vci(v, ci) -> dict:
    return {"value": v, "ci": list(ci) if ci else None}


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: None if o != o else (list(o) if isinstance(o, tuple) else str(o))))


def _fmt_ci(v, ci) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else "")


def _fmt_params(p: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def _fmt_spot(s: dict) -> str:
    if not s:
        return "—"
    if "interval" in s:  # fitted (report.dose.sweet_spot)
        if s.get("interval") is None:
            return f"empty (p_empty {s.get('p_empty', 1):.2f})"
        (a, b), ci = s["interval"], s.get("interval_ci")
        txt = f"[{a:.3g}, {b:.3g}] width {s['width']:.3g}"
        if ci:
            txt += f" (ends {ci[0][0]:.3g}–{ci[0][1]:.3g} / {ci[1][0]:.3g}–{ci[1][1]:.3g}; p_empty {s['p_empty']:.2f})"
        return txt
    if not s.get("ranges"):
        return "—"
    return "; ".join(f"{k} [{r[0]:.3g}, {r[1]:.3g}]" for k, r in s["ranges"].items()) + f" ({s['n']} trials)"


# ---- selection (no model needed) ---------------------------------------------------------------------
def family_candidates(trials, family: str, maximize: str, coherency: str, space) -> list[Candidate]:
    """One Candidate per complete trial with per-family values for `family` (Optuna FrozenTrials)."""
    out = []
    for t in trials:
        if t.state.name != "COMPLETE":
            continue
        fam = (t.user_attrs.get("families") or {}).get(family)
        if not fam:
            continue
        vals, ivs = fam.get("values") or {}, fam.get("intervals") or {}
        v, c = vals.get(maximize), vals.get(coherency)
        if v is None or c is None:
            continue
        out.append(candidate(space, dict(t.params), vals, ivs, maximize, coherency, trial=t.number))
    return out


def candidate(space, params: dict, vals: dict, ivs: dict, maximize: str, coherency: str, trial=None) -> Candidate:
    try:
        plan = space.materialize(params)
        on = plan.steered_sites()  # active sites that act: a clamp at α=0 ablates, so it counts
        n_sites, alpha_sum = len(on), sum(abs(float(plan.alphas[i])) for i in on)
    except SteeroptError:  # KL-unit strengths before calibration (no model here): a dose of 0 is no site
        doses = [abs(float(params[k])) for k in space.kl_unit_params() if params.get(k) is not None]
        n_sites, alpha_sum = sum(d > 1e-12 for d in doses), sum(doses)
    return Candidate(trial, dict(params), float(vals[maximize]), _tuple(ivs.get(maximize)), float(vals[coherency]),
                     _tuple(ivs.get(coherency)), vals.get("kl"), n_sites, alpha_sum, dict(vals),
                     {k: _tuple(v) for k, v in ivs.items() if v})


def _tuple(x):
    return tuple(float(v) for v in x[:2]) if x else None


def choose(cands: list[Candidate], tau: float, share: float = 0.9, others: tuple = ()) -> FamilyPick:
    """Step 1' of the module docstring, for one family's candidates.

    others: the objective's other constraints as (name, op, value), e.g. ("relevance", ">=", 0.5): a candidate
    must meet them too (on its family values; a missing value does not meet a constraint)."""
    from steeropt.evaluation.objectives.config import compare

    pick = FamilyPick(family="", status="no_deployable_setting")
    meets = [c for c in cands if all(c.values.get(n) is not None and compare(c.values[n], op, v) for n, op, v in others)]
    eligible = [c for c in meets if c.coherency >= tau]
    if not eligible:
        also = "".join(f" and {n} {op} {v:g}" for n, op, v in others)
        pick.reason = (f"no setting reaches coherency >= {tau:g}{also} on the selection prompts "
                       f"({len(cands)} candidates, {len(meets)} meet{also or ' no other constraint'}; best coherency "
                       f"{max((c.coherency for c in cands), default=float('nan')):.2f})")
        pick.closest = [c.brief() for c in sorted(cands, key=lambda c: (-c.coherency, -c.value))[:3]]
        return pick

    def robust_all(c):  # every constraint at its lower bound (an unknown interval is not robust)
        lows = [(c.intervals.get(n) or (None,))[0] for n, op, _ in others if op == ">="]
        return c.robust_for(tau) and all(lo is not None and lo >= v for lo, (_, op, v) in
                                         zip(lows, [o for o in others if o[1] == ">="]))

    robust = [c for c in eligible if robust_all(c)]
    pool = robust or eligible
    best = max(pool, key=lambda c: (c.value, c.coherency))
    floor = best.value_ci[0] if best.value_ci and best.value_ci[0] is not None else best.value
    # ties within the best's uncertainty; a setting that does not steer ties only if it is the best itself
    # (else wide intervals at few prompts would always hand the family to the unsteered model)
    ties = [c for c in pool if c.value >= floor - 1e-12 and (c.n_sites > 0 or c is best)]
    chosen = min(ties, key=lambda c: (c.n_sites, c.dose if c.dose is not None else float("inf"), c.alpha_sum, -c.value))
    pick.status, pick.chosen, pick.robust = "ok", chosen, bool(robust)
    pick.ties = [c.trial for c in ties]
    spot = [c for c in eligible if c.value >= share * best.value]
    ranges = {}
    for k in chosen.params:
        vals = [c.params[k] for c in spot if isinstance(c.params.get(k), (int, float))]
        if vals:
            ranges[k] = (float(min(vals)), float(max(vals)))
    pick.sweet_spot = {"share": share, "best": best.value, "n": len(spot), "trials": [c.trial for c in spot],
                       "ranges": ranges, "width": {k: r[1] - r[0] for k, r in ranges.items()}}
    if not robust:
        pick.reason = "constraints met by the point estimate only (no candidate's lower bounds reach τ)"
    return pick


def choose_fitted(curves: dict, space, x_param: str, *, maximize: str, coherency: str, floors: dict,
                  target: float, dose=None) -> FamilyPick:
    """Step 1 of the module docstring: the setting and the sweet spot read off one family's fitted curves."""
    from steeropt.report.dose import fitted_choice, sweet_spot

    p = FamilyPick(family="", status="no_deployable_setting", source="fit", curves=curves)
    p.sweet_spot = sweet_spot(curves, concept=maximize, target=target, floors=floors)
    p.fit = fitted_choice(curves, concept=maximize, floors=floors, dose=dose)
    if p.fit is None:
        if any(a not in curves for a in (maximize, *floors)):
            p.reason = p.sweet_spot.get("reason", "too few trials to fit the curves")
        else:
            p.reason = ("no strength keeps the fitted " + " and ".join(f"{a} >= {t:g}" for a, t in floors.items())
                        + f" ({'; '.join(f'max fitted {a} {curves[a].y.max():.2f}' for a in floors)})")
        return p
    x = p.fit["x"]
    fitted = p.fit["fitted"]
    vals = {a: v[0] for a, v in fitted.items()}
    ivs = {a: (v[1], v[2]) for a, v in fitted.items()}
    p.chosen = candidate(space, {x_param: x}, vals, ivs, maximize, coherency)
    p.status, p.robust = "ok", p.fit["robust"]
    if not p.robust:
        p.reason = "constraints met by the fitted curves only (their lower band stays below τ)"
    return p


def choose_reevaluated(record: dict, family: str, space, chosen: Candidate, *, maximize: str, coherency: str,
                       tau: float, others: tuple) -> tuple[Candidate, dict, bool] | None:
    """Step 2: the fresh prompts check the claim. The fitted choice stands when its fresh-prompt values do not
    refute it (no constraint interval wholly on the wrong side of τ); otherwise the best fresh-prompt
    concept among the family's other re-evaluated candidates that are not refuted. Re-choosing all over on
    3-9 fresh prompts would favour the near-unsteered candidates, whose intervals are narrowest.
    Returns (candidate with its fresh values, record entry, robust) or None (no entry for this family)."""
    from steeropt.evaluation.objectives.config import compare

    cons = [(coherency, ">=", tau), *others]

    def fresh(c):
        fam = (c.get("families") or {}).get(family)
        if not fam or fam["values"].get(maximize) is None or fam["values"].get(coherency) is None:
            return None
        return candidate(space, c["params"], fam["values"], fam.get("intervals") or {}, maximize, coherency,
                         trial=c.get("trial"))

    def refuted(c: Candidate) -> bool:
        return any((c.intervals.get(n) or (None, None))[1] is not None and not compare(c.intervals[n][1], op, v)
                   for n, op, v in cons)

    def robust(c: Candidate) -> bool:
        return all((c.intervals.get(n) or (None,))[0] is not None and compare(c.intervals[n][0], op, v)
                   for n, op, v in cons)

    entries = [(c, fresh(c)) for c in record.get("candidates", [])]
    entries = [(c, f) for c, f in entries if f is not None]
    own = next(((c, f) for c, f in entries if _same(c["params"], chosen.params)), None)
    if own is None:
        return None
    if not refuted(own[1]):
        return own[1], own[0], robust(own[1])
    alive = [(c, f) for c, f in entries if not refuted(f) and f.n_sites > 0]
    if not alive:
        return own[1], own[0], False  # refuted, and nothing else holds: the verdict will say so
    c, f = max(alive, key=lambda e: (e[1].value, e[1].coherency))
    return f, c, robust(f)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        abs(a[k] - b[k]) < 1e-6 if isinstance(a[k], (int, float)) and isinstance(b[k], (int, float)) else a[k] == b[k]
        for k in a)


def select(spec, trials, *, maximize: str, coherency: str, min_coherency: float, share: float,
           concept_target: float, families: list[str], record: dict | None = None, n_boot: int = 200) -> PickResult:
    """Steps 1-2 for every family (no model): the chosen setting per family, before the held-out check."""
    from steeropt.report.dose import strength_param, study_fits

    objective = spec.part("objective")
    space = spec.part("search_space")
    others = tuple((c.name, c.op, c.value) for c in objective.constraints if c.name not in (coherency, maximize))
    floors = {coherency: float(min_coherency), **{n: float(v) for n, op, v in others if op == ">="}}
    x_param = strength_param(space)
    x_label, fits, doses = study_fits(trials, space, families, [maximize, *floors], n_boot=n_boot)
    result = PickResult(spec.name, maximize, coherency, float(min_coherency), share, {},
                        constraints=[(coherency, ">=", float(min_coherency)), *others], concept_target=concept_target,
                        x_label=x_label)
    for fam in families:
        by_trials = choose(family_candidates(trials, fam, maximize, coherency, space), float(min_coherency), share, others)
        if x_param is not None:
            p = choose_fitted(fits[fam], space, x_param, maximize=maximize, coherency=coherency, floors=floors,
                              target=concept_target, dose=doses[fam])
            p.ties, p.closest = by_trials.ties, by_trials.closest
            if p.chosen is not None:  # the fitted strength may be one a trial ran: say which
                x = p.chosen.params[x_param]
                p.chosen.trial = next((t.number for t in trials if isinstance(t.params.get(x_param), (int, float))
                                       and abs(t.params[x_param] - x) < 1e-9), None)
        else:
            p = by_trials
            p.curves = fits[fam]
        p.family = fam
        # the re-evaluation raced the study's own choices: it decides only when this choice is among them (a pick
        # with another --maximize or τ than the study's keeps its fitted choice, with a note)
        raced = record and p.chosen is not None and any(
            fam in (c.get("families") or {}) and _same(c["params"], p.chosen.params) for c in record.get("candidates", []))
        again = choose_reevaluated(record, fam, space, p.chosen, maximize=maximize, coherency=coherency,
                                   tau=float(min_coherency), others=others) if raced else None
        if record and p.chosen is not None and not raced:
            p.reason = (p.reason + "; " if p.reason else "") + ("not re-evaluated: the study's re-evaluation raced "
                                                                "other settings (its own objective and τ)")
        if again is not None:
            p.chosen, p.reevaluated, p.robust = again[0], again[1], again[2]
            p.status, p.source, p.reason = "ok", p.source + "+reevaluation", ""
        result.families[fam] = p
    return result


def study_summary(spec, trials, record, out_dir: Path) -> list[Path]:
    """What `steeropt run` reports when a study ends (no model, no held-out run): the per-family fitted curves
    (dose_fits.png), the setting each family would get and its sweet spot (summary.json), and the
    re-evaluation's candidates with their fresh-prompt values (reevaluation.csv)."""
    import pandas as pd

    from steeropt.report.compare import coherency_name, concept_name

    objective = spec.part("objective")
    objs = list(objective.directions)
    maximize, coherency = concept_name(objs), coherency_name(objs)
    cons = [c for c in objective.constraints if c.name == coherency and c.op == ">="]
    res = select(spec, trials, maximize=maximize, coherency=coherency, min_coherency=cons[0].value if cons else 0.5,
                 share=0.9, concept_target=DEFAULT_CONCEPT_TARGET, families=list(spec.splits()), record=record)
    out_dir = Path(out_dir)
    files = [_plot(res, out_dir / "dose_fits.png"), out_dir / "summary.json"]
    summary = res.to_dict()
    for f in summary["families"].values():  # no held-out run here: pick does that
        for k in ("held_out", "unsteered_held_out", "held_out_counts", "verdict", "held_out_prompts"):
            f.pop(k, None)
    summary["reevaluation"] = None if not record else {
        k: record[k] for k in ("rounds", "spent_samples", "budget", "fresh_prompts_left", "notes", "unsteered")}
    files[1].write_text(json.dumps(summary, indent=1))
    if record:
        rows = [{"params": _fmt_params(c["params"]), "trial": c.get("trial"), "sources": " ".join(c["sources"]),
                 "scope": " ".join(c["scope"]), "rounds": c["rounds"], "samples": c.get("n"), "settled": c["settled"],
                 **{k: c["values"].get(k) for k in (maximize, coherency, *(n for n, _, _ in res.constraints), "kl")},
                 **{f"{k}.ci": _jsonable(c["intervals"].get(k)) for k in (maximize, coherency)}}
                for c in record["candidates"]]
        pd.DataFrame(rows).to_csv(out_dir / "reevaluation.csv", index=False)
        files.append(out_dir / "reevaluation.csv")
    return files


# ---- the whole pick ------------------------------------------------------------------------------------
def pick(ref, *, min_coherency: float | None = None, maximize: str | None = None, coherency: str | None = None,
         share: float = 0.9, held_out: bool = True, repeats: int = 1, lm=None, out: str | Path | None = None,
         gguf: bool = True, families: list[str] | None = None,
         concept_target: float = DEFAULT_CONCEPT_TARGET) -> PickResult:
    """Choose per family on the selection prompts, re-evaluate on held-out prompts, export a profile."""
    import optuna

    from steeropt.report.compare import coherency_name, concept_name
    from steeropt.report.reeval import RECORD_KEY
    from steeropt.specs import build
    from steeropt.runner.study import Study, trial_prompts

    spec = build("study", ref)
    objective = spec.part("objective")
    space = spec.part("search_space")
    objs = list(objective.directions)
    maximize = maximize or concept_name(objs)
    coherency = coherency or coherency_name(objs)
    if min_coherency is None:
        cons = [c for c in objective.constraints if c.name == coherency and c.op == ">="]
        min_coherency = cons[0].value if cons else 0.5
    if not 0 < share <= 1:
        raise SteeroptError(f"--share must be in (0, 1], got {share}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        st = optuna.load_study(study_name=spec.name, storage=spec.storage)
    except KeyError:
        raise SteeroptError(f"no study '{spec.name}' in {spec.storage}: run it first with 'steeropt run {ref}'") from None
    trials = [t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not trials:
        raise SteeroptError(f"study '{spec.name}' has no complete trial to pick from")
    known = set((trials[0].user_attrs.get("values") or {}))
    if maximize not in known:
        raise SteeroptError(f"cannot maximise '{maximize}': the trials record {', '.join(sorted(known))}")
    splits = spec.splits()
    used = trial_prompts(spec)
    names = families or list(splits)
    unknown = [f for f in names if f not in splits]
    if unknown:
        raise SteeroptError(f"unknown prompt famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; the study has {list(splits)}")
    # a re-evaluation made before the newest trial does not describe these trials
    record = st.user_attrs.get(RECORD_KEY)
    if record and record.get("trials") != len(trials):
        record = None
    result = select(spec, trials, maximize=maximize, coherency=coherency, min_coherency=float(min_coherency),
                    share=share, concept_target=concept_target, families=names, record=record)
    for fam, p in result.families.items():
        p.selection_prompts = [t for f, t in used if f == fam]
        p.held_out_prompts = list(splits[fam].held_out)
        if set(p.selection_prompts) & set(p.held_out_prompts):  # cannot happen with split_families; guard anyway
            raise SteeroptError(f"family {fam}: a prompt is in both the selection and the held-out split")
        if not p.selection_prompts:
            p.reason = "no selection prompt of this family was scored by the trials (raise budget.prompts_per_trial)"
    target_dir = Path(out) if out is not None else None
    if target_dir is not None:
        target_dir.mkdir(parents=True, exist_ok=True)
        result.files.append(_plot(result, target_dir / "dose_fits.png"))
    if not held_out and out is None:
        return result
    study = Study(spec, track=False, runs_dir=Path(out or "runs") / ".pick")
    study.setup(lm=lm)
    space = study.space  # calibrated: KL-unit strengths map to α here
    try:
        from steeropt.types import InterventionPlan

        for fam, p in result.families.items():
            if p.chosen is None:
                continue
            plan = space.materialize(p.chosen.params)
            p.sites = profile_sites(plan, study.vectors, study.lm)
            if held_out:
                _evaluate_held_out(study, p, plan, repeats)
                _verdict(p, result)
            elif p.status == "ok" and not p.sites:
                p.status, p.reason = "no_deployable_setting", "the chosen setting does not steer (α = 0)"
        for p in result.families.values():
            p.next_steps = next_steps(p, result, spec)
        if target_dir is not None:
            result.files[0] = _plot(result, target_dir / "dose_fits.png")  # now with the verdicts
            from steeropt.report.profiles import write_profile

            fams = {f: _profile_family(p, result) for f, p in result.families.items()}
            prof = write_profile(out, lm=study.lm, vectors=study.vectors, families=fams,
                                 decoding=spec.decoding.model_dump(),
                                 study={"name": spec.name, "spec": spec.source, "storage": _redact(spec.storage),
                                        "trials": len(trials), "seed": spec.seed,
                                        # the searched strengths: serve bounds a request's `steer` override to them
                                        "alpha_range": _alpha_range(space)},
                                 objective={"name": objective.name, "maximize": maximize, "coherency": coherency,
                                            "min_coherency": float(min_coherency), "share": share,
                                            "constraints": [list(c) for c in result.constraints],
                                            "concept_target": concept_target},
                                 gguf=gguf,
                                 # the router (report.router) is built on every family's selection prompts and
                                 # reports its accuracy on their held-out ones, whichever families were picked
                                 router_prompts={f: list(sp.selection) for f, sp in splits.items()},
                                 router_test_prompts={f: list(sp.held_out) for f, sp in splits.items()})
            result.profile = prof.path
            (target_dir / "pick.json").write_text(json.dumps(result.to_dict(), indent=1))
            result.files.append(target_dir / "pick.json")
    finally:
        study.close()
    return result


def _verdict(p: FamilyPick, res: PickResult) -> None:
    """Step 4: deployable only if the held-out concept beats the unsteered one (non-overlapping 95% intervals)
    and the held-out values meet every constraint."""
    from steeropt.evaluation.objectives.config import compare

    if p.status != "ok" or not p.held_out:
        return
    (v, ci), (u, uci) = p.held_out.get(res.maximize, (None, None)), p.unsteered_held_out.get(res.maximize, (None, None))
    beats = None if v is None or u is None or not ci or not uci else bool(ci[0] > uci[1])
    fails = [f"{n} {p.held_out.get(n, (None,))[0] if p.held_out.get(n, (None,))[0] is None else round(p.held_out[n][0], 2)}"
             f" not {op} {t:g}" for n, op, t in res.constraints
             if p.held_out.get(n, (None,))[0] is None or not compare(p.held_out[n][0], op, t)]
    p.verdict = {"beats_unsteered": beats, "meets_constraints": not fails, "failed_constraints": fails,
                 "versus_prompt": _versus_prompt(p, res)}
    if not p.sites:
        p.status, p.reason = "no_deployable_setting", "the chosen setting does not steer (α = 0)"
    elif not beats:
        p.status = "no_deployable_setting"
        p.reason = (f"held-out {res.maximize} {_fmt_ci(v, ci)} does not beat the unsteered model's {_fmt_ci(u, uci)} "
                    "with non-overlapping 95% intervals" + (f"; also {', '.join(fails)} on held-out" if fails else ""))
    elif fails:
        p.status = "no_deployable_setting"
        p.reason = "on the held-out prompts " + ", ".join(fails)


def next_steps(p: FamilyPick, res: PickResult, spec) -> list[str]:
    """What to try when a family has no deployable setting, from the pick's own evidence: which condition emptied
    the sweet spot, and the options that address it (each with the command)."""
    if p.status == "ok":
        return []
    name, space = spec.source, spec.part("search_space")
    sites = list(space.sites)
    layer = sites[0].layer if sites else None
    high = max((s.alpha.high for s in sites if getattr(s, "alpha", None) is not None), default=None)
    why = (p.sweet_spot or {}).get("reason", "") + " " + (p.reason or "")
    steps = []
    if "never reaches" in why and high is not None:
        steps.append(f"the concept stays below its target inside the searched range: widen it (search_space "
                     f"alpha.high above {high:g}) after looking at `steeropt sweep --concept {spec.concept.name} "
                     f"--layer {layer} --alphas 0,{high:g},{1.5 * high:g},{2 * high:g}`")
    if "the fitted" in why and "is at most" in why:
        axis = why.split("the fitted ")[-1].split(" is at most")[0]
        steps.append(f"{axis} falls before the concept arrives (takeover): try another layer from the sweep "
                     f"(`steeropt sweep --concept {spec.concept.name} --layer {max(0, (layer or 0) - 4)},"
                     f"{(layer or 0) + 4}`), or the clamp or head_add controller (`steeropt new study ... "
                     "--controller clamp`)")
        steps.append(f"a lower τ admits more of the curve at a cost in {axis}: `steeropt pick {name} --min-coherency "
                     f"{max(0.0, res.min_coherency - 0.1):.1f}` shows what it buys")
    if p.verdict and p.verdict.get("beats_unsteered") is False:
        steps.append(f"the held-out difference from the unsteered model is not clear: `steeropt plan {name}` gives the "
                     "prompts per family that would separate it")
    if not steps:
        steps.append(f"`steeropt plan {name}` sizes the budget; `steeropt sweep --concept {spec.concept.name}` shows "
                     "where the concept starts and the text breaks")
    return steps


def _versus_prompt(p: FamilyPick, res: PickResult) -> str | None:
    """Steered against the prompted arm on held-out, in words: "prompt wins", "steering wins", "no clear
    difference" on the maximised value, with whether the prompted answers meet the constraints too."""
    from steeropt.evaluation.objectives.config import compare

    prompted, diff = p.arms_held_out.get("prompted"), (p.arm_differences.get("prompted") or {}).get(res.maximize)
    if not prompted or not diff:
        return None
    ok = all(prompted.get(n, (None,))[0] is not None and compare(prompted[n][0], op, t) for n, op, t in res.constraints)
    d, (lo, hi) = diff["diff"], diff["ci"]
    word = ("steering wins" if diff["clear"] and d > 0 else "prompt wins" if diff["clear"] and d < 0
            else "no clear difference")
    return (f"{word}: steered − prompted {res.maximize} {d:+.2f} [{lo:+.2f}, {hi:+.2f}] over {diff['n']} held-out "
            f"prompts; the prompted answers {'meet' if ok else 'miss'} the constraints")


def _plot(result: PickResult, path: Path) -> Path:
    from steeropt.report.dose import plot_family_curves

    floors = {n: v for n, op, v in result.constraints if op == ">="}
    chosen = {f: next(iter(p.chosen.params.values())) for f, p in result.families.items()
              if p.chosen is not None and len(p.chosen.params) == 1 and p.source.startswith("fit")}
    plot_family_curves({f: p.curves for f, p in result.families.items()}, path, xlabel=result.x_label, floors=floors,
                       target=result.concept_target, spots={f: p.sweet_spot for f, p in result.families.items()},
                       chosen=chosen, title=f"{result.study}: dose-response per family (selection prompts)")
    return path


def _alpha_range(space) -> list[float] | None:
    """[lowest, highest] normalised α the space searched at its sites (None for kernels and KL units alone)."""
    rs = [(s.alpha.low, s.alpha.high) for s in space.sites if getattr(s, "alpha", None) is not None
          and s.alpha.unit == "alpha"]
    return [float(min(r[0] for r in rs)), float(max(r[1] for r in rs))] if rs else None


def profile_sites(plan, vectors, lm) -> list[dict]:
    """The sites of a chosen plan as written to a profile, with raw α measured on `lm` (a vector used at
    another layer takes that layer's scale: the llama.cpp export writes raw α · v). Zero-strength sites
    are left out, except clamp (α = 0 erases the direction); inactive sites (outside a tent) too."""
    from steeropt.engine.interventions import raw_alphas

    raws = raw_alphas(plan, vectors, lm)
    return [{"layer": s.layer, "controller": s.controller, "vector": s.vector,
             "heads": list(s.heads) if s.heads else None, "positions": s.positions,
             "alpha": float(a), "raw_alpha": float(r)}
            for i, (s, a, r) in enumerate(zip(plan.sites, plan.alphas, raws)) if plan.changes_model(i)]


def _redact(url: str) -> str:
    from steeropt.runner.study import _redact as r

    return r(url)


def _evaluate_held_out(study, p: FamilyPick, plan, repeats: int) -> None:
    """The chosen setting, the unsteered model and the prompted arm (runner.arms; prompted + steered where the spec
    asks) on the family's held-out prompts, scored by the study's stack; paired steered − arm differences."""
    from dataclasses import replace

    from steeropt.report.arms import paired_arm_difference
    from steeropt.runner.arms import arm_plans

    prompts = [(p.family, t) for t in p.held_out_prompts]
    arms = arm_plans(study.spec)
    names, plans = ["steered", *arms], [plan, *arms.values()]
    if "prompted" in arms and study.spec.prompted.steered:
        names.append("prompted_steered")
        plans.append(replace(plan, instruction=arms["prompted"].instruction))
    dec = study.decoding
    n = max(1, repeats) if dec.temperature > 0 else 1  # greedy: repeats would be identical copies
    samples = []
    for r in range(n):
        samples += study.generator.run(prompts, plans, dec, seed=study.spec.seed + 1000 + r)
    base = [s for s in samples if s.candidate == 1]
    res = study.stack.evaluate(samples, plans, baseline=base, vectors=study.vectors)
    by_name = dict(zip(names, res))
    for name, r in by_name.items():
        target = {"steered": p.held_out, "unsteered": p.unsteered_held_out}.get(name)
        if target is None:
            target = p.arms_held_out.setdefault(name, {})
        for k, v in r.values.items():
            if isinstance(v, (int, float)) or v is None:
                iv = r.intervals.get(k)
                target[k] = (v, tuple(iv) if iv else None)
    steered = by_name["steered"]
    p.held_out_counts = {"samples": steered.counts["samples"], "filtered": steered.counts["filtered"],
                         "missing": steered.counts["missing"], "prompts": len(prompts), "repeats": n,
                         "failed": steered.failed, "reason": steered.reason}
    axes = list(dict.fromkeys([*(n for n, _ in study.stack.objectives), *(n for n, _, _ in study.stack.constraints),
                               "hm"]))
    for name in names[1:]:  # records are plan-major in prompt order for every plan: pairs line up
        other = by_name[name].samples
        p.arm_differences[name] = {a: paired_arm_difference([sample_value(x, a) for x in steered.samples],
                                                            [sample_value(x, a) for x in other]) for a in axes}
    p.held_out_texts = [{"prompt": x["prompt"], **{name: by_name[name].samples[i]["text"] for name in names}}
                        for i, x in enumerate(steered.samples)]


def _profile_family(p: FamilyPick, res: PickResult) -> dict:
    shown = res._shown()

    def score(d):
        return {k: {"value": d[k][0], "ci": list(d[k][1]) if d[k][1] else None} for k in d if k in shown}

    c = p.chosen
    held = {}
    if p.held_out:
        held = {"held_out": {"prompts": len(p.held_out_prompts), **_jsonable(p.held_out_counts), **score(p.held_out)},
                "unsteered_held_out": score(p.unsteered_held_out), "verdict": _jsonable(p.verdict)}
    if p.status != "ok":  # nothing to apply; what was tried and why it was refused stays on record
        tried = None if c is None else {"params": c.params, "trial": c.trial, "sites": p.sites}
        return {"status": p.status, "reason": p.reason, "closest": _jsonable(p.closest), "tried": tried,
                "sweet_spot": _jsonable(p.sweet_spot), **held}
    sel = {"prompts": len(p.selection_prompts), res.maximize: {"value": c.value, "ci": _jsonable(c.value_ci)},
           res.coherency: {"value": c.coherency, "ci": _jsonable(c.coherency_ci)}, "dose_kl": c.dose}
    out = {"status": "ok", "trial": c.trial, "params": c.params, "sites": p.sites, "source": p.source,
           "robust": p.robust, "note": p.reason or None, "ties": p.ties, "selection": sel,
           "reevaluated": _jsonable(p.reevaluated), "sweet_spot": _jsonable(p.sweet_spot), **held}
    return out


# `steeropt.report.pick` is both this module and the function (`steeropt.report.pick(...)`): make the module callable.
import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return pick(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
