"""Dose-response fits, sweet spots and the fitted choice (report.dose): pure logic on points drawn from known curves."""
from __future__ import annotations

import numpy as np
import pytest

from steeropt.report.dose import DosePoint, family_curves, fitted_choice, sweet_spot
from scipy.special import expit


def _truth(x):
    return {"concept": 0.1 + 0.8 * expit(20 * (x - 0.3)),   # rises around α = 0.3
            "coherency": 0.9 - 0.8 * expit(25 * (x - 0.45)),  # breaks around α = 0.45
            "relevance": 0.85 - 0.7 * expit(25 * (x - 0.4))}


def _points(seed=0, n_prompts=9, xs=np.linspace(0, 0.6, 13)):
    """Trials at xs, each the mean of n_prompts 0/1 samples drawn from the true rates (Wilson-like intervals)."""
    rng = np.random.default_rng(seed)
    pts = []
    for i, x in enumerate(xs):
        vals, ivs = {}, {}
        for a, p in _truth(x).items():
            m = rng.binomial(n_prompts, p) / n_prompts
            half = 1.96 * np.sqrt(max(m * (1 - m), 0.05) / n_prompts)
            vals[a], ivs[a] = m, (max(m - half, 0.0), min(m + half, 1.0))
        pts.append(DosePoint(i, float(x), n_prompts, vals, ivs))
    return pts


def test_fit_tracks_the_true_curve_and_its_band_covers_it():
    curves = family_curves(_points(n_prompts=20), ("concept", "coherency", "relevance"), n_boot=120)
    for a, c in curves.items():
        truth = _truth(c.x)[a]
        # 20 samples per trial: on average within 0.1 of the truth, the midpoint of the transition within
        # 0.05 in α, the band covering the truth over most of the range (not at the steep transition itself)
        assert np.mean(np.abs(c.y - truth)) < 0.1, a
        mid_fit = c.x[np.argmin(np.abs(c.y - (c.y[0] + c.y[-1]) / 2))]
        mid_true = c.x[np.argmin(np.abs(truth - (truth[0] + truth[-1]) / 2))]
        assert abs(mid_fit - mid_true) < 0.05, a
        assert np.mean((c.lo - 0.02 <= truth) & (truth <= c.hi + 0.02)) > 0.8, a
        assert np.all(c.lo <= c.y + 1e-9) and np.all(c.y <= c.hi + 1e-9)
    assert curves["concept"].y[-1] > curves["concept"].y[0]  # monotone up
    assert curves["coherency"].y[-1] < curves["coherency"].y[0]  # monotone down
    assert np.all(np.diff(curves["coherency"].y) <= 1e-9)


def test_one_lucky_trial_moves_the_curve_a_little_not_the_choice():
    pts = _points(seed=1)
    floors = {"coherency": 0.6, "relevance": 0.6}
    base = fitted_choice(family_curves(pts, ("concept", "coherency", "relevance"), n_boot=60), concept="concept",
                         floors=floors)
    # a lucky draw: the trial at α = 0.55 (broken text) reports perfect coherency and relevance
    pts[-2].values.update(coherency=1.0, relevance=1.0)
    lucky = fitted_choice(family_curves(pts, ("concept", "coherency", "relevance"), n_boot=60), concept="concept",
                          floors=floors)
    assert abs(lucky["x"] - base["x"]) < 0.08
    assert lucky["x"] < 0.5  # the broken region is not chosen because one trial looked good there


def test_sweet_spot_has_intervals_for_its_ends_and_width():
    curves = family_curves(_points(seed=2, n_prompts=30), ("concept", "coherency", "relevance"), n_boot=150)
    spot = sweet_spot(curves, concept="concept", target=0.5, floors={"coherency": 0.6, "relevance": 0.6})
    lo, hi = spot["interval"]
    # truth: concept >= 0.5 from α = 0.3; relevance >= 0.6 until α ≈ 0.38
    assert 0.24 <= lo <= 0.36 and 0.32 <= hi <= 0.45
    (lo_lo, lo_hi), (hi_lo, hi_hi) = spot["interval_ci"]
    assert lo_lo <= lo <= lo_hi and hi_lo <= hi <= hi_hi
    assert spot["width"] == pytest.approx(hi - lo)
    assert spot["width_ci"][0] <= spot["width"] <= spot["width_ci"][1] + 1e-9
    assert 0.0 <= spot["p_empty"] < 0.5


def test_empty_sweet_spot_says_which_condition_empties_it():
    curves = family_curves(_points(seed=3, n_prompts=30), ("concept", "coherency", "relevance"), n_boot=60)
    spot = sweet_spot(curves, concept="concept", target=0.5, floors={"coherency": 0.95, "relevance": 0.6})
    assert spot["interval"] is None and spot["width"] == 0.0
    assert "coherency" in spot["reason"] and spot["p_empty"] > 0.5
    spot = sweet_spot(curves, concept="concept", target=0.99, floors={"coherency": 0.6})
    assert spot["interval"] is None and "never reaches 0.99" in spot["reason"]


def test_fitted_choice_takes_the_smallest_strength_on_the_best_plateau():
    curves = family_curves(_points(seed=4, n_prompts=30), ("concept", "coherency", "relevance"), n_boot=100)
    ch = fitted_choice(curves, concept="concept", floors={"coherency": 0.6, "relevance": 0.6})
    c = curves["concept"]
    assert ch["x"] <= ch["best_x"]
    best_i = int(np.argmin(np.abs(c.x - ch["best_x"])))
    assert c.at(ch["x"])[0] >= c.y[best_i] - 0.02 - 1e-9
    # the robust choice keeps the constraint curves' lower band at τ
    assert ch["robust"] and curves["relevance"].at(ch["x"])[1] >= 0.6 - 1e-9
    # nothing meets the floors: no choice
    assert fitted_choice(curves, concept="concept", floors={"coherency": 0.99}) is None


def test_too_few_points_give_no_curve():
    pts = _points()[:2]
    assert family_curves(pts, ("concept",)) == {}


def test_plateau_ties_go_to_the_lowest_measured_dose_not_the_lowest_alpha():
    """Clamp at α = 0 ablates: its smallest change is where the target meets the natural projection. With a
    flat concept over the feasible range, the tie goes to the trial strength of lowest KL."""
    xs = np.linspace(0, 1.2, 9)
    pts = [DosePoint(i, float(x), 30, {"concept": 0.3, "coherency": 0.9 if x < 1.0 else 0.2}, {})
           for i, x in enumerate(xs)]
    curves = family_curves(pts, ("concept", "coherency"), n_boot=40)
    kl = 2.0 * (xs - 0.45) ** 2  # V-shaped around the natural projection, as clamp's
    ch = fitted_choice(curves, concept="concept", floors={"coherency": 0.6}, dose=(xs, kl))
    assert abs(ch["x"] - 0.45) < 0.08
    assert fitted_choice(curves, concept="concept", floors={"coherency": 0.6})["x"] == 0.0  # without a dose: α
