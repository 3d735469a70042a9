"""A tuning study: the loop of DESIGN's "flow of one trial", built on ask/tell.

    >>> study = Study.from_spec("studies/quickstart.yaml")      # doctest: +SKIP
    >>> df = study.run()                                        # one row per trial
    >>> study.front()                                           # the Pareto front as a DataFrame

`run` continues a study found in the storage (same name): finished trials are neither lost nor redone.
`steeropt worker` runs the same loop against shared storage; the trial budget is shared (runner.ledger),
stale trials of stopped workers are failed and re-queued by the storage (search.optimizers.base), and
each finished trial is logged to MLflow once (runner.tracking).
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.interventions import raw_alphas
from steeropt.errors import JudgeError, SteeroptError
from steeropt.runner.parts import (build_vectors, check_storage, make_study_judge, package_versions, redact,
                                   judge_card, resolved_yaml, run_params, run_tags, site_names, trial_prompts)
from steeropt.redact import scrub
from steeropt.runner.checks import JudgeWatch, check_runs_dir, check_sole_runner, register_secrets
from steeropt.runner.arms import score_arms
from steeropt.runner.records import prompt_scores
from steeropt.runner.tracking import samples_file
from steeropt.specs import StudySpec, build
from steeropt.timing import CLOCK, phase
from steeropt.types import InterventionPlan

__all__ = ["Study", "StudyProgress", "build_vectors", "check_storage", "package_versions", "trial_prompts",
           "trials_frame"]
_redact = redact  # older name, used by report.pick


@dataclass
class StudyProgress:
    """What the progress display shows; updated after every batch."""

    done: int = 0
    target: int = 0
    judge_calls: int = 0
    front_size: int = 0
    hypervolume: float = 0.0
    started: float = field(default_factory=time.time)
    phase: str = "trials"  # "trials", then "re-evaluation" (report.reeval) when the spec budgets one
    reeval_done: int = 0  # steered re-evaluation samples generated and scored
    reeval_target: int = 0  # the most the re-evaluation budget may spend
    last: dict = field(default_factory=dict)


class Study:
    """Runs one StudySpec. Heavy parts (model, judge, optimizer, tracker) are set up on first use."""

    def __init__(self, spec: StudySpec, *, track: bool = True, runs_dir: str | Path = "runs"):
        self.spec = spec
        self.space = spec.part("search_space")
        self.objective = spec.part("objective")
        self.judge_spec = spec.part("judge") if self.objective.judge else None
        register_secrets(spec, self.judge_spec)  # redaction masks them wherever they would leave the process
        self.judge_watch = JudgeWatch()  # stops the study when the judge answers nothing, trial after trial
        self.track = track
        self.runs_dir = Path(runs_dir) / spec.name
        self.progress = StudyProgress(target=spec.budget.trials)
        self._ready = False

    @classmethod
    def from_spec(cls, ref, **kw) -> "Study":
        from steeropt.specs import validate_study

        validate_study(ref)  # everything checked before anything is written
        return cls(build("study", ref), **kw)

    def setup(self, lm=None) -> "Study":
        if self._ready:
            return self
        with phase("setup"):
            return self._setup(lm)

    def _setup(self, lm) -> "Study":
        from steeropt.engine.models import load_model
        from steeropt.evaluation.objectives import ObjectiveStack
        from steeropt.evaluation.objectives.tier1 import ConceptInfo
        from steeropt.runner.ledger import Ledger
        from steeropt.search.optimizers import check_settings, make_optimizer

        spec = self.spec
        # before the model loads: a storage or run directory that cannot be used is one message, nothing written
        check_storage(spec.storage)
        check_runs_dir(self.runs_dir)
        self.lm = lm or load_model(spec.model)
        self.vectors = build_vectors(self.lm, spec)
        if self.space.kl_unit_params():  # strengths in nats of KL: measure (or read) the α ↔ KL map first
            from steeropt.search.dose_units import calibrate

            self.dose_maps = calibrate(self.lm, self.vectors, self.space)
        # Order matters: fail on an unreachable storage, a missing judge key or a refusing tracker before
        # writing anything (judge cache, tracking store, study storage).
        check_settings(spec.optimizer.name, spec.optimizer.settings)
        self.judge = make_study_judge(self.judge_spec, self.lm)
        self.stack = ObjectiveStack(self.objective, self.lm, self.judge, ConceptInfo.from_concept(spec.concept))
        self.tracker = None
        if self.track:
            from steeropt.runner.tracking import Tracker

            # the tracker before the study storage: one that refuses writes leaves the storage untouched
            self.tracker = Tracker(spec.tracking_uri, spec.experiment_name, spec.name, traces=spec.traces)
        self.optimizer = make_optimizer(
            spec.optimizer.name, space=self.space, objectives=self.stack.objectives,
            constraints=self.stack.constraints, storage=spec.storage, study_name=spec.name, seed=spec.seed,
            settings=spec.optimizer.settings)
        self.ledger = Ledger(self.optimizer, spec.budget.trials)
        self.progress.done = self.ledger.count().done
        self.generator = Generator(self.lm, self.vectors)
        self.decoding = Decoding(**spec.decoding.model_dump())
        self.prompts = trial_prompts(spec)
        self.baseline = None
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        if self.tracker is not None:  # the parent run last: a failure above leaves no RUNNING run behind
            card = judge_card(self)  # which scorer, and its agreement with held-out labels, travels with results
            self.tracker.start(run_params(self), run_tags(self), {"study.yaml": resolved_yaml(self),
                                                                  "judge_card.json": json.dumps(card, indent=1)})
        self._ready = True
        return self

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, n_trials: int | None = None, *, callback=None, worker: bool = False) -> pd.DataFrame:
        """Run until the study's budget is spent (or `n_trials` more trials from this process).

        Several processes may run the same study (`worker=True`, shared storage): the budget is exact (see
        runner.ledger). With heartbeats on (optimizer settings heartbeat_interval) a worker also fails and
        re-queues trials whose worker stopped, and waits for trials running elsewhere before deciding the
        study is done: one of them may yet fail as stale and come back.
        """
        self.setup()
        opt = self.optimizer
        if not worker:
            check_sole_runner(opt)  # a live runner's trials are not stale
            opt.recover_stale()  # sole runner: RUNNING trials left by a crash are re-queued
            self._sync_tracking()
        else:
            # workers starting together would share one random stream (same seed): each gets its own
            opt.diversify(zlib.crc32(opt.worker.encode()))
            self._sync_tracking(min_age_s=self._stale_after())  # a live worker logs its own trials
        heartbeat = opt.heartbeat_interval
        started = 0
        while not self._judge_budget_spent() and (n_trials is None or started < n_trials):
            if worker and heartbeat:
                for n in opt.recover_stale():  # each stale trial is failed (and logged) by one process
                    self._log(next(t for t in opt.study.get_trials(deepcopy=False) if t.number == n))
            count = self.ledger.count()
            self.progress.done = count.done
            left = self.ledger.budget - count.used
            if n_trials is not None:
                left = min(left, n_trials - started)
            if left <= 0:
                if worker and heartbeat and count.running and count.done < self.ledger.budget:
                    time.sleep(heartbeat)
                    continue
                break
            cands = opt.ask(min(self.spec.budget.batch_size, left))
            if not cands:
                break  # the optimizer is exhausted (e.g. a finished grid)
            cands = self.ledger.keep(cands)
            if not cands:
                continue
            started += len(cands)
            self.run_batch(cands)
            self.progress.done = self.ledger.count().done
            if callback is not None:
                callback(self.progress)
        if not worker:
            score_arms(self)  # the unsteered and prompted arms on the trial prompts, once per study
        if not worker and self.spec.budget.reevaluation is not None and self.ledger.count().done >= self.ledger.budget:
            self.reevaluate(callback=callback)
        self.update_artifacts(final=True)
        self.write_timing()
        return self.results()

    def write_timing(self) -> Path:
        """runs/<study>/timing.json: this process's seconds per phase (steeropt.timing) and the judge requests
        the cheap tier's gates spared (a filtered sample is not judged)."""
        t = self.stack.totals
        info = {**CLOCK.snapshot(), "samples": t["samples"], "judge_requests": t["judge_requests"],
                "judge_requests_spared": t["spared_requests"], "rubrics": sorted(self.stack.rubric_scores),
                "judge": None if self.judge is None else self.judge.identity}
        path = self.runs_dir / "timing.json"
        path.write_text(json.dumps(scrub(info), indent=1))
        return path

    def reevaluation(self) -> dict | None:
        """The stored re-evaluation record (report.reeval), if it describes the current complete trials."""
        from steeropt.report.reeval import RECORD_KEY

        rec = self.optimizer.study.user_attrs.get(RECORD_KEY)
        return rec if rec and rec.get("trials") == self.ledger.count().done else None

    def reevaluate(self, *, callback=None, force: bool = False) -> dict | None:
        """Re-evaluate the front and the per-family choices on fresh selection prompts (budget.reevaluation),
        once per set of trials: a stored record for the same trials is reused unless `force`."""
        from steeropt.report.reeval import reevaluate

        self.setup()
        if self.spec.budget.reevaluation is None:
            return None
        if not force and self.reevaluation() is not None:
            return self.reevaluation()
        self.progress.phase = "re-evaluation"
        if callback is not None:
            callback(self.progress)
        record = reevaluate(self, callback=callback)
        if self.tracker is not None:
            self.tracker.log_study_metrics({"reeval.samples": record["spent_samples"], "reeval.rounds": record["rounds"],
                                            "reeval.candidates": len(record["candidates"])}, step=record["trials"])
        return record

    def _stale_after(self) -> float:
        """Seconds after which a finished trial missing in MLflow is surely not being logged by a live worker."""
        return max(120.0, 3.0 * (self.optimizer.grace_period or 120.0))

    def _judge_budget_spent(self) -> bool:
        cap = self.spec.budget.max_judge_calls
        return cap is not None and self.judge is not None and self.judge.stats.calls >= cap

    def baseline_samples(self):
        if self.baseline is None:
            self.baseline = self.generator.run(self.prompts, [InterventionPlan([], [])], self.decoding, seed=self.spec.seed)
            from steeropt.runner.tracking import write_baseline

            write_baseline(self.runs_dir, self.baseline)  # the unsteered answers beside each traced sample
        return self.baseline

    def run_batch(self, cands) -> list:
        """Generate, evaluate and tell a batch of candidates; a failing candidate fails alone."""
        plans = [self.space.materialize(c.params) for c in cands]
        baseline = self.baseline_samples()
        try:
            results = self._evaluate(plans, baseline)
        except JudgeError:
            raise  # a misconfigured judge is not one candidate's fault: stop the study
        except SteeroptError as exc:
            results = [exc] if len(plans) == 1 else []
        if len(results) != len(plans):
            for plan in plans:  # isolate the candidate that broke the batch (e.g. NaN activations)
                try:
                    results.append(self._evaluate([plan], baseline)[0])
                except SteeroptError as exc:
                    results.append(exc)
        # budget checked again just before tell: closes the window in which a concurrent ask was not visible
        inside = {c.number for c in self.ledger.keep(cands)}
        for cand, plan, res in zip(cands, plans, results):
            if cand.number in inside:
                self._log(self._tell(cand, plan, res))
                if self.judge is not None:
                    self.judge_watch.see(cand.number, res)
        self.update_artifacts()
        if self.judge is not None:  # the judge answered nothing, trial after trial: re-queue those and stop
            self.judge_watch.check(self.judge.identity, self.optimizer.study)
        return results

    def _evaluate(self, plans, baseline):
        samples = self.generator.run(self.prompts, plans, self.decoding, seed=self.spec.seed)
        return self.stack.evaluate(samples, plans, baseline=baseline, vectors=self.vectors)

    def _tell(self, cand, plan, res):
        """Store one evaluated candidate: values and constraints, or FAIL with the reason; summaries as user
        attrs (what results(), the MLflow log and analysis read back); samples to runs_dir."""
        raw = dict(zip(site_names(plan), raw_alphas(plan, self.vectors, self.lm)))
        summary = {"raw_alphas": raw}
        if self.space.kl_unit_params():  # the parameter is a KL dose: keep the normalised α it mapped to
            summary["alphas"] = dict(zip(site_names(plan), map(float, plan.alphas)))
        if isinstance(res, Exception):
            return self.optimizer.tell(cand.number, None, failed_reason=redact(str(res)), user_attrs=summary)
        samples_file(self.runs_dir, cand.number).write_text(
            "".join(json.dumps(scrub(r), default=str) + "\n" for r in res.samples))
        if res.failed:  # e.g. too many missing judgments: keep the counts and samples that say why
            summary["counts"] = _jsonable(res.counts)
            return self.optimizer.tell(cand.number, None, failed_reason=redact(res.reason), user_attrs=summary)
        values = dict(res.objectives)
        missing = [k for k, v in values.items() if v is None]
        if missing:
            return self.optimizer.tell(cand.number, None, failed_reason=f"objective(s) {missing} could not be "
                                       "computed", user_attrs=summary)
        cons = {name: res.values.get(name) for name, _, _ in self.stack.constraints}
        summary |= {"values": _jsonable(res.values), "intervals": _jsonable(res.intervals),
                    "counts": _jsonable(res.counts), "families": _jsonable(
                        {f: {"values": d.get("values"), "intervals": d.get("intervals"),
                             "n": (d.get("counts") or {}).get("samples")} for f, d in res.families.items()}),
                    "feasible": res.feasible, "prompt_scores": _jsonable(prompt_scores(
                        res.samples, self.prompts, [n for n, _ in self.stack.objectives] + [n for n, _, _ in
                                                                                            self.stack.constraints]))}
        return self.optimizer.tell(cand.number, values, constraints=cons, user_attrs=summary)

    def _log(self, trial) -> None:
        """Log one finished trial (a FrozenTrial read from the storage) to MLflow."""
        if self.judge is not None:
            self.progress.judge_calls = self.judge.stats.calls
        if self.tracker is not None:
            self.tracker.log_stored(trial, self.runs_dir)

    def _sync_tracking(self, min_age_s: float = 0.0) -> None:
        if self.tracker is not None:
            self.tracker.sync(self.optimizer.study.get_trials(deepcopy=False), self.runs_dir, min_age_s)

    # ---- results ------------------------------------------------------------------------------
    def results(self) -> pd.DataFrame:
        """One row per trial: number, state, params, objective values, counts, feasibility."""
        self.setup() if not self._ready else None
        return trials_frame(self.optimizer.study, self.stack.objectives)

    def front(self) -> pd.DataFrame:
        from steeropt.report.analysis import pareto_front

        return pareto_front(self.results(), self.stack.objectives)

    def update_artifacts(self, final: bool = False) -> None:
        """Trials CSV, Pareto front (CSV, PNG, HTML) and hypervolume vs trials, logged to the parent run; at the
        end of a run also the per-family dose-response fits, the settings they give and the re-evaluation
        (report.pick.study_summary)."""
        from steeropt.report.analysis import write_study_artifacts

        df = self.results()
        if df.empty:
            return  # a study created but not started yet (e.g. `steeropt run SPEC --trials 0`)
        info = write_study_artifacts(df, self.stack.objectives, self.runs_dir, title=self.spec.name,
                                     reference=self.objective_reference(), constraints=self.stack.constraints)
        if final:
            from optuna.trial import TrialState

            from steeropt.report.pick import study_summary

            done = self.optimizer.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            info["files"] += study_summary(self.spec, done, self.reevaluation(), self.runs_dir)
        self.progress.front_size, self.progress.hypervolume = info["front_size"], info["hypervolume"]
        if self.tracker is not None:
            self.tracker.log_files(info["files"], "study")
            self.tracker.log_study_metrics({"hypervolume": info["hypervolume"], "front_size": info["front_size"],
                                            "trials_done": len(df)}, step=len(df))

    def objective_reference(self) -> list[float]:
        """Hypervolume reference per objective (report.pareto.objective_reference): the worst end of a bounded
        value, else derived from the complete trials' values."""
        from optuna.trial import TrialState

        from steeropt.report.pareto import objective_reference, unit_scores

        done = self.optimizer.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return objective_reference(self.stack.objectives, unit=unit_scores(self.objective),
                                   points=[t.values for t in done])

    def close(self, status: str = "FINISHED") -> None:
        if self._ready:
            if self.tracker is not None:
                self.tracker.finish(status)
            self.optimizer.close()
            if self.judge is not None:
                self.judge.close()


