"""Pareto fronts and hypervolume, for any mix of maximised and minimised objectives.

Points are `n x m` (n candidates, m objectives); `directions` has m entries "maximize"/"minimize".
Internally everything is turned into minimisation (maximised columns negated). The hypervolume reference
comes from `objective_reference` (one rule for Study, compare and the benchmark). A study's own Pareto set
is Optuna's `study.best_trials` (see optimizers.base); `non_dominated` is for value arrays that are not an
Optuna study (a trials DataFrame, bootstrap draws, interval bounds).

    >>> non_dominated([[1, 1], [2, 0], [0, 0]], ["maximize", "maximize"])
    [0, 1]
    >>> hypervolume([[1, 1]], [0, 0], ["maximize", "maximize"])
    1.0
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from steeropt.errors import SteeroptError


@dataclass(frozen=True)
class TrialPoint:
    """One trial for hypervolume_curve: its number, objective values (None if it failed) and feasibility."""

    number: int
    values: Sequence[float] | None
    feasible: bool = True


def _as_min(points: Any, directions: Sequence[str]) -> np.ndarray:
    """`n x m` array in minimisation form."""
    y = np.asarray(points, dtype=float)
    if y.size == 0:
        return y.reshape(0, len(directions))
    if y.ndim != 2 or y.shape[1] != len(directions):
        raise SteeroptError(f"points must be n x {len(directions)} (one column per direction), got shape {y.shape}")
    bad = [d for d in directions if d not in ("maximize", "minimize")]
    if bad:
        raise SteeroptError(f"directions must be 'maximize' or 'minimize', got {bad}")
    if not np.isfinite(y).all():
        raise SteeroptError("points must be finite (leave failed trials out instead of filling in a value)")
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return y * sign


def _dominated_by_any(y: np.ndarray, by: np.ndarray) -> np.ndarray:
    """`n` booleans: y[i] is weakly worse than some row of `by` in every column and strictly in one (minimisation)."""
    if len(by) == 0:
        return np.zeros(len(y), dtype=bool)
    le = (by[None, :, :] <= y[:, None, :]).all(-1)
    lt = (by[None, :, :] < y[:, None, :]).any(-1)
    return (le & lt).any(1)


def non_dominated(points: Any, directions: Sequence[str], feasible: Sequence[bool] | None = None) -> list[int]:
    """Indices of the feasible points no other feasible point dominates (ties are all kept)."""
    y = _as_min(points, directions)
    ok = np.ones(len(y), dtype=bool) if feasible is None else np.asarray(feasible, dtype=bool)
    if len(ok) != len(y):
        raise SteeroptError(f"feasible has {len(ok)} entries for {len(y)} points")
    keep = np.flatnonzero(ok)
    dominated = _dominated_by_any(y[keep], y[keep])
    return [int(i) for i in keep[~dominated]]


def hypervolume(points: Any, ref_point: Sequence[float], directions: Sequence[str]) -> float:
    """Volume dominated by `points` and bounded by `ref_point` (given in the objectives' own units; see
    `objective_reference`). Points not strictly better than the reference in every objective add nothing.
    Exact for any number of objectives (slicing along the last one; fine for the fronts of a study)."""
    ref_point = [float(r) for r in ref_point]
    if not all(math.isfinite(r) for r in ref_point):
        raise SteeroptError(f"hypervolume reference {ref_point} is not finite (no trial to derive it from?)")
    y = _as_min(points, directions)
    ref = _as_min([ref_point], directions)[0]
    y = y[(y < ref).all(1)] if len(y) else y
    return _hv(y, ref) if len(y) else 0.0


def _hv(y: np.ndarray, ref: np.ndarray) -> float:
    """Minimisation, every row strictly better than ref: sum of slabs between consecutive last-objective values."""
    if y.shape[1] == 1:
        return float(ref[0] - y[:, 0].min())
    y = y[np.argsort(y[:, -1], kind="stable")]
    total = 0.0
    for i in range(len(y)):
        top = y[i + 1, -1] if i + 1 < len(y) else ref[-1]
        if top > y[i, -1]:
            part = y[: i + 1, :-1]
            total += (top - y[i, -1]) * _hv(part[~_dominated_by_any(part, part)], ref[:-1])
    return total


def hypervolume_curve(trials: Sequence[Any], *, ref_point: Sequence[float], directions: Sequence[str]
                      ) -> list[tuple[int, float]]:
    """(trial number, hypervolume of the feasible completed trials up to it), one entry per trial, by number.

    `trials` are TrialPoint or Optuna FrozenTrial (COMPLETE ones count; feasible when all constraints <= 0).
    """
    pts = sorted((_point(t) for t in trials), key=lambda p: p.number)
    out, front, hv = [], [], 0.0
    for p in pts:
        if p.values is not None and p.feasible:
            front.append(list(p.values))
            front = [front[i] for i in non_dominated(front, directions)]
            hv = hypervolume(front, ref_point, directions)
        out.append((p.number, hv))
    return out


def _point(t: Any) -> TrialPoint:
    if isinstance(t, TrialPoint):
        return t
    state = getattr(getattr(t, "state", None), "name", "COMPLETE")
    values = t.values if state == "COMPLETE" else None
    feasible = all(v <= 0 for v in (getattr(t, "constraints", None) or {}).values())
    return TrialPoint(t.number, values, feasible)


def _bounds_max(lower: Any, upper: Any, directions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(optimistic, pessimistic) `n x m` bounds in maximisation form."""
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if lo.shape != hi.shape or (lo > hi).any():
        raise SteeroptError("lower and upper must have the same shape and lower <= upper")
    maxi = np.array([d == "maximize" for d in directions])
    _as_min(lo, directions)  # validates shape, directions, finiteness
    _as_min(hi, directions)
    return np.where(maxi, hi, -lo), np.where(maxi, lo, -hi)


