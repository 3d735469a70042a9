"""The intervals of aggregate.mean_ci where reports use them: pick's robust rule and compare's hypervolume band."""
from __future__ import annotations

import numpy as np
import pandas as pd

from steeropt.evaluation.objectives.aggregate import mean_ci
from steeropt.report.compare import hypervolume_band
from steeropt.report.pick_result import Candidate
from steeropt.report.pick import choose

OBJ = [("concept", "maximize"), ("coherency", "maximize")]
UNIT = ("concept", "coherency")  # scores in [0, 1]; reference (0, 0): their worst ends


def _cand(trial, concept, coherency):
    return Candidate(trial, {"a": float(trial)}, float(np.mean(concept)), mean_ci(concept, unit=True),
                     float(np.mean(coherency)), mean_ci(coherency, unit=True), None, 1, float(trial))


def test_four_lucky_samples_are_not_robust():
    """4 of 4 coherent samples do not prove coherency >= 0.7 (Wilson lower end 0.51); 30 samples at ~0.8 do.

    With the former bootstrap, 4/4 gave the zero-width interval (1, 1) and won as 'robust'."""
    rng = np.random.default_rng(0)
    lucky = _cand(1, [1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    steady = _cand(2, list(rng.uniform(0.3, 0.5, 30)), list(rng.uniform(0.75, 0.85, 30)))
    assert lucky.coherency_ci[0] < 0.7 < steady.coherency_ci[0]
    pick = choose([lucky, steady], tau=0.7)
    assert pick.robust and pick.chosen.trial == 2


def test_band_is_wide_where_the_interval_is_unknown():
    """A trial recorded without an interval (a single continuous sample) is uncertain, not exact."""
    df = pd.DataFrame([{"number": 0, "state": "COMPLETE", "feasible": True, "concept": 0.5, "coherency": 0.5,
                        "concept.ci_low": np.nan, "concept.ci_high": np.nan,
                        "coherency.ci_low": np.nan, "coherency.ci_high": np.nan}])
    lo, hi = hypervolume_band(df, OBJ, [0.0, 0.0], n=200, unit=UNIT)
    assert hi - lo > 0.3  # hypervolume 0.25 at the point; anything from ~0 to ~0.8 is plausible


def test_band_follows_lopsided_intervals():
    """Wilson at 4/4 is (0.51, 1): the band reaches down, never up past the value."""
    lo_c, hi_c = mean_ci([1.0] * 4, unit=True)
    df = pd.DataFrame([{"number": 0, "state": "COMPLETE", "feasible": True, "concept": 1.0, "coherency": 1.0,
                        "concept.ci_low": lo_c, "concept.ci_high": hi_c,
                        "coherency.ci_low": lo_c, "coherency.ci_high": hi_c}])
    lo, hi = hypervolume_band(df, OBJ, [0.0, 0.0], n=400, unit=UNIT)
    assert abs(hi - 1.0) < 1e-12 and lo < 0.6  # hypervolume of (1, 1) is 1; (0.51, 0.51) would be 0.26