def trials_frame(optuna_study, objectives) -> pd.DataFrame:
    """One row per trial of an Optuna study written by the runner (params, raw α, values, intervals, counts)."""
    from steeropt.search.optimizers.base import failed_reason

    rows = []
    for t in optuna_study.get_trials(deepcopy=False):
        ua = t.user_attrs
        row = {"number": t.number, "state": t.state.name, **{f"params.{k}": v for k, v in t.params.items()}}
        row |= {f"raw.{k}": v for k, v in (ua.get("raw_alphas") or {}).items()}
        row |= {f"alpha.{k}": v for k, v in (ua.get("alphas") or {}).items()}
        vals = ua.get("values") or {}
        for name, _ in objectives:
            row[name] = vals.get(name)
            iv = (ua.get("intervals") or {}).get(name)
            row[f"{name}.ci_low"], row[f"{name}.ci_high"] = (iv or (None, None))[:2]
        row |= {f"value.{k}": v for k, v in vals.items() if k not in dict(objectives)}
        row |= {f"count.{k}": v for k, v in (ua.get("counts") or {}).items() if not isinstance(v, dict)}
        row["feasible"] = ua.get("feasible")
        row["failed_reason"] = failed_reason(t)
        rows.append(row)
    return pd.DataFrame(rows)


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: None if o != o else str(o)))
