"""steeropt: find how strongly to steer a language model.

The public API, imported lazily (``import steeropt`` stays cheap):

    Study, load_model, Generator, Decoding, steer, apply_profile, load_profile, compare, pick
"""
from __future__ import annotations

_EXPORTS = {
    "Study": "steeropt.runner.study",
    "load_model": "steeropt.engine.models",
    "Generator": "steeropt.engine.generation",
    "Decoding": "steeropt.engine.generation",
    "steer": "steeropt.engine.interventions",
    "apply_profile": "steeropt.report.profiles",
    "load_profile": "steeropt.report.profiles",
    "compare": "steeropt.report.compare",
    "pick": "steeropt.report.pick",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'steeropt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
