"""What a study does after its trials, and what it reads back: the arms, the re-evaluation, the study's files and
timing, its results table and front. Functions of a set-up runner.study.Study (Optuna keeps such helpers beside
its Study the same way), so the loop in runner.study stays ask -> run -> tell -> log.

    >>> finish.after_trials(study)        # doctest: +SKIP   the unsteered and prompted arms, then the re-evaluation
    >>> finish.update_artifacts(study, final=True)   # trials.csv, front.*, dose_fits.png, summary.json, ...
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from steeropt.records import ReevalRecord
from steeropt.redact import scrub
from steeropt.report.analysis import pareto_front, write_study_artifacts
from steeropt.report.pareto import objective_reference as _reference, unit_scores
from steeropt.report.pick import study_summary
from steeropt.report.trials import trials_frame
from steeropt.runner import reeval
from steeropt.runner.arms import score_arms
from steeropt.timing import CLOCK
from steeropt.tracking.run_dir import timing_file


def after_trials(study, *, callback=None) -> None:
    """The unsteered and prompted arms on the trial prompts (once per study), then the re-evaluation when the spec
    budgets one and the trial budget is spent."""
    score_arms(study)
    if study.spec.budget.reevaluation is not None and study.ledger.count().done >= study.ledger.budget:
        reevaluate(study, callback=callback)


def stored_reevaluation(study) -> ReevalRecord | None:
    """The stored re-evaluation record, if it describes the study's current complete trials."""
    return ReevalRecord.stored(study.optimizer.study, study.ledger.count().done)


def reevaluate(study, *, callback=None, force: bool = False) -> ReevalRecord | None:
    """Re-evaluate on fresh selection prompts (runner.reeval), once per set of trials unless `force`."""
    study.setup()
    if study.spec.budget.reevaluation is None:
        return None
    if not force and stored_reevaluation(study) is not None:
        return stored_reevaluation(study)
    study.progress.phase = "re-evaluation"
    if callback is not None:
        callback(study.progress)
    record = reeval.reevaluate(study, callback=callback)
    if study.tracker is not None:
        study.tracker.log_study_metrics({"reeval.samples": record.spent_samples, "reeval.rounds": record.rounds,
                                         "reeval.candidates": len(record.candidates)}, step=record.trials)
    return record


def write_timing(study) -> Path:
    """runs/<study>/timing.json: this process's seconds per phase (steeropt.timing) and the judge requests the
    cheap tier's gates spared (a filtered sample is not judged)."""
    t = study.stack.totals
    info = {**CLOCK.snapshot(), "samples": t["samples"], "judge_requests": t["judge_requests"],
            "judge_requests_spared": t["spared_requests"], "rubrics": sorted(study.stack.rubric_scores),
            "judge": None if study.judge is None else study.judge.identity}
    path = timing_file(study.runs_dir)
    path.write_text(json.dumps(scrub(info), indent=1))
    return path


def results(study) -> pd.DataFrame:
    """One row per trial: number, state, params, objective values, counts, feasibility."""
    return trials_frame(study.optimizer.study, study.stack.objectives)


def front(study) -> pd.DataFrame:
    return pareto_front(study.results(), study.stack.objectives)


def complete_trials(study) -> list:
    return [t for t in study.optimizer.study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]


def objective_reference(study) -> list[float]:
    """Hypervolume reference per objective (report.pareto.objective_reference): the worst end of a bounded value,
    else derived from the complete trials' values."""
    return _reference(study.stack.objectives, unit=unit_scores(study.objective),
                      points=[t.values for t in complete_trials(study)])


def update_artifacts(study, final: bool = False) -> None:
    """Trials CSV, Pareto front (CSV, PNG, HTML) and hypervolume vs trials, logged to the parent run; at the end of
    a run also the per-family dose-response fits, the settings they give and the re-evaluation
    (report.pick.study_summary)."""
    df = study.results()
    if df.empty:
        return  # a study created but not started yet (e.g. `steeropt run SPEC --trials 0`)
    info = write_study_artifacts(df, study.stack.objectives, study.runs_dir, title=study.spec.name,
                                 reference=objective_reference(study), constraints=study.stack.constraints)
    if final:
        info["files"] += study_summary(study.spec, complete_trials(study), stored_reevaluation(study), study.runs_dir)
    study.progress.front_size, study.progress.hypervolume = info["front_size"], info["hypervolume"]
    if study.tracker is not None:
        study.tracker.log_files(info["files"], "study")
        study.tracker.log_study_metrics({"hypervolume": info["hypervolume"], "front_size": info["front_size"],
                                         "trials_done": len(df)}, step=len(df))
