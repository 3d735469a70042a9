"""The baselines beside the steered trials: the unsteered model and the prompted one, scored like a trial.

AxBench's finding is that asking for a concept in the prompt beats every steering method it tried, so a steering
setting means little until it stands beside "or just ask for it". Every study scores two arms on its trial prompts
with its own objective stack, once: `unsteered` (no sites) and `prompted` (no sites, the concept asked for after
the user's prompt, `prompted.instruction` of the study spec; runner.harness.arm_plans). `pick` scores them again
on each family's held-out prompts, with paired differences (report.arms).

    >>> arms = score_arms(study)                       # doctest: +SKIP
    >>> arms["prompted"]["values"]["concept"], arms["prompted"]["families"]["advice"]["values"]["concept"]
"""
from __future__ import annotations

import json

from steeropt.records import ARMS_KEY, jsonable
from steeropt.runner.records import prompt_scores
from steeropt.tracking.run_dir import arm_samples_file, arms_file


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
    opt_study, harness = study.optimizer.study, study.harness
    stored = opt_study.user_attrs.get(ARMS_KEY)
    by_name = harness.arms()
    want, plans = list(by_name), list(by_name.values())
    if stored and not force and sorted(stored) == sorted(want):
        return stored
    baseline = study.baseline_samples()
    samples = harness.generate(study.prompts, plans[1:]) if len(plans) > 1 else []
    for s in samples:
        s.candidate += 1
    results = harness.evaluate([*baseline, *samples], plans, baseline)
    names = harness.value_names
    arms = {name: summarise(res, study.prompts, names) for name, res in zip(want, results)}
    opt_study.set_user_attr(ARMS_KEY, arms)
    study.runs_dir.mkdir(parents=True, exist_ok=True)
    arms_file(study.runs_dir).write_text(json.dumps(arms, indent=1))
    for name, res in zip(want, results):
        arm_samples_file(study.runs_dir, name).write_text("".join(json.dumps(r, default=str) + "\n" for r in res.samples))
    if study.tracker is not None:
        study.tracker.log_study_metrics({f"{arm}.{k}": v for arm, a in arms.items() for k, v in a["values"].items()
                                         if k in names and isinstance(v, (int, float))}, step=0)
        study.tracker.log_files([arms_file(study.runs_dir)], "study")
    return arms
