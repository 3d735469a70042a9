"""A tuning study: the loop of one trial (docs/architecture.md), built on ask/tell.

    >>> study = Study.from_spec("studies/quickstart.yaml")      # doctest: +SKIP
    >>> df = study.run()                                        # one row per trial
    >>> study.front()                                           # the Pareto front as a DataFrame

Each batch: optimizer.ask -> space.materialize -> harness (generate, score) -> optimizer.tell -> tracker.log; the
harness (runner.harness) owns the parts, runner.finish what follows the trials. `run` resumes a study found in
the storage; `steeropt worker` runs the same loop on shared storage (budget: runner.ledger; stale trials:
search.optimizers.base), and each finished trial is logged to MLflow once (tracking.tracker).
"""
from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import pandas as pd

from steeropt.engine.interventions import raw_alphas
from steeropt.errors import JudgeError, SteeroptError
from steeropt.records import TrialRecord, jsonable
from steeropt.redact import redact, scrub
from steeropt.runner import finish
from steeropt.runner.checks import JudgeWatch, check_runs_dir, check_sole_runner, check_storage, register_secrets
from steeropt.runner.harness import Harness
from steeropt.runner.ledger import Ledger, StudyProgress
from steeropt.runner.provenance import judge_card, resolved_yaml, run_params, run_tags
from steeropt.runner.records import told_record
from steeropt.search.optimizers import check_settings, make_optimizer
from steeropt.specs import StudySpec, build, validate_study
from steeropt.timing import phase
from steeropt.tracking import Tracker
from steeropt.tracking.run_dir import samples_file, write_baseline
from steeropt.types import InterventionPlan, site_names

__all__ = ["Study", "StudyProgress"]


def _from_harness(name: str) -> property:
    return property(lambda self: getattr(self.harness, name), doc=f"The harness's {name} (runner.harness).")


