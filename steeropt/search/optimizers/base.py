"""The ask/tell optimizer protocol, over an Optuna study that is the store of record for every optimizer.

Call order: `ask(n)` -> evaluate each Candidate -> `tell(candidate.number, values, constraints=...)`.
Every candidate is an Optuna trial in the study (any SQLAlchemy URL; sqlite by default), so resume,
several workers and analysis read one place whatever proposed the candidate. Creating an optimizer
again on the same storage + study_name continues the study (finished trials are neither lost nor
redone); RUNNING trials left by a stopped process are dealt with by `recover_stale()`.

Stale trials belong to the storage: with settings.heartbeat_interval, Optuna's RDBStorage records a
heartbeat per running trial, `optuna.storages.fail_stale_trials` fails those whose heartbeat stopped and
its RetryHeartbeatStaleTrialCallback re-queues them (WAITING, same params; `ask` hands them out first).

Constraints are (metric, op, threshold) with op ">=" or "<=". Raw metric values are kept in the
trial's user attr "constraint_values"; Optuna gets them per trial (Trial.set_constraint, Optuna 5) as
violations, <= 0 meaning feasible: threshold - value for ">=", value - threshold for "<=".
"""
from __future__ import annotations

import abc
import math
import numbers
import os
import socket
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from steeropt.errors import SteeroptError
from steeropt.search.spaces import ParamDef, SearchSpaceSpec

DIRECTIONS = ("maximize", "minimize")
OPS = (">=", "<=")
BASE_SETTINGS = {"heartbeat_interval", "grace_period", "max_retry"}
# Our tell always records why a trial failed; a FAIL trial without a reason was failed by the storage.
STALE_REASON = "stale: no heartbeat within the grace period (its worker stopped?); failed by the storage"


def failed_reason(trial: FrozenTrial) -> str | None:
    """Why a FAIL trial failed (None for other states)."""
    if trial.state != TrialState.FAIL:
        return None  # a retried trial inherits its stale original's user attrs: not its own reason
    return trial.user_attrs.get("failed_reason") or STALE_REASON


def worker_id() -> str:
    """host:pid, recorded on each trial (user attr `worker`) by the process that asked it."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Candidate:
    """One proposal: the Optuna trial number to tell back, and the parameters for space.materialize."""

    number: int
    params: dict


def distributions(space: SearchSpaceSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of a space's parameters (same order as space.parameters())."""
    return {p.name: _distribution(p) for p in space.parameters()}


def _distribution(p: ParamDef) -> optuna.distributions.BaseDistribution:
    if p.choices is not None:
        return optuna.distributions.CategoricalDistribution(list(p.choices))
    if p.integer:
        return optuna.distributions.IntDistribution(math.ceil(p.low), math.floor(p.high), log=p.log,
                                                    step=int(p.step or 1))
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)


def open_storage(storage: str | optuna.storages.BaseStorage, settings: dict) -> optuna.storages.BaseStorage:
    """An Optuna storage from a SQLAlchemy URL (heartbeats on when settings has heartbeat_interval)."""
    if not isinstance(storage, str):
        return storage
    if "://" not in storage:
        raise SteeroptError(f"storage must be a SQLAlchemy URL such as sqlite:///study.db, got {storage!r}")
    kw: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        kw["engine_kwargs"] = {"connect_args": {"timeout": 60}}  # several workers wait on sqlite's lock
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.get("heartbeat_interval"):
            kw.update(heartbeat_interval=int(settings["heartbeat_interval"]), grace_period=settings.get("grace_period"),
                      heartbeat_stale_trial_callback=RequeueStale(settings.get("max_retry", 1)))
        return RDBStorage(storage, **kw)


class RequeueStale(RetryHeartbeatStaleTrialCallback):
    """Optuna's re-queue callback, remembering the trials it was called for. The storage calls it only in the
    process whose fail_stale_trials won the trial, so that process alone reports (and logs) it."""

    def __init__(self, max_retry: int | None = 1):
        super().__init__(max_retry)
        self.failed: list[int] = []

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failed.append(trial.number)
        super().__call__(study, trial)