def _front_under(strict: np.ndarray, loose: np.ndarray, feasible: Sequence[bool] | None) -> list[int]:
    # i survives when no other j has loose_j >= strict_i everywhere and > somewhere (maximisation form).
    keep = list(range(len(strict))) if feasible is None else [i for i, f in enumerate(feasible) if f]
    out = []
    for i in keep:
        others = loose[[j for j in keep if j != i]]
        if not ((others >= strict[i]).all(1) & (others > strict[i]).any(1)).any():
            out.append(i)
    return out


def plausible_front(lower: Any, upper: Any, directions: Sequence[str], feasible: Sequence[bool] | None = None
                    ) -> list[int]:
    """Points that may be on the front given per-point intervals [lower, upper] (`n x m`):
    no other point surely dominates them (its worst case beats their best case)."""
    opt, pes = _bounds_max(lower, upper, directions)
    return _front_under(opt, pes, feasible)


def sure_front(lower: Any, upper: Any, directions: Sequence[str], feasible: Sequence[bool] | None = None
               ) -> list[int]:
    """Points on the front whatever the true values inside the intervals: no other point could dominate them."""
    opt, pes = _bounds_max(lower, upper, directions)
    return _front_under(pes, opt, feasible)


# Values known to lie in [0, 1] besides the objective's own scores (judge rubrics and [0, 1] metrics), and
# values known to be >= 0. Everything else (surprisal_drift, preference, utility, scalar, ...) is unbounded.
UNIT_VALUES = ("hm", "rep_3", "rep_4", "distinct_1", "distinct_2", "keyword_hit", "keyword_rate", "degenerate",
               "degenerate_rate", "coherency_proxy", "filtered_share", "missing_share")
NONNEGATIVE_VALUES = ("kl", "surprisal", "n_tokens", "keyword_hits")


def value_bounds(names: Sequence[str], unit: Sequence[str] = ()) -> list[tuple[float, float]]:
    """Known range of each value: [0, 1] for `unit` names (the objective's scores) and UNIT_VALUES,
    [0, inf) for NONNEGATIVE_VALUES, (-inf, inf) otherwise."""
    unit = set(unit) | set(UNIT_VALUES)
    return [(0.0, 1.0) if n in unit else (0.0, math.inf) if n in NONNEGATIVE_VALUES else (-math.inf, math.inf)
            for n in names]


def unit_scores(objective_spec) -> list[str]:
    """The scores of an ObjectiveSpec known to lie in [0, 1]: judge rubrics, calibrated scores (a monotone map
    onto label / 2) and metrics in UNIT_VALUES (a score may also be e.g. `metric: kl`, which is not)."""
    return [k for k, s in objective_spec.scores.items()
            if s.rubric is not None or getattr(s, "calibrated", None) or s.metric in UNIT_VALUES]


def objective_reference(objectives: Sequence[tuple[str, str]], *, unit: Sequence[str] = (), points: Any = None,
                        margin: float = 0.1) -> list[float]:
    """The hypervolume reference, one value per (name, direction) objective.

    An objective whose range has a finite worst end (0 to maximise a [0, 1] score, 1 to minimise it; 0 to
    maximise KL) uses that end: fixed, so comparable across studies. Otherwise (KL or surprisal to minimise,
    surprisal_drift, preference, ...) it is derived from `points` (`n x m`, the trials' values): the worst
    value pushed out by `margin` of the range (taken as 1 if flat), so no point is dropped; comparable only among
    the points it was derived from (compare derives it from all compared studies together), and NaN while
    there is no point (hypervolume then refuses it). A point outside an objective's known range is an error.
    """
    names, dirs = [n for n, _ in objectives], [d for _, d in objectives]
    _as_min(np.zeros((0, len(dirs))), dirs)  # validates directions
    y = None if points is None else np.asarray(points, dtype=float).reshape(-1, len(names))
    if y is not None and not np.isfinite(y).all():
        raise SteeroptError("points must be finite (leave failed trials out instead of filling in a value)")
    ref = []
    for j, ((lo, hi), name, d) in enumerate(zip(value_bounds(names, unit), names, dirs)):
        col = y[:, j] if y is not None and len(y) else None
        if col is not None and ((col < lo) | (col > hi)).any():
            bad = col[(col < lo) | (col > hi)][0]
            raise SteeroptError(f"objective {name!r}: value {bad:g} lies outside its range [{lo:g}, {hi:g}]; "
                                "the hypervolume reference would drop it")
        worst = lo if d == "maximize" else hi
        if math.isfinite(worst):
            ref.append(float(worst))
        elif col is None:
            if points is None:
                raise SteeroptError(f"objective {name!r} ({d}) has no bounded worst value: pass the trials' "
                                    "values (points) to derive its hypervolume reference, or a reference")
            ref.append(math.nan)
        else:
            span = float(np.ptp(col)) or 1.0
            ref.append(float(col.min() - margin * span if d == "maximize" else col.max() + margin * span))
    return ref
