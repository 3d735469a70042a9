"""Ax on BoTorch beyond the shared suite: a real model fit with a constraint, pending trials of another
worker, inferred observation noise, and the Pareto frontier mapped back to Optuna trial numbers."""
from __future__ import annotations

import time

from optuna.trial import TrialState

from steeropt.search.optimizers import make_optimizer
from tests.optimizers_tests.test_conformance import CONSTRAINTS, OBJECTIVES, SPACE, problem


def test_ax_model_phase_with_pending_worker(tmp_path):
    kw = dict(space=SPACE, objectives=OBJECTIVES, constraints=CONSTRAINTS, storage=f"sqlite:///{tmp_path}/ax.db",
              study_name="ax", seed=3, settings={"initialization_budget": 3,
                                                 "objective_thresholds": {"concept": 0.0, "damage": 3.0}})
    opt = make_optimizer("botorch", **kw)
    for c in opt.ask(3):  # center + Sobol
        values, cons = problem(c.params)
        opt.tell(c.number, values, constraints=cons)
    worker = make_optimizer("ax", **kw)  # a second worker on the same study
    busy = worker.ask(1)[0]  # in flight: RUNNING in Optuna
    start = time.perf_counter()
    cands = opt.ask(2)  # one batched generation by the model
    took = time.perf_counter() - start
    assert len(cands) == 2 and [c.number for c in cands] == [4, 5]
    assert busy.number in opt._ax_index  # the other worker's trial is a pending point for the model
    ax_trial = opt._client._experiment.trials[opt._ax_index[busy.number]]
    assert ax_trial.status.is_running
    gs = opt._client._generation_strategy
    assert gs.current_node_name == "MBM"
    generator = gs.adapter.generator
    assert type(generator._acquisition.acqf).__name__ == "qLogNoisyExpectedHypervolumeImprovement"
    model = generator.surrogate.model
    assert type(model.likelihood).__name__ == "GaussianLikelihood"  # learned noise, not FixedNoise
    assert opt.fit_seconds[-1] <= took
    for c in [*cands, busy]:
        values, cons = problem(c.params)
        (opt if c in cands else worker).tell(c.number, values, constraints=cons)
    assert len(opt.study.get_trials(states=(TrialState.COMPLETE,))) == 6
    front = opt.pareto_frontier(use_model_predictions=False)
    assert front and all(0 <= number < 6 for number, _, _ in front)
