"""Optimizers with one ask/tell interface; an Optuna study is the store of record for all of them.

    >>> opt = make_optimizer("tpe", space=space, objectives=[("concept", "maximize"), ("fluency", "maximize")],
    ...                      constraints=[("coherence", ">=", 0.5)], storage="sqlite:///study.db",
    ...                      study_name="wedding", seed=0)                       # doctest: +SKIP
    >>> for c in opt.ask(4):                                                    # doctest: +SKIP
    ...     plan = space.materialize(c.params)
    ...     opt.tell(c.number, {"concept": 0.7, "fluency": 0.9}, constraints={"coherence": 0.8})

Names: grid, random, sobol (alias qmc), tpe, nsga2, gp (Optuna samplers; gp = Optuna's GPSampler) and
botorch (alias ax: Ax on BoTorch).
"""
from __future__ import annotations

import optuna

from steeropt.errors import SteeroptError
from steeropt.search.optimizers._gp import GPOptimizer
from steeropt.search.optimizers._optuna import (GridOptimizer, NSGA2Optimizer, RandomOptimizer, SobolOptimizer,
                                                TPEOptimizer)
from steeropt.search.optimizers.base import BASE_SETTINGS, Candidate, Optimizer, distributions, open_storage
from steeropt.search.spaces import SearchSpaceSpec

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "grid": GridOptimizer, "random": RandomOptimizer, "sobol": SobolOptimizer, "qmc": SobolOptimizer,
    "tpe": TPEOptimizer, "nsga2": NSGA2Optimizer, "gp": GPOptimizer,
}
AX_NAMES = ("botorch", "ax")


def make_optimizer(name: str, *, space: SearchSpaceSpec, objectives: list[tuple[str, str]],
                   constraints: list[tuple[str, str, float]] = (), storage: str | optuna.storages.BaseStorage | None = None,
                   study_name: str, seed: int = 0, settings: dict | None = None, storage_url: str | None = None,
                   **more_settings) -> Optimizer:
    """An optimizer over `space` whose trials live in study `study_name` of `storage` (a SQLAlchemy URL;
    `storage_url` is accepted as an alias). Settings may be given as a dict, as keywords, or both.
    Creating it again on the same storage + study_name resumes the study."""
    if storage is None and storage_url is None:
        raise SteeroptError("make_optimizer needs storage (a SQLAlchemy URL such as sqlite:///study.db)")
    if storage is not None and storage_url is not None and storage != storage_url:
        raise SteeroptError(f"storage {storage!r} and storage_url {storage_url!r} disagree")
    kw = dict(space=space, objectives=objectives, constraints=constraints, storage=storage or storage_url,
              study_name=study_name, seed=seed, settings={**(settings or {}), **more_settings})
    key = name.lower()
    if key in AX_NAMES:
        from steeropt.search.optimizers._ax import AxOptimizer  # Ax imports in ~5 s: only when asked for

        return AxOptimizer(**kw)
    if key not in OPTIMIZERS:
        raise SteeroptError(f"unknown optimizer {name!r}; choose one of {sorted([*OPTIMIZERS, *AX_NAMES])}")
    return OPTIMIZERS[key](**kw)


def check_settings(name: str, settings: dict | None) -> None:
    """Raise SteeroptError for an unknown optimizer or unknown settings, before anything is created."""
    key = name.lower()
    if key in AX_NAMES:
        from steeropt.search.optimizers._ax import AxOptimizer as cls  # the class only: Ax itself loads on first ask
    elif key in OPTIMIZERS:
        cls = OPTIMIZERS[key]
    else:
        raise SteeroptError(f"unknown optimizer {name!r}; choose one of {sorted([*OPTIMIZERS, *AX_NAMES])}")
    unknown = sorted(set(settings or {}) - BASE_SETTINGS - cls.settings_allowed)
    if unknown:
        raise SteeroptError(f"optimizer {cls.name!r}: unknown settings {unknown} "
                            f"(allowed: {sorted(BASE_SETTINGS | cls.settings_allowed)})")


__all__ = ["check_settings", "Candidate", "Optimizer", "OPTIMIZERS", "make_optimizer", "distributions", "open_storage"]
