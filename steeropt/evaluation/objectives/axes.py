"""The three axes every answer is scored on, and which of an objective's score names stands for each.

    >>> concept_name([("concept", "maximize"), ("coherency", "maximize")]), axis_score_names(objective)  # doctest: +SKIP

Labels (bench/judge_quality/labels/GUIDE.md) call the fluency axis "coherency"; objectives may call their
scores concept / fluency / coherency / relevance / instruction.
"""
from __future__ import annotations

AXES = ("concept", "fluency", "relevance")
LABEL_OF_AXIS = {"concept": "concept", "fluency": "coherency", "relevance": "relevance"}
# Which of the objective's score names feeds each axis (first match wins).
AXIS_SCORES = {"concept": ("concept",), "fluency": ("fluency", "coherency", "coherence"),
               "relevance": ("relevance", "instruction")}


def axis_score_names(spec) -> dict[str, str | None]:
    """axis -> the objective's score name for it (None: the objective has no score for that axis)."""
    return {a: next((n for n in names if n in spec.scores), None) for a, names in AXIS_SCORES.items()}


def label_name(score: str) -> str:
    """The label a score is compared with (concept, coherency = fluency, relevance), else the score's own name."""
    return next((LABEL_OF_AXIS[axis] for axis, names in AXIS_SCORES.items() if score in names), score)


def coherency_name(objectives) -> str:
    """The objective (name, direction) pairs' coherency axis: "coherency" when present, else the last one."""
    names = [n for n, _ in objectives]
    return "coherency" if "coherency" in names else names[-1]


def concept_name(objectives) -> str:
    """The objective that is maximised for the concept: the first one that is not the coherency axis."""
    c = coherency_name(objectives)
    return next(n for n, _ in objectives if n != c) if len(objectives) > 1 else objectives[0][0]
