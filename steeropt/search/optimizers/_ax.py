"""Multi-objective Bayesian optimization with outcome constraints: Ax (`ax.api.client.Client`) on BoTorch.

Ax's own defaults do the modelling: a center point, then Sobol for `initialization_budget` trials, then
BoTorch "MBM defaults": one SingleTaskGP per metric and qLogNoisyExpectedHypervolumeImprovement
(qLogNEHVI) for 2-4 objectives (qLogNEI for one objective).

What a constraint becomes in Ax (Ax decides this from the metric names, not us):
- on a metric that is NOT an objective: an outcome constraint. Ax fits a GP to it and the acquisition is
  weighted by the modelled probability of feasibility (qLogProbabilityOfFeasibility while no observed
  point is feasible).
- on a metric that IS an objective (e.g. coherency >= 0.4 while maximising coherency): Ax turns it into
  that objective's THRESHOLD, i.e. the hypervolume reference in that objective. There is no separate
  feasibility model: the objective's own GP is used, and only points beyond the threshold add
  hypervolume, which is the constrained front's hypervolume. Its direction must match the objective's
  (>= to maximise, <= to minimise), and `objective_thresholds` must not name that objective too. With a
  single objective Ax refuses such a constraint, and so do we (at construction, naming it).

Observation noise: each metric's SEM is taken from the trial's recorded bootstrap interval
(user_attrs["intervals"][name] = [low, high] at 95%: SEM = (high - low) / (2 * 1.96)), floored at
`sem_floor` (default 0.01: a zero-width interval, e.g. every sample judged alike, is not an exact value).
Ax then fits the GPs with that fixed noise. A metric whose trials record no interval goes in without an
SEM and Ax infers a homoskedastic noise term for it; a trial missing an interval that earlier trials had
gets the largest SEM seen so far for that metric (BoTorch refuses known and unknown noise in one metric;
a study whose first trials lack intervals and later ones have them still hits that refusal).

State lives in the Optuna study like every other optimizer; the Ax client is only a cache rebuilt from it:
- each ask() first syncs the client with the study: trials it has not seen are attached
  (`attach_trial`), COMPLETE ones completed with their raw objective and constraint values,
  FAIL ones marked failed, RUNNING ones left RUNNING, which Ax treats as pending points (fantasised
  by qLogNEHVI). A new process (resume) simply syncs everything; workers see each other's trials,
  including in-flight ones, through the same shared storage.
- every Ax proposal becomes an Optuna trial: study.ask() (which hands out re-queued WAITING trials
  first), then the Ax parameters are written into that trial.
Two workers asking at the same instant may propose near-identical points (neither sees the other's
trial yet); with sqlite, use PostgreSQL or stagger workers for heavy parallelism.
"""
from __future__ import annotations

import logging
import math
import time
import warnings

from optuna.trial import FrozenTrial, TrialState

from steeropt.errors import SteeroptError
from steeropt.search.optimizers.base import Candidate, Optimizer


