"""Pick a deployable setting per prompt family, confirm it on held-out prompts, export a profile.

    >>> from steeropt.report.pick import pick
    >>> res = pick("studies/quickstart.yaml", min_coherency=0.4, out="profiles/quickstart")   # doctest: +SKIP
    >>> res.families["advice"].held_out["concept"]      # (value, (ci_low, ci_high)) on held-out prompts

How a family's setting is chosen (on the *selection* prompts only, from the per-family values every trial
recorded in user_attrs["families"]):
1. eligible: trials whose family coherency meets the constraint (>= τ). Among them, the *robust* ones
   (the coherency interval's lower bound >= τ) are preferred whenever there is one: a lucky point
   estimate does not win over a setting that meets the constraint with its uncertainty. The intervals are
   the objective stack's (evaluation.objectives.aggregate.mean_ci: Wilson for 0/1 scores, so 4 of 4
   coherent samples give (0.51, 1), not (1, 1)); a value recorded without an interval counts as
   having lower bound 0 (robust only for τ <= 0).
2. best: the highest value of the maximised objective among the preferred set.
3. ties: every preferred trial whose value is within the best's uncertainty (>= the best's lower bound)
   ties with it; the smallest intervention among them wins (fewest sites that steer — active with α != 0,
   or any active clamp site, since clamp at α = 0 ablates — then the lowest dose:
   mean KL to the unsteered model, then the sum of |α|).
4. sweet spot: the α range of the eligible trials whose value is >= `share` x best (default 90%).
5. no eligible trial: status "no_deployable_setting" with the closest candidates (highest coherency).
Then the chosen plan and the unsteered model are generated on the family's *held-out* prompts (never used
for the choice) — all of them, `repeats` times each when decoding samples — and scored with the study's
objective stack; those are the reported numbers (AxBench: select on one half, report on the other).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from steeropt.errors import SteeroptError


@dataclass
class Candidate:
    trial: int
    params: dict
    value: float
    value_ci: tuple | None
    coherency: float
    coherency_ci: tuple | None
    dose: float | None
    n_sites: int
    alpha_sum: float
    values: dict = field(default_factory=dict)  # every per-family value of the trial (for other constraints)

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
    robust: bool = False  # the constraint holds at the coherency interval's lower bound
    ties: list = field(default_factory=list)  # trials tied with the best (within its uncertainty)
    sweet_spot: dict = field(default_factory=dict)
    closest: list = field(default_factory=list)
    reason: str = ""
    selection_prompts: list = field(default_factory=list)
    held_out_prompts: list = field(default_factory=list)
    held_out: dict = field(default_factory=dict)  # value name -> (value, (lo, hi))
    unsteered_held_out: dict = field(default_factory=dict)
    held_out_counts: dict = field(default_factory=dict)
    sites: list = field(default_factory=list)


@dataclass
class PickResult:
    study: str
    maximize: str
    coherency: str
    min_coherency: float
    share: float
    families: dict
    profile: Path | None = None

    def table_rows(self) -> list[dict]:
        rows = []
        for f, p in self.families.items():
            c = p.chosen
            row = {"family": f, "status": p.status, "trial": c.trial if c else None,
                   "setting": _fmt_params(c.params) if c else "—", "robust": p.robust if c else None,
                   "selection": f"{c.value:.2f} / coh {c.coherency:.2f}" if c else "—",
                   "held_out": "—", "unsteered": "—", "sweet_spot": _fmt_spot(p.sweet_spot)}
            if p.held_out:
                v, vc = p.held_out[self.maximize], p.held_out[self.coherency]
                row["held_out"] = f"{_fmt_ci(*v)} / coh {_fmt_ci(*vc)}"
            if p.unsteered_held_out:
                v, vc = p.unsteered_held_out[self.maximize], p.unsteered_held_out[self.coherency]
                row["unsteered"] = f"{_fmt_ci(*v)} / coh {_fmt_ci(*vc)}"
            if p.status != "ok":
                row["setting"] = "no deployable setting: " + p.reason
            rows.append(row)
        return rows


def _fmt_ci(v, ci) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci and ci[0] is not None else "")


def _fmt_params(p: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


def _fmt_spot(s: dict) -> str:
    if not s or not s.get("ranges"):
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
        plan = space.materialize(t.params)
        on = plan.steered_sites()  # active sites that act: a clamp at α=0 ablates, so it counts
        out.append(Candidate(t.number, dict(t.params), float(v), _tuple(ivs.get(maximize)), float(c),
                             _tuple(ivs.get(coherency)), vals.get("kl"),
                             len(on), sum(abs(float(plan.alphas[i])) for i in on), dict(vals)))
    return out


def _tuple(x):
    return tuple(float(v) for v in x[:2]) if x else None


def choose(cands: list[Candidate], tau: float, share: float = 0.9, others: tuple = ()) -> FamilyPick:
    """Steps 1-5 of the module docstring, for one family's candidates.

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
    robust = [c for c in eligible if c.robust_for(tau)]
    pool = robust or eligible
    best = max(pool, key=lambda c: (c.value, c.coherency))
    floor = best.value_ci[0] if best.value_ci and best.value_ci[0] is not None else best.value
    ties = [c for c in pool if c.value >= floor - 1e-12]
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
        pick.reason = "constraint met by the point estimate only (no candidate's coherency lower bound reaches τ)"
    return pick


