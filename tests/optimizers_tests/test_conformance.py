"""Every optimizer through the same suite: a cheap 2-objective problem with one constraint, on real
Optuna sqlite storage. Ax runs only in its Sobol phase here (model fits are tested in test_ax.py)."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from steeropt.errors import SteeroptError
from steeropt.search.optimizers import make_optimizer
from steeropt.search.spaces import SearchSpaceSpec

NAMES = ["grid", "random", "sobol", "tpe", "nsga2", "gp", "botorch"]
OBJECTIVES = [("concept", "maximize"), ("damage", "minimize")]
CONSTRAINTS = [("coherence", ">=", 0.5)]
SPACE = SearchSpaceSpec.model_validate({"name": "synthetic", "sites": [
    {"layer": 4, "vector": "w", "alpha": {"low": 0.0, "high": 1.5}},
    {"layer": 8, "vector": "w", "alpha": {"low": 0.0, "high": 1.5}}]})
SETTINGS = {"grid": {"grid_size": 4}, "tpe": {"n_startup_trials": 4}, "nsga2": {"population_size": 4},
            "gp": {"n_startup_trials": 2},  # the GP proposes from the third trial on
            "botorch": {"initialization_budget": 20}}


def problem(params: dict) -> tuple[dict, dict]:
    a, b = params["alpha_l4_w"], params["alpha_l8_w"]
    return {"concept": a + b, "damage": a * a + 0.5 * b}, {"coherence": 2.0 - a - b}


def make(name, tmp_path, seed=0, study="s", db="study.db"):
    return make_optimizer(name, space=SPACE, objectives=OBJECTIVES, constraints=CONSTRAINTS,
                          storage=f"sqlite:///{tmp_path / db}", study_name=study, seed=seed,
                          settings=SETTINGS.get(name))


def run(opt, n_batches=2, q=2):
    told = []
    for _ in range(n_batches):
        for c in opt.ask(q):
            values, cons = problem(c.params)
            opt.tell(c.number, values, constraints=cons, user_attrs={"family": "neutral"})
            told.append((c.number, c.params, values, cons))
    return told


@pytest.mark.parametrize("name", NAMES)
def test_ask_tell_lands_in_storage(name, tmp_path):
    opt = make(name, tmp_path)
    told = run(opt)
    assert [n for n, *_ in told] == [0, 1, 2, 3]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    for t, (number, params, values, cons) in zip(trials, told):
        assert t.number == number and t.params == pytest.approx(params)
        assert t.values == pytest.approx([values["concept"], values["damage"]])
        assert t.constraints["coherence"] == pytest.approx(0.5 - cons["coherence"])  # <= 0 is feasible
        assert t.user_attrs["constraint_values"]["coherence"] == pytest.approx(cons["coherence"])
        assert t.user_attrs["family"] == "neutral"
        assert set(t.params) == {"alpha_l4_w", "alpha_l8_w"}
        SPACE.materialize(t.params)  # proposals are valid points of the space
    assert study.user_attrs["steeropt"]["optimizer"] == opt.name
    feasible = [t.number for t in trials if t.constraints["coherence"] <= 0]
    assert {t.number for t in opt.best} <= set(feasible)


@pytest.mark.parametrize("name", NAMES)
def test_resume_continues(name, tmp_path):
    first = run(make(name, tmp_path), n_batches=1)
    again = make(name, tmp_path)
    second = run(again, n_batches=1)
    assert [n for n, *_ in second] == [2, 3]
    assert len(again.study.get_trials(states=(TrialState.COMPLETE,))) == 4
    old = {tuple(sorted(p.items())) for _, p, *_ in first}
    assert not old & {tuple(sorted(p.items())) for _, p, *_ in second}  # nothing redone
    with pytest.raises(SteeroptError, match="exists with different objectives"):
        make_optimizer(name, space=SPACE, objectives=[("concept", "maximize")], constraints=CONSTRAINTS,
                       storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s", seed=0,
                       settings=SETTINGS.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_proposals(name, tmp_path):
    a = run(make(name, tmp_path, seed=7, db="a.db"))
    b = run(make(name, tmp_path, seed=7, db="b.db"))
    assert [p for _, p, *_ in a] == [p for _, p, *_ in b]
    if name != "grid":  # a 16-point grid may start the same under two seeds
        c = run(make(name, tmp_path, seed=8, db="c.db"))
        assert [p for _, p, *_ in a] != [p for _, p, *_ in c]


@pytest.mark.parametrize("name", NAMES)
def test_failures_are_recorded_with_reason(name, tmp_path):
    opt = make(name, tmp_path)
    c0, c1, c2, c3 = opt.ask(4)
    opt.tell(c0.number, None, failed_reason="judge unreachable")
    opt.tell(c1.number, {"concept": 1.0, "damage": None}, constraints={"coherence": 1.0})
    opt.tell(c2.number, {"concept": 1.0, "damage": 0.1}, constraints={})  # constraint metric missing
    values, cons = problem(c3.params)
    opt.tell(c3.number, {**values, **cons})  # constraint metrics may come inside values
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    t0, t1, t2, t3 = study.get_trials()
    assert (t0.state, t0.user_attrs["failed_reason"]) == (TrialState.FAIL, "judge unreachable")
    assert t1.state == TrialState.FAIL and "damage" in t1.user_attrs["failed_reason"]
    assert t1.user_attrs["values_at_failure"] == {"concept": 1.0, "damage": None}
    assert t2.state == TrialState.FAIL and "coherence" in t2.user_attrs["failed_reason"]
    assert t3.state == TrialState.COMPLETE
    with pytest.raises(SteeroptError, match="not RUNNING"):
        opt.tell(c0.number, None, failed_reason="again")
    more = opt.ask(1)  # the optimizer carries on after failures
    assert more and more[0].number == 4


@pytest.mark.parametrize("name", NAMES)
def test_recover_stale_requeues_same_params(name, tmp_path):
    crashed = make(name, tmp_path)
    lost = crashed.ask(2)
    crashed.close()  # process "dies": its trials stay RUNNING
    fresh = make(name, tmp_path)
    assert fresh.recover_stale(heartbeat=False) == [c.number for c in lost]
    study = fresh.study
    assert all(study.trials[c.number].state == TrialState.FAIL for c in lost)
    assert "stale" in study.trials[lost[0].number].user_attrs["failed_reason"]
    again = fresh.ask(2)
    assert [c.params for c in again] == [c.params for c in lost]  # re-queued first, same params
    assert fresh.recover_stale(heartbeat=False) == []  # its own pending trials are not stale
    run(fresh, n_batches=1)


def test_heartbeat_recovery(tmp_path):
    import time

    settings = {"heartbeat_interval": 1, "grace_period": 2}
    kw = dict(space=SPACE, objectives=OBJECTIVES, constraints=CONSTRAINTS, storage=f"sqlite:///{tmp_path}/h.db",
              study_name="h", seed=0, settings=settings)
    worker = make_optimizer("random", **kw)
    alive, dead = worker.ask(2)
    worker._release(dead.number)  # only this trial's heartbeat stops, as when its process dies
    time.sleep(3.5)
    other = make_optimizer("random", **kw)
    assert other.recover_stale() == [dead.number]  # the live heartbeat keeps `alive` RUNNING
    assert other.study.trials[alive.number].state == TrialState.RUNNING
    requeued = other.ask(1)[0]
    assert requeued.params == dead.params
    values, cons = problem(alive.params)
    worker.tell(alive.number, values, constraints=cons)
    worker.close()


def test_grid_is_exhausted(tmp_path):
    space = SearchSpaceSpec.model_validate({"name": "g", "sites": [
        {"layer": 4, "vector": "w", "alpha": {"low": 0.0, "high": 1.0}}]})
    opt = make_optimizer("grid", space=space, objectives=[("concept", "maximize")], storage=f"sqlite:///{tmp_path}/g.db",
                         study_name="g", seed=0, settings={"grid_size": 3})
    got = opt.ask(5)
    assert sorted(c.params["alpha_l4_w"] for c in got) == [0.0, 0.5, 1.0]
    for c in got:
        opt.tell(c.number, {"concept": c.params["alpha_l4_w"]})
    assert opt.ask(1) == []
    assert opt.best[0].params == {"alpha_l4_w": 1.0}


def test_make_optimizer_errors(tmp_path):
    url = f"sqlite:///{tmp_path}/e.db"
    with pytest.raises(SteeroptError, match="unknown optimizer 'cma'"):
        make_optimizer("cma", space=SPACE, objectives=OBJECTIVES, storage=url, study_name="e")
    with pytest.raises(SteeroptError, match="unknown settings"):
        make_optimizer("tpe", space=SPACE, objectives=OBJECTIVES, storage=url, study_name="e", settings={"nope": 1})
    with pytest.raises(SteeroptError, match="direction"):
        make_optimizer("tpe", space=SPACE, objectives=[("a", "up")], storage=url, study_name="e")
    with pytest.raises(SteeroptError, match="SQLAlchemy URL"):
        make_optimizer("tpe", space=SPACE, objectives=OBJECTIVES, storage="study.db", study_name="e")
    # the contract's spelling (storage_url, settings as keywords) works too
    opt = make_optimizer("tpe", space=SPACE, objectives=OBJECTIVES, storage_url=url, study_name="e",
                         n_startup_trials=2)
    assert opt.settings == {"n_startup_trials": 2}