class AxOptimizer(Optimizer):
    """Settings: initialization_budget (default 5, Ax's own default), method ("fast" = BoTorch MBM defaults,
    "quality" = warped SAAS, "random_search"), torch_device, objective_thresholds ({objective: worst value
    still of interest}: the hypervolume reference; without it Ax infers one from the model each ask; a
    constraint on an objective sets it, see the module docstring), sem_floor (0.01), num_restarts (8) and
    raw_samples (256) of the acquisition optimisation."""

    name = "botorch"
    settings_allowed = {"initialization_budget", "method", "torch_device", "objective_thresholds",
                        "num_restarts", "raw_samples", "sem_floor"}

    def __init__(self, **kw):
        super().__init__(**kw)
        for name in [n for n, _ in self.objectives] + [n for n, _, _ in self.constraints]:
            if not name.isidentifier():
                raise SteeroptError(f"optimizer 'botorch': metric name {name!r} must be an identifier "
                                    "(Ax parses objective and constraint strings)")
        self.thresholds = self._thresholds()
        self._client = None
        self._ax_index: dict[int, int] = {}  # optuna trial number -> Ax trial index
        self._closed: set[int] = set()  # trial numbers whose outcome Ax already has
        self._max_sem: dict[str, float] = {}  # metric -> largest SEM told to Ax so far
        self.fit_seconds: list[float] = []  # wall time of each get_next_trials call (model fit + acquisition)

    def _build_client(self):
        from ax.api.client import Client
        from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig
        from ax.utils.common.logger import set_stderr_log_level

        set_stderr_log_level(logging.WARNING)  # Ax logs every trial at INFO
        params = []
        for p in self.space.parameters():
            if p.choices is not None:
                params.append(ChoiceParameterConfig(name=p.name, values=list(p.choices), parameter_type="str",
                                                    is_ordered=False))
            else:
                params.append(RangeParameterConfig(name=p.name, bounds=(p.low, p.high), step_size=p.step,
                                                   parameter_type="int" if p.integer else "float",
                                                   scaling="log" if p.log else "linear"))
        client = Client(random_seed=self._ax_seed())
        client.configure_experiment(parameters=params, name=self.study.study_name)
        # Constraints on objectives are already in self.thresholds (Ax would turn them into thresholds anyway).
        directions = dict(self.objectives)
        client.configure_optimization(
            objective=", ".join(n if d == "maximize" else f"-{n}" for n, d in self.objectives),
            outcome_constraints=[f"{n} {op} {t!r}" for n, op, t in self.constraints if n not in directions]
            + [f"{n} {'>=' if directions[n] == 'maximize' else '<='} {t!r}" for n, t in self.thresholds.items()]
            or None)
        client.set_generation_strategy(self._generation_strategy())
        return client

    def _thresholds(self) -> dict[str, float]:
        """{objective: threshold}: the objective_thresholds setting plus every constraint on an objective."""
        directions = dict(self.objectives)
        out = {str(n): float(t) for n, t in (self.settings.get("objective_thresholds") or {}).items()}
        unknown = sorted(set(out) - set(directions))
        if unknown:
            raise SteeroptError(f"optimizer 'botorch': objective_thresholds for unknown objectives {unknown}")
        for n, op, t in self.constraints:
            if n not in directions:
                continue
            if len(self.objectives) == 1:
                raise SteeroptError(f"optimizer 'botorch': constraint {n} {op} {t:g} is on the only objective; "
                                    "Ax cannot constrain a single objective (drop the constraint or add an objective)")
            want = ">=" if directions[n] == "maximize" else "<="
            if op != want:
                raise SteeroptError(f"optimizer 'botorch': constraint {n} {op} {t:g} is on an objective to "
                                    f"{directions[n]}; Ax makes it that objective's threshold, which needs '{want}'")
            if n in out:
                raise SteeroptError(f"optimizer 'botorch': objective {n!r} has both a constraint ({op} {t:g}) and "
                                    "an objective_thresholds entry; the constraint is its threshold, drop the entry")
            out[n] = t
        return out

    def _generation_strategy(self):
        """Ax's default strategy for this problem, with a cheaper acquisition optimisation: 20 restarts on
        1024 raw samples (Ax's default) took ~25 s of a ~30 s ask on 2 busy cores for 2-4 parameters."""
        from ax.api.utils.generation_strategy_dispatch import choose_generation_strategy
        from ax.api.utils.structs import GenerationStrategyDispatchStruct

        s = self.settings
        gs = choose_generation_strategy(GenerationStrategyDispatchStruct(
            method=s.get("method", "fast"), initialization_budget=int(s.get("initialization_budget", 5)),
            initialization_random_seed=self._ax_seed(), torch_device=s.get("torch_device"),
            allow_exceeding_initialization_budget=True))  # ask(q) always gets q points, even while initialising
        optimizer = {"num_restarts": int(s.get("num_restarts", 8)), "raw_samples": int(s.get("raw_samples", 256))}
        for node in gs.nodes_by_name.values():
            for spec in node.generator_specs:
                if spec.generator_enum.name == "BOTORCH_MODULAR":
                    spec.generator_gen_kwargs.setdefault("model_gen_options", {})["optimizer_kwargs"] = optimizer
        return gs

    def _ax_seed(self) -> int:
        """The spec's seed; in a worker (diversify) its own, so workers' Sobol points differ."""
        return self.seed if self._salt is None else self._stream_seed() % (2**31)

    def diversify(self, salt: int) -> None:
        self._salt = int(salt) % (2**32)
        self._client = None  # rebuilt with this worker's seed on the next ask (state comes from the study)
        self._ax_index.clear()
        self._closed.clear()
        self._max_sem.clear()

    @property
    def client(self):
        """The Ax Client, synced with the Optuna study."""
        if self._client is None:
            self._client = self._build_client()
        self._sync()
        return self._client

    def _sync(self) -> None:
        for t in self.study.get_trials(deepcopy=False):
            if t.number in self._closed or t.state == TrialState.WAITING or set(t.params) != set(self.dists):
                continue  # (a trial another worker has just created has no params yet: next sync)
            idx = self._ax_index.get(t.number)
            if idx is None:
                idx = self._ax_index[t.number] = self._client.attach_trial(parameters=dict(t.params))
            if t.state == TrialState.COMPLETE:
                self._client.complete_trial(idx, raw_data=self._raw_data(t))
            elif t.state.is_finished():
                self._client.mark_trial_failed(idx, failed_reason=t.user_attrs.get("failed_reason"))
            if t.state.is_finished():
                self._closed.add(t.number)

    def _raw_data(self, t: FrozenTrial) -> dict[str, float | tuple[float, float]]:
        """(mean, SEM) per metric: SEM from the trial's interval (floored), else the largest SEM seen for that
        metric (BoTorch refuses a mix of known and unknown noise in one metric), else a bare mean."""
        raw = {n: float(v) for (n, _), v in zip(self.objectives, t.values)}
        for n, v in (t.user_attrs.get("constraint_values") or {}).items():
            if v is not None and n not in raw:
                raw[n] = float(v)
        floor = float(self.settings.get("sem_floor", 0.01))
        out = {}
        for n, v in raw.items():
            sem = _sem((t.user_attrs.get("intervals") or {}).get(n))
            if sem is not None:
                self._max_sem[n] = max(self._max_sem.get(n, 0.0), max(sem, floor))
            sem = max(sem, floor) if sem is not None else self._max_sem.get(n)
            out[n] = v if sem is None else (v, sem)
        return out

    def ask(self, n: int = 1) -> list[Candidate]:
        """n candidates from one Ax generation call (re-queued trials are handed out first)."""
        client = self.client
        trials = [self._new_trial(fixed=False) for _ in range(n)]
        fresh = [t for t in trials if not t.params]
        for t in trials:
            if t.params:  # a re-queued trial: Ax sees it as pending
                self._ax_index[t.number] = client.attach_trial(parameters=dict(t.params))
        if fresh:
            start = time.perf_counter()
            try:
                with warnings.catch_warnings():  # per-ask noise from Ax/torch internals
                    warnings.filterwarnings("ignore", message="To copy construct from a tensor")
                    warnings.filterwarnings("ignore", message="Encountered a `MultiObjective` without objective")
                    proposals = client.get_next_trials(max_trials=len(fresh))
            except Exception as e:  # no half-made RUNNING trials left behind
                for trial in fresh:
                    self.tell(trial.number, None, failed_reason=f"Ax generation failed: {e!r}"[:500])
                raise
            self.fit_seconds.append(time.perf_counter() - start)
            for trial, (idx, params) in zip(fresh, proposals.items()):
                for name, value in params.items():
                    dist = self.dists[name]
                    self.storage.set_trial_param(trial._trial_id, name, dist.to_internal_repr(value), dist)
                self._ax_index[trial.number] = idx
            for trial in fresh[len(proposals):]:
                self.tell(trial.number, None, failed_reason="Ax proposed fewer candidates than asked")
        out = []
        for t in trials:
            if t.number in self._pending:
                out.append(Candidate(t.number, dict(self.storage.get_trial(t._trial_id).params)))
        return out

    def pareto_frontier(self, use_model_predictions: bool = True) -> list[tuple[int, dict, dict]]:
        """Ax's view of the front: (Optuna trial number, params, predicted or observed means)."""
        number_of = {idx: num for num, idx in self._ax_index.items()}
        return [(number_of[idx], dict(params), {k: v for k, v in means.items()})
                for params, means, idx, _ in self.client.get_pareto_frontier(use_model_predictions)]


def _sem(interval) -> float | None:
    """SEM of a 95% interval [low, high] (normal approximation), or None if there is no finite interval."""
    try:
        lo, hi = float(interval[0]), float(interval[1])
    except (TypeError, ValueError, IndexError):
        return None
    return (hi - lo) / (2 * 1.959964) if math.isfinite(lo) and math.isfinite(hi) and hi >= lo else None