# ---- the whole pick ------------------------------------------------------------------------------------
def pick(ref, *, min_coherency: float | None = None, maximize: str | None = None, coherency: str | None = None,
         share: float = 0.9, held_out: bool = True, repeats: int = 1, lm=None, out: str | Path | None = None,
         gguf: bool = True, families: list[str] | None = None) -> PickResult:
    """Choose per family on the selection prompts, re-evaluate on held-out prompts, export a profile."""
    import optuna

    from steeropt.report.compare import coherency_name, concept_name
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
    # the objective's other constraints (e.g. relevance >= τ) hold for a deployable setting too
    others = tuple((c.name, c.op, c.value) for c in objective.constraints if c.name not in (coherency, maximize))
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
    result = PickResult(spec.name, maximize, coherency, float(min_coherency), share, {})
    for fam in names:
        p = choose(family_candidates(trials, fam, maximize, coherency, space), float(min_coherency), share, others)
        p.family = fam
        p.selection_prompts = [t for f, t in used if f == fam]
        p.held_out_prompts = list(splits[fam].held_out)
        if set(p.selection_prompts) & set(p.held_out_prompts):  # cannot happen with split_families; guard anyway
            raise SteeroptError(f"family {fam}: a prompt is in both the selection and the held-out split")
        if not p.selection_prompts:
            p.reason = "no selection prompt of this family was scored by the trials (raise budget.prompts_per_trial)"
        result.families[fam] = p
    if not held_out and out is None:
        return result
    study = Study(spec, track=False, runs_dir=Path(out or "runs") / ".pick")
    study.setup(lm=lm)
    try:
        from steeropt.types import InterventionPlan

        for fam, p in result.families.items():
            if p.status != "ok":
                continue
            plan = space.materialize(p.chosen.params)
            p.sites = profile_sites(plan, study.vectors, study.lm)
            if held_out:
                _evaluate_held_out(study, p, plan, InterventionPlan([], []), repeats)
        if out is not None:
            from steeropt.report.profiles import write_profile

            fams = {f: _profile_family(p, result) for f, p in result.families.items()}
            prof = write_profile(out, lm=study.lm, vectors=study.vectors, families=fams,
                                 decoding=spec.decoding.model_dump(),
                                 study={"name": spec.name, "spec": spec.source, "storage": _redact(spec.storage),
                                        "trials": len(trials), "seed": spec.seed},
                                 objective={"name": objective.name, "maximize": maximize, "coherency": coherency,
                                            "min_coherency": float(min_coherency), "share": share},
                                 gguf=gguf)
            result.profile = prof.path
    finally:
        study.close()
    return result


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


def _evaluate_held_out(study, p: FamilyPick, plan, base_plan, repeats: int) -> None:
    prompts = [(p.family, t) for t in p.held_out_prompts]
    dec = study.decoding
    n = max(1, repeats) if dec.temperature > 0 else 1  # greedy: repeats would be identical copies
    samples = []
    for r in range(n):
        samples += study.generator.run(prompts, [plan, base_plan], dec, seed=study.spec.seed + 1000 + r)
    base = [s for s in samples if s.candidate == 1]
    res = study.stack.evaluate(samples, [plan, base_plan], baseline=base, vectors=study.vectors)
    for target, r in ((p.held_out, res[0]), (p.unsteered_held_out, res[1])):
        for k, v in r.values.items():
            if isinstance(v, (int, float)) or v is None:
                iv = r.intervals.get(k)
                target[k] = (v, tuple(iv) if iv else None)
    p.held_out_counts = {"samples": res[0].counts["samples"], "filtered": res[0].counts["filtered"],
                         "missing": res[0].counts["missing"], "prompts": len(prompts), "repeats": n,
                         "failed": res[0].failed, "reason": res[0].reason}


def _profile_family(p: FamilyPick, res: PickResult) -> dict:
    def score(d):
        return {k: {"value": d[k][0], "ci": list(d[k][1]) if d[k][1] else None}
                for k in (res.maximize, res.coherency, "hm", "kl") if k in d}

    if p.status != "ok":
        return {"status": p.status, "reason": p.reason, "closest": p.closest}
    c = p.chosen
    out = {"status": "ok", "trial": c.trial, "params": c.params, "sites": p.sites,
           "robust": p.robust, "note": p.reason or None, "ties": p.ties,
           "selection": {"prompts": len(p.selection_prompts), res.maximize: {"value": c.value, "ci": c.value_ci},
                         res.coherency: {"value": c.coherency, "ci": c.coherency_ci}, "dose_kl": c.dose},
           "sweet_spot": p.sweet_spot}
    if p.held_out:
        out["held_out"] = {"prompts": len(p.held_out_prompts), **p.held_out_counts, **score(p.held_out)}
        out["unsteered_held_out"] = score(p.unsteered_held_out)
        hv = p.held_out[res.coherency][0]
        out["held_out"]["meets_constraint"] = None if hv is None else bool(hv >= res.min_coherency)
    return out


# `steeropt.report.pick` is both this module and the function (`steeropt.report.pick(...)`): make the module callable.
import sys as _sys  # noqa: E402
import types as _types  # noqa: E402


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return pick(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
