"""StudySpec: the example study, path resolution, defaults, nested parts and validate_study."""
from __future__ import annotations

from pathlib import Path

import pytest

from steeropt.errors import SpecError
from steeropt.specs import StudySpec, build, list_specs, validate_study

from .conftest import REPO, SPECS, need

EXAMPLE = SPECS / "studies" / "example-wedding.yaml"


def test_example_study_builds_by_name_with_include_merged():
    study = build("study", "example-wedding", search_paths=[SPECS])
    assert isinstance(study, StudySpec)
    assert study.source == str(EXAMPLE.resolve()) and study.base_dir == EXAMPLE.parent.resolve()
    assert study.decoding.max_new_tokens == 16 and study.decoding.temperature == 0.0  # local key wins, merged
    assert study.optimizer.name == "random" and study.budget.trials == 4 and study.seed == 7
    assert study.concept.keywords[0] == "wedd"
    assert study.experiment_name == "example-wedding" and study.tracking_uri is None


def test_relative_paths_resolve_against_the_spec_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the cwd must not matter
    study = build("study", str(EXAMPLE))
    v = study.vectors[0]
    assert Path(v.positive) == (REPO / "studies/data/wedding_positive.txt").resolve()
    assert Path(study.prompts.families[0].path).is_file()
    assert study.model == "smollm2-135m-instruct"  # a name stays a name


def test_model_path_resolution(tmp_path):
    base = {"name": "s", "vectors": [{"name": "v", "method": "file", "layer": 1, "path": "v.pt"}],
            "concept": {"name": "c"}, "prompts": {"families": [{"name": "f", "prompts": ["a", "b"]}]},
            "search_space": "x", "objective": "y"}
    (tmp_path / "spec.yaml").write_text("")
    s = StudySpec.model_validate({**base, "model": "models/m.gguf"}, context={"base_dir": tmp_path})
    assert s.model == str(tmp_path / "models/m.gguf") and s.vectors[0].path == str(tmp_path / "v.pt")
    s = StudySpec.model_validate({**base, "model": "/abs/hf-dir"}, context={"base_dir": tmp_path})
    assert s.model == "/abs/hf-dir"


def test_defaults_are_the_documented_ones():
    s = StudySpec.model_validate({"name": "s", "vectors": [{"name": "v", "method": "file", "layer": 0, "path": "/v"}],
                                  "concept": {"name": "c"},
                                  "prompts": {"families": [{"name": "f", "prompts": ["a", "b"]}]},
                                  "search_space": {"name": "inline"}, "objective": "o"})
    assert s.model == "smollm2-135m-instruct" and s.storage == "sqlite:///steeropt.db"
    assert s.prompts.selection_fraction == 0.5 and s.optimizer.name == "tpe" and s.judge is None
    assert (s.decoding.max_new_tokens, s.decoding.temperature, s.decoding.top_p) == (48, 0.0, 1.0)
    assert s.vectors[0].site == "resid"


def test_splits_and_families_from_the_example():
    study = build("study", EXAMPLE)
    fams = study.families()
    assert [f.name for f in fams] == ["open_ended", "advice", "inline_small"]
    splits = study.splits()
    assert splits == study.splits()  # deterministic
    s = splits["inline_small"]
    assert len(s.selection) == 2 and len(s.held_out) == 2 and not set(s.selection) & set(s.held_out)


def test_list_specs_sees_the_example_but_not_the_fragment():
    names = [e.name for e in list_specs("study", search_paths=[SPECS])]
    assert "example-wedding" in names and "common" not in names
    entry = next(e for e in list_specs("study", search_paths=[SPECS]) if e.name == "example-wedding")
    assert entry.description.startswith("add a diff-in-means")


def test_nested_names_resolve_relative_to_study_search_paths():
    need("search_space", "objective", "judge")
    study = build("study", "example-wedding", search_paths=[SPECS])
    space, objective, judge = study.part("search_space"), study.part("objective"), study.part("judge")
    assert space.name == "example-add-l4" and objective.name == "example-objective"
    assert judge.name == "example-judge"  # the study has no judge: it comes from the objective


def test_inline_nested_error_names_study_file_and_field(tmp_path):
    need("search_space")
    p = tmp_path / "s.yaml"
    p.write_text(EXAMPLE.read_text().replace("search_space: example-add-l4",
                                             "search_space: {name: x, sites: [{layer: 1, vector: wedding}]}")
                 .replace("../../../../studies", str(REPO / "studies")))
    (tmp_path / "common.part.yaml").write_text((EXAMPLE.parent / "common.part.yaml").read_text())
    study = build("study", p, search_paths=[SPECS])
    with pytest.raises(SpecError) as e:
        study.part("search_space")
    assert e.value.file == str(p.resolve()) and e.value.field == "search_space.sites.0.alpha"


def test_validate_example_study_end_to_end():
    need("search_space", "objective", "judge", "models")
    parts = validate_study("example-wedding", search_paths=[SPECS])
    kinds = [p.kind for p in parts]
    assert kinds[:2] == ["study", "vector"] and kinds.count("prompt_family") == 3
    assert kinds[-3:] == ["search_space", "objective", "judge"]
    model = next(p for p in parts if p.kind == "model")
    assert model.value.n_layers == 30 and model.value.n_heads == 9
    vec = next(p for p in parts if p.kind == "vector")
    assert vec.value == {"positive": 8, "negative": 8}
