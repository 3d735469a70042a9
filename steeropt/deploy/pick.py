"""`steeropt pick` end to end: the setting per family (report.pick's rules), checked on held-out prompts beside the
unsteered and prompted arms, and exported as a steering profile (deploy.profiles).

    >>> from steeropt import pick
    >>> res = pick("studies/quickstart.yaml", out="profiles/quickstart")          # doctest: +SKIP
    >>> res.families["advice"].status                   # "ok" | "no_deployable_setting"
    >>> res.families["advice"].held_out["concept"]      # (value, (ci_low, ci_high)) on held-out prompts
    >>> res.to_dict()                                   # what `steeropt pick --json` prints

Steps 1-2 and 4 of the choice are report.pick's (module docstring there). Step 3 is here: the chosen setting, the
unsteered model and the prompted arm (runner.harness.arm_plans; prompted + steered where the spec asks) are
generated on the family's held-out prompts, never used for the choice, and scored by the study's objective stack;
those are the reported numbers (AxBench: select on one half, report on the other).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from steeropt.deploy.profiles import write_profile
from steeropt.engine.interventions import raw_alphas
from steeropt.errors import SteeroptError
from steeropt.evaluation.objectives.axes import coherency_name, concept_name
from steeropt.evaluation.objectives.stack import sample_value
from steeropt.records import ReevalRecord, TrialRecord, jsonable
from steeropt.redact import redact
from steeropt.report.arms import paired_arm_difference
from steeropt.report.pick import next_steps, plot_fits, select, verdict
from steeropt.report.pick_result import DEFAULT_CONCEPT_TARGET, FamilyPick, PickResult, reevaluated_dict
from steeropt.runner.harness import Harness
from steeropt.specs import build
from steeropt.specs.prompts import trial_prompts


def pick(ref, *, min_coherency: float | None = None, maximize: str | None = None, coherency: str | None = None,
         share: float = 0.9, held_out: bool = True, repeats: int = 1, lm=None, out: str | Path | None = None,
         gguf: bool = True, families: list[str] | None = None,
         concept_target: float = DEFAULT_CONCEPT_TARGET) -> PickResult:
    """Choose per family on the selection prompts, re-evaluate on held-out prompts, export a profile."""
    import optuna  # heavy optional dependency (imported when a pick runs)

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
    known = set(TrialRecord.from_trial(trials[0]).values or {})
    if maximize not in known:
        raise SteeroptError(f"cannot maximise '{maximize}': the trials record {', '.join(sorted(known))}")
    splits = spec.splits()
    used = trial_prompts(spec)
    names = families or list(splits)
    unknown = [f for f in names if f not in splits]
    if unknown:
        raise SteeroptError(f"unknown prompt famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; the study has {list(splits)}")
    record = ReevalRecord.stored(st, len(trials))  # one made before the newest trial does not describe them
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
        result.files.append(plot_fits(result, target_dir / "dose_fits.png"))
    if not held_out and out is None:
        return result
    harness = Harness(spec).load(lm)
    space = harness.space  # calibrated: KL-unit strengths map to α here
    try:
        for fam, p in result.families.items():
            if p.chosen is None:
                continue
            plan = space.materialize(p.chosen.params)
            p.sites = profile_sites(plan, harness.vectors, harness.lm)
            if held_out:
                held_out_run(harness, p, plan, repeats)
                verdict(p, result)
            elif p.status == "ok" and not p.sites:
                p.status, p.reason = "no_deployable_setting", "the chosen setting does not steer (α = 0)"
        for p in result.families.values():
            p.next_steps = next_steps(p, result, spec)
        if target_dir is not None:
            result.files[0] = plot_fits(result, target_dir / "dose_fits.png")  # now with the verdicts
            fams = {f: profile_family(p, result) for f, p in result.families.items()}
            prof = write_profile(out, lm=harness.lm, vectors=harness.vectors, families=fams,
                                 decoding=spec.decoding.model_dump(),
                                 study={"name": spec.name, "spec": spec.source, "storage": redact(spec.storage),
                                        "trials": len(trials), "seed": spec.seed,
                                        # the searched strengths: serve bounds a request's `steer` override to them
                                        "alpha_range": _alpha_range(space)},
                                 objective={"name": objective.name, "maximize": maximize, "coherency": coherency,
                                            "min_coherency": float(min_coherency), "share": share,
                                            "constraints": [list(c) for c in result.constraints],
                                            "concept_target": concept_target},
                                 gguf=gguf,
                                 # the router (deploy.router) is built on every family's selection prompts and
                                 # reports its accuracy on their held-out ones, whichever families were picked
                                 router_prompts={f: list(sp.selection) for f, sp in splits.items()},
                                 router_test_prompts={f: list(sp.held_out) for f, sp in splits.items()})
            result.profile = prof.path
            (target_dir / "pick.json").write_text(json.dumps(result.to_dict(), indent=1))
            result.files.append(target_dir / "pick.json")
    finally:
        harness.close()
    return result


def _alpha_range(space) -> list[float] | None:
    """[lowest, highest] normalised α the space searched at its sites (None for kernels and KL units alone)."""
    rs = [(s.alpha.low, s.alpha.high) for s in space.sites if getattr(s, "alpha", None) is not None
          and s.alpha.unit == "alpha"]
    return [float(min(r[0] for r in rs)), float(max(r[1] for r in rs))] if rs else None


def profile_sites(plan, vectors, lm) -> list[dict]:
    """The sites of a chosen plan as written to a profile, with raw α measured on `lm` (a vector used at
    another layer takes that layer's scale: the llama.cpp export writes raw α · v). Zero-strength sites
    are left out, except clamp (α = 0 erases the direction); inactive sites (outside a tent) too."""
    raws = raw_alphas(plan, vectors, lm)
    return [{"layer": s.layer, "controller": s.controller, "vector": s.vector,
             "heads": list(s.heads) if s.heads else None, "positions": s.positions,
             "alpha": float(a), "raw_alpha": float(r)}
            for i, (s, a, r) in enumerate(zip(plan.sites, plan.alphas, raws)) if plan.changes_model(i)]


def held_out_run(harness: Harness, p: FamilyPick, plan, repeats: int) -> None:
    """The chosen setting, the unsteered model and the prompted arm (runner.arms; prompted + steered where the spec
    asks) on the family's held-out prompts, scored by the study's stack; paired steered − arm differences."""
    prompts = [(p.family, t) for t in p.held_out_prompts]
    arms = harness.arms()
    if "prompted" in arms and harness.spec.prompted.steered:
        arms["prompted_steered"] = replace(plan, instruction=arms["prompted"].instruction)
    names = ["steered", *arms]
    n = max(1, repeats) if harness.decoding.temperature > 0 else 1  # greedy: repeats would be identical copies
    scored = harness.score(prompts, [plan], arms, seed=harness.spec.seed + 1000, repeats=n)
    by_name = {"steered": scored.results[0], **scored.arms}
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
    axes = list(dict.fromkeys([*harness.value_names, "hm"]))
    for name in names[1:]:  # records are plan-major in prompt order for every plan: pairs line up
        other = by_name[name].samples
        p.arm_differences[name] = {a: paired_arm_difference([sample_value(x, a) for x in steered.samples],
                                                            [sample_value(x, a) for x in other]) for a in axes}
    p.held_out_texts = [{"prompt": x["prompt"], **{name: by_name[name].samples[i]["text"] for name in names}}
                        for i, x in enumerate(steered.samples)]


def profile_family(p: FamilyPick, res: PickResult) -> dict:
    shown = res.shown()

    def score(d):
        return {k: {"value": d[k][0], "ci": list(d[k][1]) if d[k][1] else None} for k in d if k in shown}

    c = p.chosen
    held = {}
    if p.held_out:
        held = {"held_out": {"prompts": len(p.held_out_prompts), **jsonable(p.held_out_counts), **score(p.held_out)},
                "unsteered_held_out": score(p.unsteered_held_out), "verdict": jsonable(p.verdict)}
    if p.status != "ok":  # nothing to apply; what was tried and why it was refused stays on record
        tried = None if c is None else {"params": c.params, "trial": c.trial, "sites": p.sites}
        return {"status": p.status, "reason": p.reason, "closest": jsonable(p.closest), "tried": tried,
                "sweet_spot": jsonable(p.sweet_spot), **held}
    sel = {"prompts": len(p.selection_prompts), res.maximize: {"value": c.value, "ci": jsonable(c.value_ci)},
           res.coherency: {"value": c.coherency, "ci": jsonable(c.coherency_ci)}, "dose_kl": c.dose}
    out = {"status": "ok", "trial": c.trial, "params": c.params, "sites": p.sites, "source": p.source,
           "robust": p.robust, "note": p.reason or None, "ties": p.ties, "selection": sel,
           "reevaluated": reevaluated_dict(p.reevaluated), "sweet_spot": jsonable(p.sweet_spot), **held}
    return out