class Study:
    """Runs one StudySpec. Heavy parts (model, judge, optimizer, tracker) are set up on first use."""

    lm, vectors, judge, stack = (_from_harness(n) for n in ("lm", "vectors", "judge", "stack"))
    generator, decoding, prompts = (_from_harness(n) for n in ("generator", "decoding", "prompts"))

    def __init__(self, spec: StudySpec, *, track: bool = True, runs_dir: str | Path = "runs"):
        self.spec = spec
        self.harness = Harness(spec)
        self.space, self.objective, self.judge_spec = self.harness.space, self.harness.objective, self.harness.judge_spec
        register_secrets(spec, self.judge_spec)  # redaction masks them wherever they would leave the process
        self.judge_watch = JudgeWatch()  # stops the study when the judge answers nothing, trial after trial
        self.track = track
        self.runs_dir = Path(runs_dir) / spec.name
        self.progress = StudyProgress(target=spec.budget.trials)
        self.baseline = None
        self._ready = False

    @classmethod
    def from_spec(cls, ref, **kw) -> "Study":
        validate_study(ref)  # everything checked before anything is written
        return cls(build("study", ref), **kw)

    def setup(self, lm=None) -> "Study":
        """Fail on an unusable storage, run directory, optimizer setting, judge key or tracker before writing
        anything (judge cache, tracking store, study storage); then load the harness and open the study."""
        if self._ready:
            return self
        spec = self.spec
        with phase("setup"):
            check_storage(spec.storage)
            check_runs_dir(self.runs_dir)
            check_settings(spec.optimizer.name, spec.optimizer.settings)
            self.harness.load(lm)
            # the tracker before the study storage: one that refuses writes leaves the storage untouched
            self.tracker = Tracker(spec.tracking_uri, spec.experiment_name, spec.name, traces=spec.traces) \
                if self.track else None
            self.optimizer = make_optimizer(
                spec.optimizer.name, space=self.space, objectives=self.stack.objectives,
                constraints=self.stack.constraints, storage=spec.storage, study_name=spec.name, seed=spec.seed,
                settings=spec.optimizer.settings)
            self.ledger = Ledger(self.optimizer, spec.budget.trials)
            self.progress.done = self.ledger.count().done
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
            self._sync_tracking(min_age_s=max(120.0, 3.0 * (opt.grace_period or 120.0)))  # live workers log their own
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
            finish.after_trials(self, callback=callback)  # arms, re-evaluation
        finish.update_artifacts(self, final=True)
        finish.write_timing(self)
        return self.results()

    def _judge_budget_spent(self) -> bool:
        cap = self.spec.budget.max_judge_calls
        return cap is not None and self.judge is not None and self.judge.stats.calls >= cap

    def baseline_samples(self):
        """The unsteered answers to the trial prompts, generated once per study and kept beside each traced sample."""
        if self.baseline is None:
            self.baseline = self.harness.generate(self.prompts, [InterventionPlan([], [])])
            write_baseline(self.runs_dir, self.baseline)
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
        finish.update_artifacts(self)
        if self.judge is not None:  # the judge answered nothing, trial after trial: re-queue those and stop
            self.judge_watch.check(self.judge.identity, self.optimizer.study)
        return results

    def _evaluate(self, plans, baseline):
        return self.harness.evaluate(self.harness.generate(self.prompts, plans), plans, baseline)

    def _tell(self, cand, plan, res):
        """Store one evaluated candidate: values and constraints, or FAIL with the reason; its TrialRecord as user
        attrs (what results(), the MLflow log and the analysis read back); samples to runs_dir."""
        rec = TrialRecord(raw_alphas=dict(zip(site_names(plan), raw_alphas(plan, self.vectors, self.lm))))
        if self.space.kl_unit_params():  # the parameter is a KL dose: keep the normalised α it mapped to
            rec.alphas = dict(zip(site_names(plan), map(float, plan.alphas)))
        if isinstance(res, Exception):
            return self.optimizer.tell(cand.number, None, failed_reason=redact(str(res)), user_attrs=rec.to_user_attrs())
        samples_file(self.runs_dir, cand.number).write_text(
            "".join(json.dumps(scrub(r), default=str) + "\n" for r in res.samples))
        if res.failed:  # e.g. too many missing judgments: keep the counts and samples that say why
            rec.counts = jsonable(res.counts)
            return self.optimizer.tell(cand.number, None, failed_reason=redact(res.reason),
                                       user_attrs=rec.to_user_attrs())
        values = dict(res.objectives)
        missing = [k for k, v in values.items() if v is None]
        if missing:
            return self.optimizer.tell(cand.number, None, failed_reason=f"objective(s) {missing} could not be "
                                       "computed", user_attrs=rec.to_user_attrs())
        cons = {name: res.values.get(name) for name, _, _ in self.stack.constraints}
        rec = told_record(rec, res, self.prompts, self.harness.value_names)
        return self.optimizer.tell(cand.number, values, constraints=cons, user_attrs=rec.to_user_attrs())

    def _log(self, trial) -> None:
        """Log one finished trial (a FrozenTrial read from the storage) to MLflow."""
        if self.judge is not None:
            self.progress.judge_calls = self.judge.stats.calls
        if self.tracker is not None:
            self.tracker.log_stored(trial, self.runs_dir)

    def _sync_tracking(self, min_age_s: float = 0.0) -> None:
        if self.tracker is not None:
            self.tracker.sync(self.optimizer.study.get_trials(deepcopy=False), self.runs_dir, min_age_s)

    # ---- after the trials and results (runner.finish) -------------------------------------------
    def reevaluate(self, *, callback=None, force: bool = False):
        """Re-evaluate the front and the per-family choices on fresh selection prompts (budget.reevaluation),
        once per set of trials: a stored record for the same trials is reused unless `force`."""
        return finish.reevaluate(self, callback=callback, force=force)

    def results(self) -> pd.DataFrame:
        """One row per trial: number, state, params, objective values, counts, feasibility."""
        return finish.results(self.setup())

    def front(self) -> pd.DataFrame:
        return finish.front(self)

    def objective_reference(self) -> list[float]:
        return finish.objective_reference(self)

    def close(self, status: str = "FINISHED") -> None:
        if self._ready:
            if self.tracker is not None:
                self.tracker.finish(status)
            self.optimizer.close()
            self.harness.close()
