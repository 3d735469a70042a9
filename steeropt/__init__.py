"""steeropt: find how strongly to steer a language model.

The public API, imported lazily (``import steeropt`` stays cheap):

    Study, load_model, Generator, Decoding, steer, apply_profile, load_profile, compare, pick
"""
from __future__ import annotations

_EXPORTS = {
    "Study": "steeropt.study",
    "load_model": "steeropt.models",
    "Generator": "steeropt.generation",
    "Decoding": "steeropt.generation",
    "steer": "steeropt.interventions",
    "apply_profile": "steeropt.profiles",
    "load_profile": "steeropt.profiles",
    "compare": "steeropt.compare",
    "pick": "steeropt.pick",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'steeropt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
