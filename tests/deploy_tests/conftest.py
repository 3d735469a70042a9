"""A steering profile written directly with write_profile from a known vector and α (no study run), on the real
embedded model: add 'wedding' at layer 4, open_ended α=0.3, advice α=0.15, descriptions without a deployable
setting; the router is built on the study spec's selection prompts and scored on its held-out prompts."""
from __future__ import annotations

import pytest

from tests.study_tests.conftest import DATA, tiny_spec

ALPHAS = {"open_ended": 0.3, "advice": 0.15}
FAMILIES = ("open_ended", "advice", "descriptions")


def make_profile(lm, vectors, base, name="deploy-tiny", alphas=ALPHAS, max_new_tokens=10, router=True, model=None,
                 layer=4):
    from steeropt.deploy.pick import profile_sites
    from steeropt.deploy.profiles import write_profile
    from steeropt.specs import build
    from steeropt.types import InterventionPlan, Site

    fams = [{"name": n, "path": str(DATA / f"{n}.jsonl")} for n in FAMILIES]
    over = {"model": model} if model else {}
    spec = build("study", str(tiny_spec(base, name=name, prompts={"families": fams},
                                        decoding={"max_new_tokens": max_new_tokens}, **over)))
    families = {f: {"status": "ok", "sites": profile_sites(InterventionPlan([Site(layer, "add", "wedding")], [a]),
                                                           vectors, lm)} for f, a in alphas.items()}
    families["descriptions"] = {"status": "no_deployable_setting", "reason": "none met the constraint (test)"}
    splits = spec.splits()
    kw = {}
    if router:
        kw = {"router_prompts": {f: list(s.selection) for f, s in splits.items()},
              "router_test_prompts": {f: list(s.held_out) for f, s in splits.items()}}
    return write_profile(base / "profile", lm=lm, vectors=vectors, families=families,
                         decoding=spec.decoding.model_dump(), study={"name": spec.name, "spec": spec.source},
                         objective={"name": "cheap-only"}, **kw), splits


@pytest.fixture(scope="session")
def deploy(tmp_path_factory, embedded, wedding_vectors):
    """(profile, splits): the tiny profile and its study's prompt splits."""
    return make_profile(embedded, wedding_vectors, tmp_path_factory.mktemp("deploy"))
