"""Search space specs: validation, parameters, materialize (incl. the tent kernel), baseline and grid."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from steeropt.errors import SpecError, SteeroptError
from steeropt.search.spaces import SearchSpaceSpec
from steeropt.types import Site

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"


def space(**kw) -> SearchSpaceSpec:
    return SearchSpaceSpec.model_validate({"name": "t", **kw})


SITE = {"layer": 4, "vector": "wedding", "alpha": {"low": 0.0, "high": 1.5}}


@pytest.mark.parametrize("path", sorted(SPACES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_validate_and_materialize(path):
    spec = SearchSpaceSpec.model_validate(yaml.safe_load(path.read_text()))
    assert spec.name == path.stem
    plan = spec.materialize(spec.baseline_params())
    assert plan.alphas and all(a == 0.0 for a in plan.alphas)
    assert len(plan.sites) == len(plan.alphas)
    assert plan.active == [False] * len(plan.sites) and plan.steered_sites() == []  # unsteered, clamp included
    assert set(spec.layers_used()) == {s.layer for s in plan.sites}


def test_shipped_names_cover_the_brief():
    names = {p.stem for p in SPACES.glob("*.yaml")}
    assert {"wedding-add-l4", "two-sites", "layer-kernel", "controller-choice", "wedding-clamp-l4",
            "wedding-affine-l4", "wedding-head-add-l4"} <= names


def test_build_through_specs_finds_space_by_name():
    from steeropt.specs.factory import build

    spec = build("search_space", "wedding-add-l4")
    assert [p.name for p in spec.parameters()] == ["alpha_l4_wedding"]
    p = spec.parameters()[0]
    assert p.low == 0.0 < p.high  # the upper bound is tuned by hand on the embedded model


def test_build_reports_file_and_field(tmp_path):
    from steeropt.specs.factory import build

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsites:\n  - {layer: 4, vector: w, alpha: {low: 1.0, high: 0.5}}\n")
    with pytest.raises(SpecError) as e:
        build("search_space", str(bad))
    assert "bad.yaml" in str(e.value) and "low < high" in str(e.value)


@pytest.mark.parametrize("alpha, message", [
    ({"low": 1.0, "high": 1.0}, "low < high"),
    ({"low": 0.0, "high": 1.0, "scale": "log"}, "log scale needs low > 0"),
    ({"low": 0.0, "high": 1.0, "grid": [2.0]}, "outside"),
    ({"low": 0.0, "high": 1.0, "bogus": 1}, "Extra inputs"),
])
def test_bad_bounds_are_rejected(alpha, message):
    with pytest.raises(ValidationError, match=message):
        space(sites=[{**SITE, "alpha": alpha}])


def test_other_spec_errors():
    with pytest.raises(ValidationError, match="at least one site or kernel"):
        space()
    with pytest.raises(ValidationError, match="lists no heads"):
        space(sites=[{**SITE, "controller": "head_add"}])
    with pytest.raises(ValidationError, match="lists no heads"):
        space(controller={"choices": ["add", "head_add"]}, sites=[SITE])
    with pytest.raises(ValidationError, match="duplicate parameter names"):
        space(sites=[SITE], kernels=[{"vector": "w", "layers": [2, 4], "prefix": "x",
                                      "peak_layer": {"low": 2, "high": 4}, "peak_alpha": {"low": 0, "high": 1},
                                      "width": {"low": 1, "high": 2}}],
              controller={"choices": ["add", "clamp"], "param": "x_width"})
    with pytest.raises(ValidationError, match="same alpha range"):
        space(sites=[{**SITE, "param": "a"}, {**SITE, "layer": 5, "param": "a", "alpha": {"low": 0, "high": 2}}])
    with pytest.raises(ValidationError, match="peak_layer bounds"):
        space(kernels=[{"vector": "w", "layers": [2, 4], "peak_layer": {"low": 1, "high": 4},
                        "peak_alpha": {"low": 0, "high": 1}, "width": {"low": 1, "high": 2}}])


def test_parameters_per_site_controller_and_tied_sites():
    s = space(sites=[SITE, {**SITE, "controller": "clamp"}, {**SITE, "layer": 8},
                     {**SITE, "layer": 9, "param": "shared"}, {**SITE, "layer": 10, "param": "shared"}])
    names = [p.name for p in s.parameters()]
    assert names == ["alpha_l4_wedding_add", "alpha_l4_wedding_clamp", "alpha_l8_wedding", "shared"]
    plan = s.materialize({"alpha_l4_wedding_add": 0.1, "alpha_l4_wedding_clamp": 0.2, "alpha_l8_wedding": 0.3,
                          "shared": 0.4})
    assert plan.alphas == [0.1, 0.2, 0.3, 0.4, 0.4]
    assert [(x.layer, x.controller) for x in plan.sites] == [(4, "add"), (4, "clamp"), (8, "add"), (9, "add"),
                                                              (10, "add")]


def test_tent_kernel_alphas():
    s = SearchSpaceSpec.model_validate(yaml.safe_load((SPACES / "layer-kernel.yaml").read_text()))
    plan = s.materialize({"tent_peak_layer": 4.5, "tent_peak_alpha": 1.0, "tent_width": 2.0, "tent_floor": 0.5})
    assert [x.layer for x in plan.sites] == [2, 3, 4, 5, 6, 7, 8]
    # d = |l - 4.5|: alpha = 1 - 0.5 * d / 2 inside the width, 0 beyond
    assert plan.alphas == pytest.approx([0.0, 0.625, 0.875, 0.875, 0.625, 0.0, 0.0])
    assert plan.active == [False, True, True, True, True, False, False]  # outside the tent: off, not α = 0
    flat = s.materialize({"tent_peak_layer": 2, "tent_peak_alpha": 0.8, "tent_width": 6.0, "tent_floor": 1.0})
    assert flat.alphas == pytest.approx([0.8] * 7)


def test_controller_positions_and_decoding_choices():
    s = space(sites=[{**SITE, "heads": [1, 3]}], controller={"choices": ["add", "head_add", "ablate"]},
              positions=["prompt", "generated"],
              decoding={"temperature": {"low": 0.0, "high": 1.0},
                        "repetition_penalty": {"low": 1.0, "high": 1.3, "baseline": 1.1}})
    params = {p.name: p for p in s.parameters()}
    assert params["controller"].choices == ("add", "head_add", "ablate")
    assert params["positions"].choices == ("prompt", "generated")
    plan = s.materialize({"alpha_l4_wedding": 0.5, "controller": "head_add", "positions": "generated",
                          "temperature": 0.7, "repetition_penalty": 1.2})
    assert plan.sites == [Site(4, "head_add", "wedding", (1, 3), "generated")]
    assert plan.decoding == {"temperature": 0.7, "repetition_penalty": 1.2}
    assert plan.params["controller"] == "head_add"
    assert s.baseline_params() == {"alpha_l4_wedding": None, "controller": "add", "positions": "prompt",
                                   "temperature": 0.0, "repetition_penalty": 1.1}
    assert s.heads_used() == {4: [1, 3]}
    with pytest.raises(SteeroptError, match="not one of"):
        s.materialize({**s.baseline_params(), "controller": "steer"})


def test_materialize_rejects_missing_and_unknown():
    s = space(sites=[SITE])
    with pytest.raises(SteeroptError, match=r"missing parameters \['alpha_l4_wedding'\], unknown \['alpha'\]"):
        s.materialize({"alpha": 1.0})
    with pytest.raises(SteeroptError, match="finite"):
        s.materialize({"alpha_l4_wedding": float("nan")})


def test_grid():
    s = space(sites=[SITE])
    g = s.grid()
    assert len(g["alpha_l4_wedding"]) == 14 and g["alpha_l4_wedding"][0] == 0.0 and g["alpha_l4_wedding"][-1] == 1.5
    log = space(sites=[{**SITE, "alpha": {"low": 0.01, "high": 1.0, "scale": "log"}}]).grid(3)["alpha_l4_wedding"]
    assert log == pytest.approx([0.01, 0.1, 1.0])
    explicit = space(sites=[{**SITE, "alpha": {"low": 0, "high": 2, "grid": [0.5, 1.0]}}]).grid(14)
    assert explicit == {"alpha_l4_wedding": [0.5, 1.0]}
    two = space(sites=[SITE, {**SITE, "layer": 8}], controller={"choices": ["add", "clamp"]})
    assert len(two.grid_points(3)) == 3 * 3 * 2
    tent = space(kernels=[{"vector": "w", "layers": [2, 5], "peak_layer": {"low": 2, "high": 5, "integer": True},
                           "peak_alpha": {"low": 0, "high": 1}, "width": {"low": 1, "high": 2}}])
    assert tent.grid(5)["tent_peak_layer"] == [2, 3, 4, 5]
    assert tent.parameters()[0].integer


CLAMP_TENT = {"vector": "wedding", "layers": [2, 8], "controller": "clamp", "peak_layer": {"low": 2, "high": 8},
              "peak_alpha": {"low": 0.0, "high": 1.0}, "width": {"low": 1, "high": 3}}


def test_clamp_at_alpha_zero_is_active_and_outside_the_tent_is_not():
    # Bug 4: clamp at α=0 ablates, so α=0 cannot mean "off". Layers outside the tent are inactive sites;
    # a clamp site at α=0 inside it is active and counts as steering.
    s = space(kernels=[CLAMP_TENT], sites=[{**SITE, "layer": 10, "controller": "clamp"}])
    plan = s.materialize({"tent_peak_layer": 5, "tent_peak_alpha": 0.0, "tent_width": 1.0, "tent_floor": 1.0,
                          "alpha_l10_wedding": 0.0})
    assert [x.layer for x in plan.sites] == [10, 2, 3, 4, 5, 6, 7, 8]
    assert plan.active == [True, False, False, True, True, True, False, False]
    assert plan.steered_sites() == [0, 3, 4, 5]
    base = s.materialize(s.baseline_params())
    assert base.active == [False] * 8 and base.steered_sites() == []
    assert base.params["tent_peak_alpha"] is None and base.params["alpha_l10_wedding"] is None


def test_none_is_only_allowed_for_strengths():
    s = space(sites=[SITE], decoding={"temperature": {"low": 0.0, "high": 1.0}})
    with pytest.raises(SteeroptError, match="temperature=None is not a finite number"):
        s.materialize({"alpha_l4_wedding": 0.2, "temperature": None})
