"""Optimizers that are Optuna samplers: grid, random, sobol (QMC), tpe, nsga2.

Each ask(n) is n `study.ask()` calls (re-queued WAITING trials first). Settings per optimizer:
  grid:   grid_size (values per numeric parameter, default 14: AxBench's factor count)
  random: -
  sobol:  scramble (default True)
  tpe:    n_startup_trials (10), multivariate (True), constant_liar (True: batches and workers
          see asked-but-untold trials as bad, so one batch spreads out)
  nsga2:  population_size (20), mutation_prob, crossover_prob
Constraints reach every sampler through Trial.set_constraint (Optuna 5: feasible when all <= 0).
"""
from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from steeropt.search.optimizers.base import Candidate, Optimizer


class OptunaOptimizer(Optimizer):
    """ask/tell with an Optuna sampler; `name` picks it."""

    def ask(self, n: int = 1) -> list[Candidate]:
        left = self._remaining()
        out = []
        for _ in range(n if left is None else min(n, left)):
            trial = self._new_trial()
            out.append(Candidate(trial.number, dict(trial.params)))
        return out

    def _remaining(self) -> int | None:
        """How many more candidates there are (None: unbounded)."""
        return None


def n_waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


class GridOptimizer(OptunaOptimizer):
    """Every point of space.grid(grid_size), in a seeded shuffled order; exhausted after the last one."""

    name = "grid"
    settings_allowed = {"grid_size"}

    def _sampler(self):
        self.grid = self.space.grid(int(self.settings.get("grid_size", 14)))
        return _GridSampler(self.grid, seed=self.seed if self._salt is None else self._stream_seed())

    def _remaining(self) -> int:
        # Grid points already started or finished (FAIL included, as GridSampler counts them) are used up;
        # re-queued WAITING copies are handed out on top.
        total = math.prod(len(v) for v in self.grid.values())
        trials = self.study.get_trials(deepcopy=False)
        used = {t.system_attrs["grid_id"] for t in trials
                if "grid_id" in t.system_attrs and t.state != TrialState.WAITING}
        return total - len(used) + n_waiting(self.study)


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler without its after_trial, which calls study.stop() (an error outside study.optimize);
    GridOptimizer._remaining does that job for ask/tell."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


class RandomOptimizer(OptunaOptimizer):
    name = "random"

    def _sampler(self):
        return optuna.samplers.RandomSampler(seed=self._stream_seed())


class SobolOptimizer(OptunaOptimizer):
    """Scrambled Sobol points; the sequence index comes from the storage, so resume continues it."""

    name = "sobol"
    settings_allowed = {"scramble"}

    def _sampler(self):
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=bool(self.settings.get("scramble", True)),
                                          seed=self.seed if self._salt is None else self._stream_seed(),
                                          warn_independent_sampling=False)


class TPEOptimizer(OptunaOptimizer):
    name = "tpe"
    settings_allowed = {"n_startup_trials", "multivariate", "constant_liar"}

    def _sampler(self):
        s = self.settings
        return optuna.samplers.TPESampler(
            seed=self._stream_seed(), n_startup_trials=int(s.get("n_startup_trials", 10)),
            multivariate=bool(s.get("multivariate", True)), constant_liar=bool(s.get("constant_liar", True)))


class NSGA2Optimizer(OptunaOptimizer):
    name = "nsga2"
    settings_allowed = {"population_size", "mutation_prob", "crossover_prob"}

    def _sampler(self):
        s = self.settings
        return optuna.samplers.NSGAIISampler(
            seed=self._stream_seed(), population_size=int(s.get("population_size", 20)),
            mutation_prob=s.get("mutation_prob"), crossover_prob=float(s.get("crossover_prob", 0.9)))
