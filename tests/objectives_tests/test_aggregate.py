"""Aggregation: harmonic mean, missing handling, seeded bootstrap intervals."""
from __future__ import annotations

import numpy as np
import pytest

from steeropt.evaluation.objectives.aggregate import bootstrap_ci, harmonic_mean, mean, scalarize
from steeropt.evaluation.objectives.gates import audit_draw, gate_reasons
from steeropt.evaluation.objectives.config import Gate


def test_harmonic_mean():
    assert harmonic_mean({"a": 0.5, "b": 1.0}) == pytest.approx(2 / 3)
    assert harmonic_mean({"a": 0.0, "b": 1.0}) == 0.0
    assert harmonic_mean({"a": None, "b": 1.0}) is None  # any missing part -> missing
    assert harmonic_mean({"a": None, "b": 0.0}) is None


def test_mean_skips_missing():
    assert mean([1.0, None, 0.0]) == 0.5
    assert mean([None, None]) is None


def test_bootstrap_contains_mean_shrinks_with_n_and_is_seeded():
    rng = np.random.default_rng(1)
    small = list(rng.uniform(0, 1, 10))
    big = list(rng.uniform(0, 1, 400))
    for xs in (small, big):
        lo, hi = bootstrap_ci(xs, seed=3)
        assert lo <= np.mean(xs) <= hi
    w_small = np.subtract(*bootstrap_ci(small, seed=3)[::-1])
    w_big = np.subtract(*bootstrap_ci(big, seed=3)[::-1])
    assert w_big < w_small / 2
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)
    assert bootstrap_ci([None, 0.4]) == (0.4, 0.4)
    assert bootstrap_ci([None]) is None


def test_scalarize():
    assert scalarize({"c": 0.5, "h": 1.0}, "harmonic_mean", ["c", "h"], None) == pytest.approx(2 / 3)
    assert scalarize({"c": 0.5, "k": 2.0}, "weighted", ["c", "k"], {"k": -0.5}) == pytest.approx(-0.5)
    assert scalarize({"c": None, "h": 1.0}, "weighted", ["c", "h"], None) is None


def test_gates_fire_in_order_and_skip_missing_metrics():
    gates = [Gate(metric="rep_3", op=">", value=0.2, reason="collapsed"),
             Gate(metric="surprisal_drift", op=">", value=2.0, reason="off_manifold"),
             Gate(metric="degenerate", op=">", value=0.5, reason="degenerate")]
    assert gate_reasons({"rep_3": 0.5, "surprisal_drift": 3.0, "degenerate": 0.0}, gates) == ["collapsed", "off_manifold"]
    assert gate_reasons({"rep_3": 0.2, "surprisal_drift": None, "degenerate": 1.0}, gates) == ["degenerate"]
    assert gate_reasons({"rep_3": None}, gates) == []


def test_audit_draw_share_and_seed():
    filtered = list(range(1000))
    picked = audit_draw(filtered, 0.1, seed=0, key="plan-a")
    assert len(picked) == 100 and set(picked) <= set(filtered)
    assert picked == audit_draw(filtered, 0.1, seed=0, key="plan-a")  # seeded
    assert picked != audit_draw(filtered, 0.1, seed=1, key="plan-a")
    assert audit_draw(filtered, 0.0, seed=0, key="x") == []
    assert audit_draw([], 0.5, seed=0, key="x") == []
    # small trials: stochastic rounding keeps the expected share exact
    counts = [len(audit_draw(list(range(5)), 0.1, seed=s, key="k")) for s in range(2000)]
    assert np.mean(counts) == pytest.approx(0.5, abs=0.05)
