"""Strengths in KL units (search.dose_units) on the real embedded model: the calibrated α gives the asked dose."""
from __future__ import annotations

import pytest

from steeropt.errors import SteeroptError
from steeropt.search.spaces import SearchSpaceSpec


def _space(controller="add", unit="kl", high=1.0, **extra):
    return SearchSpaceSpec.model_validate({"name": "dose", "sites": [
        {"layer": 4, "vector": "wedding", "controller": controller, "alpha": {"low": 0.0, "high": high, "unit": unit},
         **extra}]})


def test_calibrated_alpha_gives_the_asked_kl(embedded, wedding_vectors, tmp_path, monkeypatch):
    from steeropt.search.dose_units import calibrate, measure_kl, neutral_rows

    monkeypatch.setenv("STEEROPT_CACHE_DIR", str(tmp_path))
    space = _space()
    maps = calibrate(embedded, wedding_vectors, space)
    m = maps["alpha_l4_wedding"]
    assert m.alpha == sorted(m.alpha) and m.kl == sorted(m.kl) and m.alpha[0] > 0
    sites = space.sites
    rows = neutral_rows(embedded)
    targets = [0.1, 0.4, 0.8]
    alphas = [space.materialize({"alpha_l4_wedding": t}).alphas[0] for t in targets]
    measured = measure_kl(embedded, wedding_vectors, sites, alphas, rows)
    for t, k in zip(targets, measured):
        # the map interpolates between bisected points in √KL: within 10% of the asked dose (or 0.02 nats)
        assert k == pytest.approx(t, rel=0.1, abs=0.02)
    assert space.materialize({"alpha_l4_wedding": 0.0}).alphas[0] == 0.0  # zero dose is unsteered
    # locally quadratic: a quarter of the dose needs about half the α
    a1, a4 = (space.materialize({"alpha_l4_wedding": t}).alphas[0] for t in (0.1, 0.4))
    assert a4 / a1 == pytest.approx(2.0, rel=0.25)
    # cached: a second space calibrates from the file, with the same map
    files = list((tmp_path / "dose").glob("*.json"))
    assert len(files) == 1
    again = calibrate(embedded, wedding_vectors, _space())
    assert again["alpha_l4_wedding"].alpha == m.alpha


def test_kl_units_are_refused_where_they_mean_nothing(embedded, wedding_vectors):
    from steeropt.search.dose_units import calibrate

    with pytest.raises(SteeroptError, match="clamp has no zero-dose strength"):
        calibrate(embedded, wedding_vectors, _space(controller="clamp"))
    with pytest.raises(ValueError, match="low >= 0"):
        SearchSpaceSpec.model_validate({"name": "d", "sites": [
            {"layer": 4, "vector": "wedding", "alpha": {"low": -1.0, "high": 1.0, "unit": "kl"}}]})
    with pytest.raises(SteeroptError, match="needs its α ↔ KL map"):
        _space().materialize({"alpha_l4_wedding": 0.5})  # not calibrated: never a silent α = KL
