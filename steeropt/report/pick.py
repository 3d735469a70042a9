"""Pick's rules (no model): the setting per prompt family from a study's trials and re-evaluation, the verdict on
held-out values, and what to try next. deploy.pick runs the held-out prompts and exports the profile.

    >>> res = select(spec, trials, maximize="concept", coherency="coherency", min_coherency=0.6, share=0.9,
    ...              concept_target=0.5, families=["advice"], record=ReevalRecord.stored(optuna_study, len(trials)))
    >>> res.families["advice"].chosen.params, res.families["advice"].sweet_spot     # doctest: +SKIP

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
   candidates were evaluated again on *fresh* selection prompts no trial used (runner.reeval). The fresh
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
from pathlib import Path

import pandas as pd

from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.axes import coherency_name, concept_name
from steeropt.evaluation.objectives.config import compare
from steeropt.records import ReevalCandidate, ReevalRecord, TrialRecord, jsonable
from steeropt.report.dose import fitted_choice, plot_family_curves, strength_param, study_fits, sweet_spot
from steeropt.report.pick_result import (DEFAULT_CONCEPT_TARGET, Candidate, FamilyPick, PickResult, fmt_ci,  # noqa: F401
                                         fmt_params)


def family_candidates(trials, family: str, maximize: str, coherency: str, space) -> list[Candidate]:
    """One Candidate per complete trial with per-family values for `family` (Optuna FrozenTrials)."""
    out = []
    for t in trials:
        if t.state.name != "COMPLETE":
            continue
        fam = TrialRecord.from_trial(t).family(family)
        if not fam:
            continue
        vals, ivs = fam.values or {}, fam.intervals or {}
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


def choose_reevaluated(record: ReevalRecord, family: str, space, chosen: Candidate, *, maximize: str, coherency: str,
                       tau: float, others: tuple) -> tuple[Candidate, ReevalCandidate, bool] | None:
    """Step 2: the fresh prompts check the claim. The fitted choice stands when its fresh-prompt values do not
    refute it (no constraint interval wholly on the wrong side of τ); otherwise the best fresh-prompt
    concept among the family's other re-evaluated candidates that are not refuted. Re-choosing all over on
    3-9 fresh prompts would favour the near-unsteered candidates, whose intervals are narrowest.
    Returns (candidate with its fresh values, record entry, robust) or None (no entry for this family)."""
    cons = [(coherency, ">=", tau), *others]

    def fresh(c: ReevalCandidate):
        fam = c.families.get(family)
        if not fam or fam.values.get(maximize) is None or fam.values.get(coherency) is None:
            return None
        return candidate(space, c.params, fam.values, fam.intervals or {}, maximize, coherency, trial=c.trial)

    def refuted(c: Candidate) -> bool:
        return any((c.intervals.get(n) or (None, None))[1] is not None and not compare(c.intervals[n][1], op, v)
                   for n, op, v in cons)

    def robust(c: Candidate) -> bool:
        return all((c.intervals.get(n) or (None,))[0] is not None and compare(c.intervals[n][0], op, v)
                   for n, op, v in cons)

    entries = [(c, fresh(c)) for c in record.candidates]
    entries = [(c, f) for c, f in entries if f is not None]
    own = next(((c, f) for c, f in entries if _same(c.params, chosen.params)), None)
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
           concept_target: float, families: list[str], record: ReevalRecord | None = None,
           n_boot: int = 200) -> PickResult:
    """Steps 1-2 for every family (no model): the chosen setting per family, before the held-out check."""
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
            fam in c.families and _same(c.params, p.chosen.params) for c in record.candidates)
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


def default_selection(spec, trials, record: ReevalRecord | None) -> PickResult:
    """Steps 1-2 with the study's own objective: concept maximised, coherency at its constraint's τ (0.5 without
    one), share 0.9, every family: what `steeropt pick SPEC` chooses before its held-out run."""
    objective = spec.part("objective")
    objs = list(objective.directions)
    maximize, coherency = concept_name(objs), coherency_name(objs)
    cons = [c for c in objective.constraints if c.name == coherency and c.op == ">="]
    return select(spec, trials, maximize=maximize, coherency=coherency, min_coherency=cons[0].value if cons else 0.5,
                  share=0.9, concept_target=DEFAULT_CONCEPT_TARGET, families=list(spec.splits()), record=record)


def study_summary(spec, trials, record: ReevalRecord | None, out_dir: Path) -> list[Path]:
    """What `steeropt run` reports when a study ends (no model, no held-out run): the per-family fitted curves
    (dose_fits.png), the setting each family would get and its sweet spot (summary.json), and the
    re-evaluation's candidates with their fresh-prompt values (reevaluation.csv)."""
    res = default_selection(spec, trials, record)
    maximize, coherency = res.maximize, res.coherency
    out_dir = Path(out_dir)
    files = [plot_fits(res, out_dir / "dose_fits.png"), out_dir / "summary.json"]
    summary = res.to_dict()
    for f in summary["families"].values():  # no held-out run here: pick does that
        for k in ("held_out", "unsteered_held_out", "held_out_counts", "verdict", "held_out_prompts"):
            f.pop(k, None)
    summary["reevaluation"] = None if not record else {
        k: getattr(record, k) for k in ("rounds", "spent_samples", "budget", "fresh_prompts_left", "notes", "unsteered")}
    files[1].write_text(json.dumps(summary, indent=1))
    if record:
        rows = [{"params": fmt_params(c.params), "trial": c.trial, "sources": " ".join(c.sources),
                 "scope": " ".join(c.scope), "rounds": c.rounds, "samples": c.n, "settled": c.why,
                 **{k: c.values.get(k) for k in (maximize, coherency, *(n for n, _, _ in res.constraints), "kl")},
                 **{f"{k}.ci": jsonable(c.intervals.get(k)) for k in (maximize, coherency)}}
                for c in record.candidates]
        pd.DataFrame(rows).to_csv(out_dir / "reevaluation.csv", index=False)
        files.append(out_dir / "reevaluation.csv")
    return files


