"""A tuning study: the loop of DESIGN's "flow of one trial", built on ask/tell.

    >>> study = Study.from_spec("studies/quickstart.yaml")      # doctest: +SKIP
    >>> df = study.run()                                        # one row per trial
    >>> study.front()                                           # the Pareto front as a DataFrame

`run` continues a study found in the storage (same name): finished trials are neither lost nor redone.
`steeropt worker` runs the same loop against shared storage; the trial budget is shared.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from steeropt.errors import JudgeError, SteeroptError
from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.interventions import raw_alphas
from steeropt.specs import StudySpec, build
from steeropt.types import InterventionPlan
from steeropt.engine.vectors import VectorSet


@dataclass
class StudyProgress:
    """What the progress display shows; updated after every batch."""

    done: int = 0
    target: int = 0
    judge_calls: int = 0
    front_size: int = 0
    hypervolume: float = 0.0
    started: float = field(default_factory=time.time)
    last: dict = field(default_factory=dict)


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("steeropt", "torch", "transformers", "optuna", "ax-platform", "botorch", "mlflow", "openai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


class Study:
    """Runs one StudySpec. Heavy parts (model, judge, optimizer, tracker) are set up on first use."""

    def __init__(self, spec: StudySpec, *, track: bool = True, runs_dir: str | Path = "runs"):
        self.spec = spec
        self.space = spec.part("search_space")
        self.objective = spec.part("objective")
        self.judge_spec = spec.part("judge") if self.objective.judge else None
        self.track = track
        self.runs_dir = Path(runs_dir) / spec.name
        self.progress = StudyProgress(target=spec.budget.trials)
        self._ready = False

    @classmethod
    def from_spec(cls, ref, **kw) -> "Study":
        from steeropt.specs import validate_study

        validate_study(ref)  # everything checked before anything is written
        return cls(build("study", ref), **kw)

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, lm=None) -> "Study":
        if self._ready:
            return self
        from steeropt.engine.models import load_model
        from steeropt.evaluation.objectives import ObjectiveStack
        from steeropt.evaluation.objectives.tier1 import ConceptInfo
        from steeropt.search.optimizers import check_settings, make_optimizer

        spec = self.spec
        self.lm = lm or load_model(spec.model)
        self.vectors = build_vectors(self.lm, spec)
        # Order matters: fail on an unreachable storage, a missing judge key or a refusing tracker before
        # writing anything (judge cache, tracking store, study storage).
        check_settings(spec.optimizer.name, spec.optimizer.settings)
        check_storage(spec.storage)
        self.judge = None
        if self.judge_spec is not None:
            from steeropt.evaluation.judges import make_judge

            self.judge = make_judge(self.judge_spec, lm=self.lm)
        self.stack = ObjectiveStack(self.objective, self.lm, self.judge, ConceptInfo.from_concept(spec.concept))
        self.tracker = None
        if self.track:
            from steeropt.runner.tracking import Tracker

            self.tracker = Tracker(spec.tracking_uri, spec.experiment_name, spec.name)
            # the parent run before the study storage: a tracker that refuses writes leaves the storage untouched
            self.tracker.start(self._run_params(), self._run_tags(), {"study.yaml": self._resolved_yaml()})
        self.optimizer = make_optimizer(
            spec.optimizer.name, space=self.space, objectives=self.stack.objectives,
            constraints=self.stack.constraints, storage=spec.storage, study_name=spec.name, seed=spec.seed,
            settings=spec.optimizer.settings)
        self.generator = Generator(self.lm, self.vectors)
        self.decoding = Decoding(**spec.decoding.model_dump())
        self.prompts = trial_prompts(spec)
        self.baseline = None
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self._ready = True
        return self

    def _resolved_yaml(self) -> str:
        import yaml

        return yaml.safe_dump({"study": self.spec.model_dump(mode="json"),
                               "search_space": self.space.model_dump(mode="json"),
                               "objective": self.objective.model_dump(mode="json"),
                               "judge": self.judge_spec.model_dump(mode="json") if self.judge_spec else None},
                              sort_keys=False)

    def _run_params(self) -> dict:
        s = self.spec
        return {"model": s.model, "model_sha256": self.lm.sha256, "seed": s.seed, "optimizer": s.optimizer.name,
                "search_space": self.space.name, "objective": self.objective.name,
                "judge": self.judge.identity if self.judge else "none", "trials": s.budget.trials,
                "batch_size": s.budget.batch_size, "prompts_per_trial": s.budget.prompts_per_trial,
                "storage": _redact(s.storage), **{f"decoding.{k}": v for k, v in s.decoding.model_dump().items()},
                **{f"version.{k}": v for k, v in package_versions().items()}}

    def _run_tags(self) -> dict:
        return {"steeropt.model_sha256": self.lm.sha256, "steeropt.spec": self.spec.source,
                "steeropt.concept": self.spec.concept.name}

    # ---- the loop ----------------------------------------------------------------------------
    def finished_trials(self) -> list:
        import optuna

        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        return [t for t in self.optimizer.study.get_trials(deepcopy=False) if t.state in states]

    def budget_trials(self, trials=None) -> list:
        """The trials the budget counts, in budget order (start time, then number): RUNNING and finished
        ones, except a FAIL trial that was re-queued (stale): its retry counts in its place."""
        import optuna

        S = optuna.trial.TrialState
        trials = self.optimizer.study.get_trials(deepcopy=False) if trials is None else trials
        requeued = {n for t in trials for n in (t.system_attrs.get("retry_history") or [])}
        counted = [t for t in trials if t.state == S.RUNNING
                   or (t.state in (S.COMPLETE, S.FAIL) and t.number not in requeued)]
        return sorted(counted, key=lambda t: (t.datetime_start or _dt.datetime.max, t.number))

    def run(self, n_trials: int | None = None, *, callback=None, worker: bool = False) -> pd.DataFrame:
        """Run until the study has `budget.trials` finished trials (or `n_trials` more from this process).

        Several processes may run the same study (`worker=True`, shared storage): the budget is exact.
        Each one asks only for what is left; right after `ask` (and again before `tell`) a trial that
        would go past the budget — two workers asked at once — is given back (WAITING: the next ask
        hands it out). With heartbeats on (optimizer settings heartbeat_interval), a worker also fails
        and re-queues trials whose worker stopped, and waits for trials running elsewhere before
        deciding the study is done.
        """
        import optuna

        self.setup()
        heartbeat = self.optimizer._heartbeat is not None
        if not worker:
            self.optimizer.recover_stale()  # sole runner: RUNNING trials left by a crash are re-queued
            self._sync_tracking()
        else:
            import os
            import zlib

            # workers starting together would share one random stream (same seed): each gets its own
            self.optimizer.diversify(zlib.crc32(f"{_hostname()}:{os.getpid()}".encode()))
            self._sync_tracking(min_age_s=self._stale_after())  # a live worker logs its own trials
        budget = self.spec.budget.trials
        started_here = 0
        while True:
            if worker and heartbeat:
                self._log_recovered(self.optimizer.recover_stale())
            counted = self.budget_trials()
            running = sum(t.state == optuna.trial.TrialState.RUNNING for t in counted)
            self.progress.done = len(counted) - running
            remaining = budget - len(counted)
            if n_trials is not None:
                remaining = min(remaining, n_trials - started_here)
            if self._judge_budget_spent() or (n_trials is not None and started_here >= n_trials):
                break
            if remaining <= 0:
                if worker and heartbeat and running and len(counted) - running < budget:
                    time.sleep(self.optimizer.storage.get_heartbeat_interval())  # a trial elsewhere may
                    continue  # fail as stale and come back re-queued: wait for it
                break
            cands = self.optimizer.ask(min(self.spec.budget.batch_size, remaining))
            if not cands:
                break  # the optimizer is exhausted (e.g. a finished grid)
            self._mark_worker(cands)
            cands = self._within_budget(cands)
            if not cands:
                continue
            started_here += len(cands)
            self.run_batch(cands)
            if callback is not None:
                callback(self.progress)
        self.update_artifacts()
        return self.results()

    def _stale_after(self) -> float:
        """Seconds after which a finished trial missing in MLflow is surely not being logged by a live worker."""
        st = self.optimizer.storage
        hb = st.get_heartbeat_interval() if self.optimizer._heartbeat is not None else None
        return max(120.0, 3.0 * (getattr(st, "grace_period", None) or 2 * (hb or 60)))

    def _mark_worker(self, cands) -> None:
        """Record which process runs each trial (user attr `worker` = host:pid)."""
        import os

        who = f"{_hostname()}:{os.getpid()}"
        for c in cands:
            trial = self.optimizer._pending.get(c.number)
            if trial is not None:
                self.optimizer.storage.set_trial_user_attr(trial._trial_id, "worker", who)

    def _within_budget(self, cands) -> list:
        """The candidates inside the budget; the others are given back (WAITING, same params) untouched."""
        allowed = {t.number for t in self.budget_trials()[:self.spec.budget.trials]}
        keep = [c for c in cands if c.number in allowed]
        for c in cands:
            if c.number not in allowed:
                self._give_back(c)
        return keep

    def _give_back(self, cand) -> None:
        import optuna

        trial = self.optimizer._pending.get(cand.number)
        if trial is None:
            return
        self.optimizer._release(cand.number)
        self.optimizer.storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.WAITING)

    def _log_recovered(self, numbers) -> None:
        """Log trials this process failed as stale (each is failed by exactly one process)."""
        if not numbers or self.tracker is None:
            return
        study = self.optimizer.study
        for n in numbers:
            t = study._storage.get_trial(study._storage.get_trial_id_from_study_id_trial_number(study._study_id, n))
            ua = t.user_attrs
            self._log_trial(n, t.params, ua.get("raw_alphas", {}), ua, "FAIL", ua.get("failed_reason"), None)

    def _running_elsewhere(self) -> int:
        import optuna

        return sum(t.state == optuna.trial.TrialState.RUNNING for t in self.optimizer.study.get_trials(deepcopy=False))

    def _judge_budget_spent(self) -> bool:
        cap = self.spec.budget.max_judge_calls
        return cap is not None and self.judge is not None and self.judge.stats.calls >= cap

    def baseline_samples(self):
        if self.baseline is None:
            self.baseline = self.generator.run(self.prompts, [InterventionPlan([], [])], self.decoding, seed=self.spec.seed)
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
        inside = {c.number for c in self._within_budget(cands)}
        for cand, plan, res in zip(cands, plans, results):
            if cand.number in inside:
                self._finish(cand, plan, res)
        self.update_artifacts()
        return results

    def _evaluate(self, plans, baseline):
        samples = self.generator.run(self.prompts, plans, self.decoding, seed=self.spec.seed)
        return self.stack.evaluate(samples, plans, baseline=baseline, vectors=self.vectors)

    def _finish(self, cand, plan, res) -> None:
        raw = dict(zip(_site_names(plan), raw_alphas(plan, self.vectors, self.lm)))
        summary = {"raw_alphas": raw}
        if isinstance(res, Exception):
            self.optimizer.tell(cand.number, None, failed_reason=str(res), user_attrs=summary)
            self._log_trial(cand.number, cand.params, raw, {}, "FAIL", str(res), None)
            return
        samples_path = self.runs_dir / f"trial-{cand.number:05d}.jsonl"
        samples_path.write_text("".join(json.dumps(r, default=str) + "\n" for r in res.samples))
        if res.failed:  # e.g. too many missing judgments: keep the counts and samples that say why
            summary["counts"] = _jsonable(res.counts)
            self.optimizer.tell(cand.number, None, failed_reason=res.reason, user_attrs=summary)
            self._log_trial(cand.number, cand.params, raw, {"counts": summary["counts"]}, "FAIL", res.reason,
                            samples_path)
            return
        values = {k: v for k, v in res.objectives.items()}
        if any(v is None for v in values.values()):
            reason = f"objective(s) {[k for k, v in values.items() if v is None]} could not be computed"
            self.optimizer.tell(cand.number, None, failed_reason=reason, user_attrs=summary)
            self._log_trial(cand.number, cand.params, raw, {}, "FAIL", reason, None)
            return
        cons = {name: res.values.get(name) for name, _, _ in self.stack.constraints}
        summary |= {"values": _jsonable(res.values), "intervals": _jsonable(res.intervals),
                    "counts": _jsonable(res.counts), "families": _jsonable(
                        {f: {"values": d.get("values"), "intervals": d.get("intervals")} for f, d in res.families.items()}),
                    "feasible": res.feasible}
        self.optimizer.tell(cand.number, values, constraints=cons, user_attrs=summary)
        self._log_trial(cand.number, cand.params, raw, summary, "COMPLETE", None, samples_path)

    def _log_trial(self, number, params, raw, summary, state, reason, samples_path) -> None:
        if self.judge is not None:
            self.progress.judge_calls = self.judge.stats.calls
        if self.tracker is None:
            return
        metrics = dict(summary.get("values") or {})
        metrics |= {f"count.{k}": v for k, v in (summary.get("counts") or {}).items() if isinstance(v, (int, float))}
        for fam, d in (summary.get("families") or {}).items():
            metrics |= {f"{fam}.{k}": v for k, v in (d.get("values") or {}).items()}
        for k, iv in (summary.get("intervals") or {}).items():
            if iv:
                metrics |= {f"{k}.ci_low": iv[0], f"{k}.ci_high": iv[1]}
        params = dict(params) | {f"raw.{k}": v for k, v in raw.items()}
        tags = {"state": state, **({"failed_reason": reason} if reason else {}),
                "feasible": str(summary.get("feasible"))}
        text = samples_path.read_text() if samples_path else None
        self.tracker.log_trial(number, params, metrics, tags, text)

    def _sync_tracking(self, min_age_s: float = 0.0) -> None:
        """After a crash between Optuna's tell and MLflow's log, log the trials MLflow is missing.
        min_age_s: only trials finished that long ago (a live worker is still logging its recent ones)."""
        if self.tracker is None:
            return
        logged = self.tracker.logged_trials()
        cutoff = _dt.datetime.now() - _dt.timedelta(seconds=min_age_s)
        for t in self.finished_trials():
            if t.number in logged or (min_age_s and (t.datetime_complete or cutoff) > cutoff):
                continue
            path = self.runs_dir / f"trial-{t.number:05d}.jsonl"
            ua = t.user_attrs
            state = "COMPLETE" if t.state.name == "COMPLETE" else "FAIL"
            self._log_trial(t.number, t.params, ua.get("raw_alphas", {}), ua, state, ua.get("failed_reason"),
                            path if path.exists() else None)

    # ---- results ------------------------------------------------------------------------------
    def results(self) -> pd.DataFrame:
        """One row per trial: number, state, params, objective values, counts, feasibility."""
        self.setup() if not self._ready else None
        return trials_frame(self.optimizer.study, self.stack.objectives)

    def front(self) -> pd.DataFrame:
        from steeropt.report.analysis import pareto_front

        return pareto_front(self.results(), self.stack.objectives)

    def update_artifacts(self) -> None:
        """Trials CSV, Pareto front (CSV, PNG, HTML) and hypervolume vs trials, logged to the parent run."""
        from steeropt.report.analysis import write_study_artifacts

        df = self.results()
        if df.empty:
            return  # a study created but not started yet (e.g. `steeropt run SPEC --trials 0`)
        info = write_study_artifacts(df, self.stack.objectives, self.runs_dir, title=self.spec.name,
                                     reference=self.objective_reference())
        self.progress.front_size, self.progress.hypervolume = info["front_size"], info["hypervolume"]
        if self.tracker is not None:
            self.tracker.log_files(info["files"], "study")
            self.tracker.log_study_metrics({"hypervolume": info["hypervolume"], "front_size": info["front_size"],
                                            "trials_done": len(df)}, step=len(df))

    def objective_reference(self) -> list[float]:
        """Fixed hypervolume reference: the worst end of a [0, 1] score (0 to maximise, 1 to minimise)."""
        return [0.0 if d == "maximize" else 1.0 for _, d in self.stack.objectives]

    def close(self, status: str = "FINISHED") -> None:
        if self._ready:
            if self.tracker is not None:
                self.tracker.finish(status)
            self.optimizer.close()
            if self.judge is not None:
                self.judge.close()


def _hostname() -> str:
    import socket

    return socket.gethostname()


def trials_frame(optuna_study, objectives) -> pd.DataFrame:
    rows = []
    for t in optuna_study.get_trials(deepcopy=False):
        ua = t.user_attrs
        row = {"number": t.number, "state": t.state.name, **{f"params.{k}": v for k, v in t.params.items()}}
        row |= {f"raw.{k}": v for k, v in (ua.get("raw_alphas") or {}).items()}
        vals = ua.get("values") or {}
        for name, _ in objectives:
            row[name] = vals.get(name)
            iv = (ua.get("intervals") or {}).get(name)
            row[f"{name}.ci_low"], row[f"{name}.ci_high"] = (iv or (None, None))[:2]
        row |= {f"value.{k}": v for k, v in vals.items() if k not in dict(objectives)}
        row |= {f"count.{k}": v for k, v in (ua.get("counts") or {}).items() if not isinstance(v, dict)}
        row["feasible"] = ua.get("feasible")
        row["failed_reason"] = ua.get("failed_reason")
        rows.append(row)
    return pd.DataFrame(rows)


def trial_prompts(spec: StudySpec) -> list[tuple[str, str]]:
    """The selection prompts every trial is scored on: round-robin over families, fixed for the study."""
    splits = spec.splits()
    pools = {name: list(s.selection) for name, s in splits.items()}
    out: list[tuple[str, str]] = []
    while len(out) < spec.budget.prompts_per_trial and any(pools.values()):
        for name, pool in pools.items():
            if pool and len(out) < spec.budget.prompts_per_trial:
                out.append((name, pool.pop(0)))
    return out


def build_vectors(lm, spec: StudySpec) -> VectorSet:
    from steeropt.specs.prompts import read_pairs, read_texts
    from steeropt.engine.vectors import caa, diff_in_means, from_file, from_sae

    def texts(v):
        return list(v) if isinstance(v, list) else read_texts(v)

    vs = VectorSet()
    for src in spec.vectors:
        if src.method == "diff_in_means":
            vec = diff_in_means(lm, texts(src.positive), texts(src.negative), src.layer, name=src.name, site=src.site)
        elif src.method == "caa":
            pairs = src.pairs if isinstance(src.pairs, list) else read_pairs(src.pairs)
            vec = caa(lm, [(_pair(p, True), _pair(p, False)) for p in pairs], src.layer, name=src.name)
        elif src.method == "sae":
            vec = from_sae(lm, src.path, src.feature, src.layer, name=src.name)
        else:
            vec = from_file(lm, src.path, src.layer, name=src.name, site=src.site)
        vs.add(vec)
    return vs


def _pair(p, positive: bool) -> str:
    get = (lambda k: getattr(p, k)) if not isinstance(p, dict) else p.get
    prompt = get("prompt") or ""
    return (prompt + " " + (get("positive") if positive else get("negative"))).strip()


def _site_names(plan: InterventionPlan) -> list[str]:
    return [f"L{s.layer}.{s.controller}.{s.vector}" + (f".h{'-'.join(map(str, s.heads))}" if s.heads else "")
            for s in plan.sites]


def check_storage(url: str) -> None:
    """Fail with a clear error if the study storage cannot be reached (creates nothing)."""
    if url.startswith("sqlite:///"):
        parent = Path(url[len("sqlite:///"):]).expanduser().resolve().parent
        if not parent.is_dir():
            raise SteeroptError(f"storage {url}: directory {parent} does not exist")
        return
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        raise SteeroptError(f"storage {_redact(url)} is unreachable: {type(exc).__name__}: {str(exc)[:200]}") from exc


def _redact(url: str) -> str:
    """Storage URLs may hold a password: keep it out of MLflow."""
    import re

    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: None if o != o else str(o)))
