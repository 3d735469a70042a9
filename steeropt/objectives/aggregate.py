"""Aggregation helpers: means that skip missing values, per-sample harmonic mean, seeded bootstrap.

Missing values are None and are never replaced by 0: they are left out of means and counted apart.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the present values; None if none is present."""
    xs = [v for v in values if v is not None]
    return float(np.mean(xs)) if xs else None


def harmonic_mean(parts: Mapping[str, float | None] | Sequence[float | None]) -> float | None:
    """Harmonic mean of scores in [0, 1] (AxBench style). Any missing part -> None; any 0 part -> 0."""
    xs = list(parts.values()) if isinstance(parts, Mapping) else list(parts)
    if not xs or any(x is None for x in xs):
        return None
    if any(x <= 0 for x in xs):
        return 0.0  # the limit of the harmonic mean as one part goes to 0
    return float(len(xs) / sum(1.0 / x for x in xs))


def bootstrap_ci(
    values: Sequence[float | None], *, n: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of the present values (None if fewer than 1).

    Seeded, so the same values give the same interval. A single value gives a zero-width interval.
    """
    xs = np.asarray([v for v in values if v is not None], dtype=float)
    if xs.size == 0:
        return None
    if xs.size == 1:
        return (float(xs[0]), float(xs[0]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xs.size, size=(n, xs.size))
    means = xs[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    # Keep the point estimate inside (quantiles of a discrete bootstrap can miss it by rounding).
    m = float(xs.mean())
    return (min(float(lo), m), max(float(hi), m))


def scalarize(values: Mapping[str, float | None], kind: str, of: Sequence[str], weights: Mapping[str, float] | None) -> float | None:
    """Single number from several trial values: harmonic mean (values in [0, 1]) or weighted sum."""
    xs = {k: values.get(k) for k in of}
    if kind == "harmonic_mean":
        return harmonic_mean(xs)
    if any(v is None for v in xs.values()):
        return None
    w = weights or {}
    return float(sum(w.get(k, 1.0) * v for k, v in xs.items()))
