"""Two tiny studies (add vs clamp at layer 4, judge-free objective) run once for the compare/pick/notebook tests,
on the real embedded model, real Optuna SQLite storage and a real MLflow store."""
from __future__ import annotations

import pytest

from tests.study_tests.conftest import tiny_spec


@pytest.fixture(scope="session")
def tiny_studies(tmp_path_factory, embedded):
    """{"dir", "add", "clamp"}: spec paths of two finished tiny studies sharing prompts and objective."""
    from steeropt.runner.study import Study

    base = tmp_path_factory.mktemp("compare")
    common = {"budget": {"trials": 3, "batch_size": 3, "prompts_per_trial": 2,
                         "reevaluation": {"prompts": 1, "rounds": 2, "max_candidates": 4}}, "optimizer": {"name": "grid",
              "settings": {"grid_size": 3}}, "experiment": "tiny-compare"}
    paths = {"add": tiny_spec(base, name="tiny-add", search_space={
                 "name": "tiny-add", "sites": [{"layer": 4, "vector": "wedding", "controller": "add",
                                                "alpha": {"low": 0.0, "high": 0.6}}]}, **common),
             "clamp": tiny_spec(base, name="tiny-clamp", search_space={
                 "name": "tiny-clamp", "sites": [{"layer": 4, "vector": "wedding", "controller": "clamp",
                                                  "alpha": {"low": 0.0, "high": 1.2}}]}, **common)}
    for p in paths.values():
        study = Study.from_spec(str(p), runs_dir=base / "runs")
        study.setup(lm=embedded)
        try:
            study.run()
        finally:
            study.close()
    return {"dir": base, **paths}


@pytest.fixture(scope="session")
def picked(tiny_studies, embedded):
    """pick() on the tiny add study, held-out re-evaluation and profile export included. Maximises the KL dose
    (with no coherency floor) so the chosen settings steer (α > 0) and the reproduction test means something."""
    from steeropt.deploy.pick import pick

    out = tiny_studies["dir"] / "profile-add"
    return pick(str(tiny_studies["add"]), min_coherency=0.0, maximize="kl", lm=embedded, out=out), out
