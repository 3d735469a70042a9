"""steeropt: find how strongly to steer a language model.

The public API, imported lazily (``import steeropt`` stays cheap):

    load_model, load_concept, diff_in_means, VectorSet, SteeringVector, Site, InterventionPlan, Sample,
    Generator, Decoding, steer, apply_vector, Study, apply_profile, load_profile, compare, pick

Example (the embedded model, a concept, a vector, three strengths in one batched call):

    >>> from steeropt import Generator, InterventionPlan, Site, VectorSet, diff_in_means, load_concept, load_model
    >>> lm = load_model("smollm2-135m-instruct")
    >>> c = load_concept("wedding")
    >>> vec = diff_in_means(lm, c.positive, c.negative, layer=10, name="wedding")
    >>> plans = [InterventionPlan([Site(10, "add", "wedding")], [a]) for a in (0.0, 0.2, 0.4)]
    >>> samples = Generator(lm, VectorSet(wedding=vec)).run(["Tell me about your weekend."], plans)
    >>> with vec.apply(lm, alpha=0.3):   # or coefficient=c, a raw coefficient (x + c·v)
    ...     out = lm.model.generate(**lm.tokenizer(lm.render("Hi"), return_tensors="pt"), max_new_tokens=20)
"""
from __future__ import annotations

_EXPORTS = {
    "load_model": "steeropt.engine.models",
    "load_concept": "steeropt.specs.concepts",
    "diff_in_means": "steeropt.engine.vectors",
    "VectorSet": "steeropt.engine.vectors",
    "SteeringVector": "steeropt.engine.vectors",
    "Site": "steeropt.types",
    "InterventionPlan": "steeropt.types",
    "Sample": "steeropt.types",
    "apply_vector": "steeropt.engine.interventions",
    "Study": "steeropt.runner.study",
    "Generator": "steeropt.engine.generation",
    "Decoding": "steeropt.engine.generation",
    "steer": "steeropt.engine.interventions",
    "apply_profile": "steeropt.deploy.profiles",
    "load_profile": "steeropt.deploy.profiles",
    "compare": "steeropt.report.compare",
    "pick": "steeropt.deploy.pick",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'steeropt' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
