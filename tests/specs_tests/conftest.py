"""Shared helpers for the spec-system tests."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SPECS = HERE / "specs"  # a search root with studies/, search_spaces/, objectives/, judges/
BAD = HERE.parent / "data" / "bad_specs"
REPO = HERE.parents[1]

# What each optional part needs to be importable (other helpers write these modules).
PARTS = {
    "search_space": ("steeropt.search.spaces", "SearchSpaceSpec"),
    "objective": ("steeropt.evaluation.objectives.config", "ObjectiveSpec"),
    "judge": ("steeropt.evaluation.judges.config", "JudgeSpec"),
    "models": ("steeropt.engine.models", "describe"),
}


def available(part: str) -> bool:
    module, attr = PARTS[part]
    try:
        return hasattr(importlib.import_module(module), attr)
    except ImportError:
        return False


def need(*parts: str) -> None:
    missing = [p for p in parts if not available(p)]
    if missing:
        pytest.skip(f"needs {', '.join(f'{PARTS[p][0]}:{PARTS[p][1]}' for p in missing)} (not importable yet)")