def verdict(p: FamilyPick, res: PickResult) -> None:
    """Step 4: deployable only if the held-out concept beats the unsteered one (non-overlapping 95% intervals)
    and the held-out values meet every constraint."""
    if p.status != "ok" or not p.held_out:
        return
    (v, ci), (u, uci) = p.held_out.get(res.maximize, (None, None)), p.unsteered_held_out.get(res.maximize, (None, None))
    beats = None if v is None or u is None or not ci or not uci else bool(ci[0] > uci[1])
    fails = [f"{n} {p.held_out.get(n, (None,))[0] if p.held_out.get(n, (None,))[0] is None else round(p.held_out[n][0], 2)}"
             f" not {op} {t:g}" for n, op, t in res.constraints
             if p.held_out.get(n, (None,))[0] is None or not compare(p.held_out[n][0], op, t)]
    p.verdict = {"beats_unsteered": beats, "meets_constraints": not fails, "failed_constraints": fails,
                 "versus_prompt": versus_prompt(p, res)}
    if not p.sites:
        p.status, p.reason = "no_deployable_setting", "the chosen setting does not steer (α = 0)"
    elif not beats:
        p.status = "no_deployable_setting"
        p.reason = (f"held-out {res.maximize} {fmt_ci(v, ci)} does not beat the unsteered model's {fmt_ci(u, uci)} "
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


def versus_prompt(p: FamilyPick, res: PickResult) -> str | None:
    """Steered against the prompted arm on held-out, in words: "prompt wins", "steering wins", "no clear
    difference" on the maximised value, with whether the prompted answers meet the constraints too."""
    prompted, diff = p.arms_held_out.get("prompted"), (p.arm_differences.get("prompted") or {}).get(res.maximize)
    if not prompted or not diff:
        return None
    ok = all(prompted.get(n, (None,))[0] is not None and compare(prompted[n][0], op, t) for n, op, t in res.constraints)
    d, (lo, hi) = diff["diff"], diff["ci"]
    word = ("steering wins" if diff["clear"] and d > 0 else "prompt wins" if diff["clear"] and d < 0
            else "no clear difference")
    return (f"{word}: steered − prompted {res.maximize} {d:+.2f} [{lo:+.2f}, {hi:+.2f}] over {diff['n']} held-out "
            f"prompts; the prompted answers {'meet' if ok else 'miss'} the constraints")


def plot_fits(result: PickResult, path: Path) -> Path:
    floors = {n: v for n, op, v in result.constraints if op == ">="}
    chosen = {f: next(iter(p.chosen.params.values())) for f, p in result.families.items()
              if p.chosen is not None and len(p.chosen.params) == 1 and p.source.startswith("fit")}
    plot_family_curves({f: p.curves for f, p in result.families.items()}, path, xlabel=result.x_label, floors=floors,
                       target=result.concept_target, spots={f: p.sweet_spot for f, p in result.families.items()},
                       chosen=chosen, title=f"{result.study}: dose-response per family (selection prompts)")
    return path