def heartbeat_on(storage: optuna.storages.BaseStorage) -> bool:
    """Whether the storage records trial heartbeats (RDBStorage with heartbeat_interval)."""
    get = getattr(storage, "get_heartbeat_interval", None)
    return get is not None and get() is not None


class Heartbeat:
    """One daemon thread calling storage.record_heartbeat for each trial asked here and not yet told.

    Optuna's own HeartbeatThread (private, one per trial) is meant for a `with` block in Study.optimize and is
    not a daemon: with ask/tell, a process that crashes between ask and tell would hang on it at exit.
    """

    def __init__(self, storage: optuna.storages.BaseStorage):
        self.storage, self.interval = storage, storage.get_heartbeat_interval()
        self.ids: set[int] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        self.ids.add(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="steeropt-heartbeat", daemon=True)
            self._thread.start()

    def remove(self, trial_id: int) -> None:
        self.ids.discard(trial_id)

    def stop(self) -> None:
        self.ids.clear()
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for trial_id in list(self.ids):
                self.storage.record_heartbeat(trial_id)


class Optimizer(abc.ABC):
    """ask/tell over an Optuna study. Subclasses implement `_ask` (and may hook `_setup`)."""

    name: str = "base"
    settings_allowed: set[str] = set()

    def __init__(self, *, space: SearchSpaceSpec, objectives: list[tuple[str, str]],
                 constraints: list[tuple[str, str, float]] = (), storage: str | optuna.storages.BaseStorage,
                 study_name: str, seed: int = 0, settings: dict | None = None):
        settings = dict(settings or {})
        unknown = sorted(set(settings) - BASE_SETTINGS - self.settings_allowed)
        if unknown:
            raise SteeroptError(f"optimizer {self.name!r}: unknown settings {unknown} "
                                f"(allowed: {sorted(BASE_SETTINGS | self.settings_allowed)})")
        self.objectives = [(str(n), str(d)) for n, d in objectives]
        self.constraints = [(str(n), str(op), float(t)) for n, op, t in constraints]
        _check_goals(self.objectives, self.constraints)
        self.space, self.seed, self.settings = space, int(seed), settings
        self.storage = open_storage(storage, settings)
        self.dists = distributions(space)
        self.study = optuna.create_study(storage=self.storage, study_name=study_name, load_if_exists=True,
                                         directions=[d for _, d in self.objectives],
                                         sampler=optuna.samplers.RandomSampler(seed=self.seed))
        self._check_study_matches()
        self.n_at_start = len(self.study.get_trials(deepcopy=False))
        self._salt: int | None = None  # set by diversify() in a worker
        with warnings.catch_warnings():  # multivariate TPE, constant_liar ... are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.sampler = self._sampler()
        self._pending: dict[int, optuna.Trial] = {}  # asked here, not told yet
        self._heartbeat = Heartbeat(self.storage) if heartbeat_on(self.storage) else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._requeue = RetryHeartbeatStaleTrialCallback(settings.get("max_retry", 1))
        self.worker = worker_id()

    @property
    def heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats (None: heartbeats off, a single process owns the study)."""
        return self.storage.get_heartbeat_interval() if heartbeat_on(self.storage) else None

    @property
    def grace_period(self) -> float | None:
        """Seconds without heartbeat after which a trial is stale (Optuna's default: 2 intervals)."""
        hb = self.heartbeat_interval
        return None if hb is None else float(getattr(self.storage, "grace_period", None) or 2 * hb)

    # --- to implement -------------------------------------------------------------------------------
    def _sampler(self) -> optuna.samplers.BaseSampler:
        """The study's Optuna sampler; self.n_at_start (trials already stored) is known when this is called."""
        return optuna.samplers.RandomSampler(seed=self.seed)

    def _stream_seed(self) -> int:
        """The seed for a sampler whose random stream restarts with the process: a fresh study gets `seed`,
        a resumed one a seed derived from (seed, trials so far), so it does not re-propose old points."""
        salt = [] if self._salt is None else [self._salt]
        if self.n_at_start == 0 and not salt:
            return self.seed
        return int(np.random.SeedSequence([self.seed, self.n_at_start, *salt]).generate_state(1)[0])

    def diversify(self, salt: int) -> None:
        """Several workers on one study: give this process its own random stream (seed + salt), so workers
        that start together do not propose the same points. A single process never calls this (reproducible)."""
        self._salt = int(salt) % (2**32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.sampler = self._sampler()

    @abc.abstractmethod
    def ask(self, n: int = 1) -> list[Candidate]:
        """Up to n candidates from one generation step. Fewer (or none) means the optimizer is exhausted."""

    # --- shared -------------------------------------------------------------------------------------
    def _new_trial(self, fixed: bool = True) -> optuna.Trial:
        """study.ask (pops re-queued WAITING trials first) with a heartbeat thread when heartbeats are on."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = self.study.ask(fixed_distributions=self.dists if fixed else None)
        self._pending[trial.number] = trial
        if self._heartbeat is not None:
            self._heartbeat.add(trial._trial_id)
        trial.set_user_attr("worker", self.worker)
        return trial

    def give_back(self, number: int) -> None:
        """Return a trial asked here to the queue untouched (WAITING, same params): the next ask hands it out.
        For an asked trial that must not run (e.g. past a shared budget). A trial the storage has failed
        meanwhile (stale) is left as it is."""
        trial = self._pending.get(number)
        if trial is None:
            return
        self._release(number)
        try:
            self.storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass

    def tell(self, number: int, values: dict[str, float] | None, *, constraints: dict[str, float] | None = None,
             failed_reason: str | None = None, user_attrs: dict | None = None) -> FrozenTrial:
        """Record one evaluated candidate. Constraint metrics are looked up in `constraints`, then in `values`.

        A missing or non-finite objective or constraint value fails the trial with a reason (never 0).
        """
        trial = self._trial(number)
        sid = trial._trial_id
        for key, value in (user_attrs or {}).items():
            self.storage.set_trial_user_attr(sid, key, value)
        values, raw = dict(values or {}), {**(values or {}), **(constraints or {})}
        cons = {n: raw.get(n) for n, _, _ in self.constraints}
        if cons:
            self.storage.set_trial_user_attr(sid, "constraint_values", cons)
        bad = [n for n, _ in self.objectives if not _finite(values.get(n))]
        bad += [n for n, v in cons.items() if not _finite(v)]
        if failed_reason is None and bad:
            failed_reason = "no values" if not values else f"missing or non-finite values: {sorted(set(bad))}"
        try:
            if failed_reason is not None:
                self.storage.set_trial_user_attr(sid, "failed_reason", str(failed_reason))
                if values:
                    self.storage.set_trial_user_attr(sid, "values_at_failure", {k: _jsonable(v) for k, v in values.items()})
                frozen = self.study.tell(trial, state=TrialState.FAIL)
            else:
                for name, op, threshold in self.constraints:
                    trial.set_constraint(name, threshold - cons[name] if op == ">=" else cons[name] - threshold)
                frozen = self.study.tell(trial, [float(values[n]) for n, _ in self.objectives])
        finally:
            self._release(number)
        return frozen

    def _trial(self, number: int) -> optuna.Trial:
        if number in self._pending:
            return self._pending[number]
        try:
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        except KeyError:
            raise SteeroptError(f"study {self.study.study_name!r} has no trial {number}") from None
        state = self.storage.get_trial(tid).state
        if state != TrialState.RUNNING:
            raise SteeroptError(f"trial {number} is {state.name}, not RUNNING: it cannot be told")
        return optuna.Trial(self.study, tid)  # a trial asked by another process (e.g. a worker handing over)

    def _release(self, number: int) -> None:
        trial = self._pending.pop(number, None)
        if trial is not None and self._heartbeat is not None:
            self._heartbeat.remove(trial._trial_id)

    def recover_stale(self, *, heartbeat: bool | None = None, retry: bool = True) -> list[int]:
        """Fail RUNNING trials that no live process will tell; return the numbers of those THIS call failed.

        heartbeat=True (default when the storage records heartbeats): optuna.storages.fail_stale_trials fails
        the trials whose heartbeat is older than grace_period (safe with several workers: each trial is failed
        by one process) and the storage's callback re-queues them. heartbeat=False: this process declares
        itself the sole runner and every RUNNING trial it did not ask is failed with reason "stale", then
        re-queued (retry=True) as a WAITING trial with the same params, which the next ask() hands out first.
        """
        heartbeat = heartbeat_on(self.storage) if heartbeat is None else heartbeat
        if heartbeat:
            callback = self.storage.get_heartbeat_stale_trial_callback() if heartbeat_on(self.storage) else None
            if not isinstance(callback, RequeueStale):
                raise SteeroptError("recover_stale(heartbeat=True) needs a storage opened with "
                                    "settings.heartbeat_interval")
            callback.failed.clear()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(self.study)
            return sorted(callback.failed)
        stale = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if t.number not in self._pending]
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        for t in stale:
            self.storage.set_trial_user_attr(t._trial_id, "failed_reason", f"stale: left RUNNING by a stopped "
                                                                           f"process (recovered {stamp})")
            frozen = self.study.tell(t.number, state=TrialState.FAIL)
            if retry:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self._requeue(self.study, frozen)
        return sorted(t.number for t in stale)

    @property
    def best(self) -> list[FrozenTrial]:
        """Feasible, complete, non-dominated trials (Optuna's study.best_trials: constraints <= 0 feasible)."""
        return self.study.best_trials

    def trials_dataframe(self):
        """All trials as a pandas DataFrame (params, values, user attrs incl. failed_reason, states)."""
        return self.study.trials_dataframe()

    def close(self) -> None:
        """Stop heartbeats (trials asked and never told stay RUNNING: recover_stale deals with them)."""
        self._pending.clear()
        if self._heartbeat is not None:
            self._heartbeat.stop()

    def _check_study_matches(self) -> None:
        # A resumed study must be the same problem: same optimizer, goals and parameters.
        meta = {"optimizer": self.name, "objectives": [list(o) for o in self.objectives],
                "constraints": [list(c) for c in self.constraints], "parameters": list(self.dists),
                "space": self.space.name}
        old = self.study.user_attrs.get("steeropt")
        if old is None:
            self.study.set_user_attr("steeropt", {**meta, "seed": self.seed})
            return
        diff = [k for k in meta if k != "space" and old.get(k) != meta[k]]
        if diff:
            raise SteeroptError(f"study {self.study.study_name!r} exists with different "
                                + ", ".join(f"{k} ({old.get(k)} != {meta[k]})" for k in diff))


def _check_goals(objectives: list[tuple[str, str]], constraints: list[tuple[str, str, float]]) -> None:
    if not objectives:
        raise SteeroptError("at least one objective (name, 'maximize'|'minimize') is needed")
    for name, direction in objectives:
        if direction not in DIRECTIONS:
            raise SteeroptError(f"objective {name!r}: direction must be one of {DIRECTIONS}, got {direction!r}")
    if len({n for n, _ in objectives}) != len(objectives):
        raise SteeroptError(f"duplicate objective names in {objectives}")
    for name, op, threshold in constraints:
        if op not in OPS or not math.isfinite(threshold):
            raise SteeroptError(f"constraint {name!r}: need op in {OPS} and a finite threshold, got {op!r} {threshold}")
    if len({n for n, _, _ in constraints}) != len(constraints):
        raise SteeroptError(f"duplicate constraint names in {constraints}")


def _finite(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _jsonable(v: Any) -> Any:
    return v if _finite(v) else (None if v is None else str(v))
