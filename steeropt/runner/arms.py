"""The baselines beside the steered trials: the unsteered model and the prompted one, scored like a trial.

AxBench's finding is that asking for a concept in the prompt beats every steering method it tried, so a steering
setting means little until it stands beside "or just ask for it". Every study scores two arms on its trial prompts
with its own objective stack, once: `unsteered` (no sites) and `prompted` (no sites, the concept asked for after
the user's prompt, `prompted.instruction` of the study spec). `pick` scores them again on each family's held-out
prompts, with paired differences (report.arms).

    >>> arms = score_arms(study)                       # doctest: +SKIP
    >>> arms["prompted"]["values"]["concept"], arms["prompted"]["families"]["advice"]["values"]["concept"]
"""
from __future__ import annotations

import json

from steeropt.report.arms import ARMS_KEY
from steeropt.runner.records import jsonable, prompt_scores
from steeropt.types import InterventionPlan


def instruction(spec) -> str | None:
    """The prompted arm's instruction for this study's concept, or None when the study has no prompted arm."""
    if spec.prompted is None:
        return None
    c = spec.concept
    return spec.prompted.instruction.format(description=c.description or c.name, name=c.name)


def arm_plans(spec) -> dict[str, InterventionPlan]:
    """name -> plan: "unsteered", and "prompted" when the study has one."""
    plans = {"unsteered": InterventionPlan([], [])}
    text = instruction(spec)
    if text:
        plans["prompted"] = InterventionPlan([], [], instruction=text)
    return plans


def summarise(res, prompts: list[tuple[str, str]], names) -> dict:
    """A TrialResult as the study stores it: values, intervals, per-family values and the per-prompt scores."""
    fams = {f: {"values": d.get("values"), "intervals": d.get("intervals"), "n": (d.get("counts") or {}).get("samples")}
            for f, d in res.families.items()}
    out = {"values": res.values, "intervals": res.intervals, "counts": res.counts, "families": fams,
           "prompt_scores": prompt_scores(res.samples, prompts, names), "failed": res.failed, "reason": res.reason}
    return jsonable(out)


def score_arms(study, *, force: bool = False) -> dict:
    """Generate and score the arms on the study's trial prompts (once per study: the stored ones are reused).
    Writes runs/<study>/arms.json and the samples, and stores the summaries in the Optuna study."""
    opt_study = study.optimizer.study
    stored = opt_study.user_attrs.get(ARMS_KEY)
    by_name = arm_plans(study.spec)
    want, plans = list(by_name), list(by_name.values())
    if stored and not force and sorted(stored) == sorted(want):
        return stored
    baseline = study.baseline_samples()
    samples = study.generator.run(study.prompts, plans[1:], study.decoding, seed=study.spec.seed) if len(plans) > 1 else []
    for s in samples:
        s.candidate += 1
    results = study.stack.evaluate([*baseline, *samples], plans, baseline=baseline, vectors=study.vectors)
    names = [n for n, _ in study.stack.objectives] + [n for n, _, _ in study.stack.constraints]
    arms = {name: summarise(res, study.prompts, names) for name, res in zip(want, results)}
    opt_study.set_user_attr(ARMS_KEY, arms)
    study.runs_dir.mkdir(parents=True, exist_ok=True)
    (study.runs_dir / "arms.json").write_text(json.dumps(arms, indent=1))
    for name, res in zip(want, results):
        (study.runs_dir / f"arm_{name}.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in res.samples))
    if study.tracker is not None:
        study.tracker.log_study_metrics({f"{arm}.{k}": v for arm, a in arms.items() for k, v in a["values"].items()
                                         if k in names and isinstance(v, (int, float))}, step=0)
        study.tracker.log_files([study.runs_dir / "arms.json"], "study")
    return arms
