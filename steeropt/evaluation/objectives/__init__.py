"""Tiered objective stack: cheap tier-1 metrics, gates, judge on survivors, aggregation with uncertainty."""
from __future__ import annotations

from steeropt.evaluation.objectives.aggregate import bootstrap_ci, harmonic_mean, mean, mean_ci, scalarize
from steeropt.evaluation.objectives.config import TIER1_METRICS, ObjectiveSpec
from steeropt.evaluation.objectives.stack import ObjectiveStack, TrialResult
from steeropt.evaluation.objectives.tier1 import ConceptInfo, Tier1

__all__ = [
    "ObjectiveSpec", "ObjectiveStack", "TrialResult", "ConceptInfo", "Tier1", "TIER1_METRICS",
    "bootstrap_ci", "harmonic_mean", "mean", "mean_ci", "scalarize",
]
