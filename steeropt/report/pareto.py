"""Pareto fronts and hypervolume, for any mix of maximised and minimised objectives.

Points are `n x m` (n candidates, m objectives); `directions` has m entries "maximize"/"minimize".
Internally everything is turned into minimisation (maximised columns negated).

    >>> non_dominated([[1, 1], [2, 0], [0, 0]], ["maximize", "maximize"])
    [0, 1]
    >>> hypervolume([[1, 1]], [0, 0], ["maximize", "maximize"])
    1.0
"""
from __future__ import annotations

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
    """Volume dominated by `points` and bounded by `ref_point` (given in the objectives' own units).
    Points not strictly better than the reference in every objective add nothing.
    Exact sweep for 1-2 objectives, botorch's exact `Hypervolume` for more."""
    y = _as_min(points, directions)
    ref = _as_min([list(ref_point)], directions)[0]
    y = y[(y < ref).all(1)] if len(y) else y
    if len(y) == 0:
        return 0.0
    y = y[non_dominated(y, ["minimize"] * y.shape[1])]
    if y.shape[1] == 1:
        return float(ref[0] - y[:, 0].min())
    if y.shape[1] == 2:
        y = y[np.argsort(y[:, 0])]  # x ascending -> y descending on a front
        x_next = np.append(y[1:, 0], ref[0])
        return float(((x_next - y[:, 0]) * (ref[1] - y[:, 1])).sum())
    import torch
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    hv = Hypervolume(ref_point=-torch.as_tensor(ref, dtype=torch.float64))  # botorch maximises
    return float(hv.compute(-torch.as_tensor(y, dtype=torch.float64)))


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


def reference_point(points: Any, directions: Sequence[str], margin: float = 0.1) -> list[float]:
    """A default reference: each objective's worst value, pushed out by `margin` of its range (1 if flat)."""
    y = _as_min(points, directions)
    if len(y) == 0:
        raise SteeroptError("reference_point needs at least one point")
    worst, span = y.max(0), np.ptp(y, 0)
    ref = worst + margin * np.where(span > 0, span, 1.0)
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return [float(v) for v in ref * sign]

