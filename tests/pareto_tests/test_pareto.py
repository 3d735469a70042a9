"""Pareto fronts and hypervolume with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from steeropt.errors import SteeroptError
from steeropt.report.pareto import (TrialPoint, hypervolume, hypervolume_curve, non_dominated, objective_reference,
                                    plausible_front, sure_front)

MAX2 = ["maximize", "maximize"]


def test_non_dominated_mixed_directions_and_feasibility():
    pts = [[1, 5], [2, 4], [1, 6], [3, 9], [2, 4]]
    assert non_dominated(pts, ["maximize", "minimize"]) == [1, 3, 4]  # ties kept; [1,5], [1,6] dominated
    assert non_dominated(pts, MAX2) == [3]
    # an infeasible point neither joins the front nor dominates anything
    assert non_dominated(pts, MAX2, feasible=[True, True, True, False, True]) == [1, 2, 4]
    assert non_dominated([], MAX2) == []


def test_non_dominated_known_front():
    pts = [[1, 1], [2, 0], [0, 2], [0.5, 0.5], [1, 0]]
    assert non_dominated(pts, MAX2) == [0, 1, 2]


def test_hypervolume_known_values():
    assert hypervolume([[1, 1]], [0, 0], MAX2) == 1.0
    # staircase: (1,3), (2,2), (3,1) over ref (0,0) -> 3 + 2 + 1 = 6
    assert hypervolume([[1, 3], [2, 2], [3, 1]], [0, 0], MAX2) == pytest.approx(6.0)
    # dominated and out-of-reference points add nothing
    assert hypervolume([[1, 3], [2, 2], [3, 1], [1, 1], [-1, 5]], [0, 0], MAX2) == pytest.approx(6.0)
    # minimisation mirrors maximisation
    assert hypervolume([[-1, -3], [-2, -2], [-3, -1]], [0, 0], ["minimize", "minimize"]) == pytest.approx(6.0)
    assert hypervolume([[1, 1]], [2, 0], ["minimize", "maximize"]) == pytest.approx(1.0)
    assert hypervolume([], [0, 0], MAX2) == 0.0
    assert hypervolume([[3]], [1], ["maximize"]) == 2.0


def test_dominating_front_has_larger_hypervolume():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, size=(12, 2))
    b = a + 0.1  # every point better in both
    ref = [0, 0]
    assert hypervolume(b, ref, MAX2) > hypervolume(a, ref, MAX2)
    assert hypervolume(np.vstack([a, b]), ref, MAX2) == pytest.approx(hypervolume(b, ref, MAX2))


def test_hypervolume_3d_matches_box_count():
    # Two boxes [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] overlap in the unit cube: 2 + 2 - 1 = 3
    assert hypervolume([[2, 1, 1], [1, 2, 1]], [0, 0, 0], ["maximize"] * 3) == pytest.approx(3.0)
    pts = [[1, 3], [2, 2], [3, 1]]
    lifted = [[x, y, 1.0] for x, y in pts]  # unit depth keeps the 2-D area
    assert hypervolume(lifted, [0, 0, 0], ["maximize"] * 3) == pytest.approx(hypervolume(pts, [0, 0], MAX2))


def test_hypervolume_curve_is_monotone_and_skips_failed_and_infeasible():
    trials = [TrialPoint(0, [1, 1]), TrialPoint(1, None), TrialPoint(2, [5, 5], feasible=False),
              TrialPoint(3, [2, 2]), TrialPoint(4, [0.5, 0.5])]
    curve = hypervolume_curve(trials, ref_point=[0, 0], directions=MAX2)
    assert curve == [(0, 1.0), (1, 1.0), (2, 1.0), (3, 4.0), (4, 4.0)]


def test_hypervolume_curve_reads_optuna_trials(tmp_path):
    import optuna

    study = optuna.create_study(directions=MAX2, storage=f"sqlite:///{tmp_path}/s.db")
    for i, (v, c) in enumerate([([1, 1], 0.0), ([3, 3], 1.0), ([2, 2], -1.0)]):
        t = study.ask()
        t.set_constraint("coherence", c)
        study.tell(t, v)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    curve = hypervolume_curve(study.get_trials(), ref_point=[0, 0], directions=MAX2)
    assert curve == [(0, 1.0), (1, 1.0), (2, 4.0), (3, 4.0)]


def test_front_under_uncertainty():
    lower = np.array([[1.0, 1.0], [0.0, 0.0], [0.5, 0.5], [3.0, 3.0]])
    upper = np.array([[2.0, 2.0], [0.4, 0.4], [1.5, 1.5], [3.0, 3.0]])
    d = MAX2
    # point 3 is surely best; nothing else can beat [3,3]
    assert sure_front(lower, upper, d) == [3]
    assert plausible_front(lower, upper, d) == [3]
    upper[0] = [4.0, 4.0]  # point 0 might now beat point 3
    assert plausible_front(lower, upper, d) == [0, 3]
    assert sure_front(lower, upper, d) == []  # 0 and 3 could each be dominated by the other
    # zero-width intervals reduce to the ordinary front
    pts = [[1, 3], [2, 2], [1, 1]]
    assert plausible_front(pts, pts, d) == sure_front(pts, pts, d) == non_dominated(pts, d) == [0, 1]
    # minimise: lower is the optimistic side
    assert plausible_front([[0.0], [1.0]], [[2.0], [1.5]], ["minimize"]) == [0, 1]
    assert plausible_front([[0.0], [1.0]], [[0.5], [1.5]], ["minimize"]) == [0]


def test_bad_input():
    with pytest.raises(SteeroptError, match="n x 2"):
        non_dominated([[1, 2, 3]], MAX2)
    with pytest.raises(SteeroptError, match="finite"):
        hypervolume([[float("nan"), 1]], [0, 0], MAX2)
    with pytest.raises(SteeroptError, match="directions"):
        non_dominated([[1, 2]], ["max", "min"])
    with pytest.raises(SteeroptError, match="lower <= upper"):
        plausible_front([[2, 2]], [[1, 1]], MAX2)


def test_hypervolume_matches_botorch_in_3_and_4_objectives():
    # Our one exact implementation against BoTorch's exact Hypervolume on random fronts (maximisation).
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    rng = np.random.default_rng(1)
    for m in (3, 4):
        for _ in range(3):
            pts = rng.uniform(0, 1, size=(25, m))
            want = Hypervolume(ref_point=torch.zeros(m, dtype=torch.float64)).compute(
                torch.as_tensor(pts[non_dominated(pts, ["maximize"] * m)], dtype=torch.float64))
            assert hypervolume(pts, [0.0] * m, ["maximize"] * m) == pytest.approx(float(want), rel=1e-9)


def test_objective_reference_per_objective():
    # Bug 9: the reference is the worst end of a bounded objective, else derived from the values.
    objs = [("concept", "maximize"), ("kl", "minimize"), ("surprisal_drift", "maximize"), ("rep_3", "minimize")]
    pts = [[0.2, 3.0, -1.0, 0.1], [0.6, 5.0, 1.0, 0.3]]
    # kl: 5 + 0.1 * (5 - 3); surprisal_drift: -1 - 0.1 * 2; concept (a score) and rep_3: [0, 1]
    assert objective_reference(objs, unit=["concept"], points=pts) == pytest.approx([0.0, 5.2, -1.2, 1.0])
    assert objective_reference([("kl", "maximize")], points=[[2.0]]) == [0.0]  # KL >= 0
    assert objective_reference([("kl", "minimize")], points=[[2.0]]) == pytest.approx([2.1])  # flat: range 1
    with pytest.raises(SteeroptError, match="'kl' .*no bounded worst value"):
        objective_reference([("kl", "minimize")])
    with pytest.raises(SteeroptError, match="'concept': value 1.5 lies outside its range"):
        objective_reference([("concept", "maximize")], unit=["concept"], points=[[1.5]])
    nan_ref = objective_reference([("kl", "minimize")], points=[])
    with pytest.raises(SteeroptError, match="not finite"):
        hypervolume([[1.0]], nan_ref, ["minimize"])


def test_unbounded_objective_keeps_every_point():
    # Bug 9: with the old [0, 1] reference every trial with KL > 1 added nothing (HV 0, silently).
    objs = [("concept", "maximize"), ("kl", "minimize")]
    pts = np.array([[0.3, 1.5], [0.6, 3.0], [0.9, 6.0]])
    ref = objective_reference(objs, unit=["concept"], points=pts)
    hv = hypervolume(pts, ref, [d for _, d in objs])
    assert hv > 0
    for i in range(len(pts)):  # every front point adds volume
        assert hypervolume(np.delete(pts, i, 0), ref, [d for _, d in objs]) < hv


def test_hypervolume_by_trial_is_the_curve_on_a_dataframe():
    import pandas as pd

    from steeropt.report.analysis import hypervolume_by_trial

    df = pd.DataFrame([{"number": 0, "state": "COMPLETE", "a": 1.0, "b": 1.0, "feasible": True},
                       {"number": 1, "state": "FAIL", "a": None, "b": None, "feasible": None},
                       {"number": 2, "state": "COMPLETE", "a": 5.0, "b": 5.0, "feasible": False},
                       {"number": 3, "state": "COMPLETE", "a": 2.0, "b": 2.0, "feasible": True}])
    assert hypervolume_by_trial(df, [("a", "maximize"), ("b", "maximize")], [0, 0]) == \
        [(0, 1.0), (1, 1.0), (2, 1.0), (3, 4.0)]


def test_calibrated_scores_have_the_fixed_unit_reference():
    """The quickstart's scores are calibrated maps onto label / 2: their hypervolume reference is the fixed 0,
    not one derived from the trials (which made the quickstart's and compare's hypervolumes depend on the data)."""
    from steeropt.report.pareto import objective_reference, unit_scores
    from steeropt.specs import build

    obj = build("objective", "quickstart")
    assert set(unit_scores(obj)) == {"concept", "coherency", "relevance"}
    assert objective_reference(obj.directions, unit=unit_scores(obj), points=[[0.3, 0.8], [0.5, 0.6]]) == [0.0, 0.0]
