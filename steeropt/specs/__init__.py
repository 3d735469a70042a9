"""Spec files: YAML loader -> name index -> typed pydantic specs (see DESIGN: spec files found by name).

    >>> from steeropt.specs import build, list_specs, load_spec, validate_study
    >>> study = build("study", "studies/wedding-add.yaml")   # doctest: +SKIP
    >>> [e.name for e in list_specs("objective")]             # doctest: +SKIP
"""
from __future__ import annotations

from steeropt.specs.factory import (INLINE, REGISTRY, FieldError, build, list_specs, load_spec, locate,
                                    register_kind, spec_class, spec_error)
from steeropt.specs.index import FOLDERS, SpecEntry, search_dirs
from steeropt.specs.loader import deep_merge, read_spec_file
from steeropt.specs.study import StudySpec
from steeropt.specs.validate import ResolvedPart, validate_study

KINDS = tuple(FOLDERS)

__all__ = [
    "FOLDERS", "INLINE", "KINDS", "REGISTRY", "FieldError", "ResolvedPart", "SpecEntry", "StudySpec",
    "build", "deep_merge", "list_specs", "load_spec", "locate", "read_spec_file", "register_kind",
    "search_dirs", "spec_class", "spec_error", "validate_study",
]
