"""Ax on BoTorch beyond the shared suite: a real model fit with a constraint, pending trials of another
worker, observation noise from each trial's recorded interval, the Pareto frontier mapped back to Optuna
trial numbers, and what Ax does with a constraint on an objective (Bug 10)."""
from __future__ import annotations

import time

import pytest
from optuna.trial import TrialState, create_trial

from steeropt.errors import SteeroptError
from steeropt.search.optimizers import distributions, make_optimizer
from tests.optimizers_tests.test_conformance import CONSTRAINTS, OBJECTIVES, SPACE, problem

Z95 = 2 * 1.959964  # width of a 95% normal interval in SEMs


def intervals(values: dict, half: float) -> dict:
    return {k: [v - half, v + half] for k, v in values.items()}


def test_ax_model_phase_with_pending_worker(tmp_path):
    kw = dict(space=SPACE, objectives=OBJECTIVES, constraints=CONSTRAINTS, storage=f"sqlite:///{tmp_path}/ax.db",
              study_name="ax", seed=3, settings={"initialization_budget": 3,
                                                 "objective_thresholds": {"concept": 0.0, "damage": 3.0}})
    opt = make_optimizer("botorch", **kw)
    for c in opt.ask(3):  # center + Sobol
        values, cons = problem(c.params)
        opt.tell(c.number, values, constraints=cons, user_attrs={"intervals": intervals({**values, **cons}, 0.1)})
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
    # the SEM of every told metric reached Ax (interval half-width 0.1 -> SEM 0.2 / 3.92) ...
    data = opt._client._experiment.lookup_data().df
    assert set(data["metric_name"]) == {"concept", "damage", "coherence"}
    assert data["sem"].to_numpy() == pytest.approx(0.2 / Z95)
    # ... and the GPs use it as fixed noise instead of inferring a noise term
    model = generator.surrogate.model  # one batched GP, or a ModelListGP when metrics differ
    likelihoods = {type(m.likelihood).__name__ for m in getattr(model, "models", [model])}
    assert likelihoods == {"FixedNoiseGaussianLikelihood"}
    assert opt.fit_seconds[-1] <= took
    for c in [*cands, busy]:
        values, cons = problem(c.params)
        (opt if c in cands else worker).tell(c.number, values, constraints=cons,
                                             user_attrs={"intervals": intervals({**values, **cons}, 0.1)})
    assert len(opt.study.get_trials(states=(TrialState.COMPLETE,))) == 6
    # Ax's observed front, mapped back to Optuna numbers, is Optuna's own front (feasible, non-dominated)
    front = opt.pareto_frontier(use_model_predictions=False)
    assert sorted(n for n, _, _ in front) == sorted(t.number for t in opt.best)


def test_sem_comes_from_the_interval_with_a_floor(tmp_path):
    opt = make_optimizer("botorch", space=SPACE, objectives=OBJECTIVES, constraints=CONSTRAINTS,
                         storage=f"sqlite:///{tmp_path}/ax.db", study_name="sem", settings={"sem_floor": 0.02})

    def trial(values, cons, ivs):
        return create_trial(state=TrialState.COMPLETE, params={"alpha_l4_w": 0.1, "alpha_l8_w": 0.2},
                            distributions=distributions(SPACE), values=[values["concept"], values["damage"]],
                            user_attrs={"constraint_values": cons, "intervals": ivs})

    wide = opt._raw_data(trial({"concept": 1.0, "damage": 0.5}, {"coherence": 0.7},
                               {"concept": [0.8, 1.2], "damage": [0.5, 0.5]}))
    assert wide["concept"] == pytest.approx((1.0, 0.4 / Z95))
    assert wide["damage"] == (0.5, 0.02)  # a zero-width interval is floored, not taken as exact
    assert wide["coherence"] == 0.7  # no interval for it: a bare mean, Ax infers its noise
    # a trial missing an interval another trial had gets the largest SEM seen (BoTorch refuses a mix)
    later = opt._raw_data(trial({"concept": 0.9, "damage": 0.4}, {"coherence": 0.6}, {}))
    assert later == {"concept": (0.9, pytest.approx(0.4 / Z95)), "damage": (0.4, 0.02), "coherence": 0.6}


CONSTRAINED_OBJECTIVE = [("concept", "maximize"), ("coherence", "maximize")]


def test_constraint_on_an_objective_becomes_its_threshold(tmp_path):
    # Bug 10: Ax turns a constraint on an objective into that objective's threshold (no feasibility
    # model). Say so, set it up that way explicitly, and check the model then favours the feasible front.
    opt = make_optimizer("botorch", space=SPACE, objectives=CONSTRAINED_OBJECTIVE,
                         constraints=[("coherence", ">=", 0.5)], storage=f"sqlite:///{tmp_path}/ax.db",
                         study_name="on-objective", seed=0, settings={"initialization_budget": 4})
    assert opt.thresholds == {"coherence": 0.5}
    sobol, model = [], []
    for batch in range(4):
        for c in opt.ask(2):
            values, cons = problem(c.params)
            opt.tell(c.number, {"concept": values["concept"], "coherence": cons["coherence"]})
            (sobol if batch < 2 else model).append(cons["coherence"])
    cfg = opt._client._experiment.optimization_config
    assert [str(t) for t in cfg.objective_thresholds] == ["OutcomeConstraint(coherence >= 0.5)"]
    assert cfg.outcome_constraints == []  # no separate constraint model
    # concept = a + b and coherence = 2 - a - b trade off exactly: every point is on the unconstrained
    # front, and only the threshold makes a + b > 1.5 worthless. The space-filling points break it, the
    # model's proposals (4 of them, after 4 observations) all respect it.
    assert min(sobol) < 0.5
    assert min(model) >= 0.5 - 1e-6


@pytest.mark.parametrize("objectives, constraints, settings, match", [
    ([("coherence", "maximize")], [("coherence", ">=", 0.5)], {}, "on the only objective"),
    (CONSTRAINED_OBJECTIVE, [("coherence", "<=", 0.9)], {}, "needs '>='"),
    (CONSTRAINED_OBJECTIVE, [("coherence", ">=", 0.5)], {"objective_thresholds": {"coherence": 0.3}},
     "both a constraint"),
])
def test_constraint_on_an_objective_errors(tmp_path, objectives, constraints, settings, match):
    with pytest.raises(SteeroptError, match=match):
        make_optimizer("botorch", space=SPACE, objectives=objectives, constraints=constraints, settings=settings,
                       storage=f"sqlite:///{tmp_path}/ax.db", study_name="bad")
