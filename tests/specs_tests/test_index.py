"""Name -> file index: search order, fragments, duplicates, did-you-mean, list_specs."""
from __future__ import annotations

import warnings

import pytest
from pydantic import BaseModel, ConfigDict

from steeropt.errors import SpecError
from steeropt.specs import FOLDERS, REGISTRY, build, list_specs, load_spec, register_kind
from steeropt.specs.index import builtin_dir, search_dirs


class Thing(BaseModel):
    """A small spec class registered under a test kind."""

    model_config = ConfigDict(extra="forbid")
    name: str
    size: int = 1


@pytest.fixture
def thing_kind():
    register_kind("thing", "things", f"{__name__}:Thing")
    yield "thing"
    FOLDERS.pop("thing"), REGISTRY.pop("thing")


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_name_comes_from_the_file_and_fragments_are_not_indexed(tmp_path, thing_kind):
    write(tmp_path / "things/whatever.yaml", "name: big\ninclude: common.part.yaml\nsize: 5\n")
    write(tmp_path / "things/common.part.yaml", "name: should-not-index\n")
    write(tmp_path / "things/sub/nameless.yml", "size: 2\n")
    names = [e.name for e in list_specs("thing", search_paths=[tmp_path])]
    assert names == ["big", "nameless"]
    assert build("thing", "big", search_paths=[tmp_path]) == Thing(name="big", size=5)


def test_search_path_may_be_the_folder_itself(tmp_path, thing_kind):
    write(tmp_path / "mine/a.yaml", "name: a\n")
    assert [e.name for e in list_specs("thing", search_paths=[tmp_path / "mine"])] == ["a"]


def test_earlier_roots_shadow_later_ones_cwd_before_presets(tmp_path, monkeypatch, thing_kind):
    write(tmp_path / "first/things/x.yaml", "name: x\nsize: 1\n")
    write(tmp_path / "cwd/things/x.yaml", "name: x\nsize: 2\n")
    write(tmp_path / "cwd/things/y.yaml", "name: y\nsize: 3\n")
    monkeypatch.chdir(tmp_path / "cwd")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # shadowing across roots is not a warning
        assert build("thing", "x", search_paths=[tmp_path / "first"]).size == 1
        assert build("thing", "x").size == 2
        assert build("thing", "y", search_paths=[tmp_path / "first"]).size == 3
    dirs = search_dirs("thing", [tmp_path / "first"])
    assert dirs[0] == (tmp_path / "first/things").resolve() and dirs[1] == (tmp_path / "cwd/things").resolve()


def test_duplicate_names_in_one_root_warn(tmp_path, thing_kind):
    write(tmp_path / "things/a.yaml", "name: dup\nsize: 1\n")
    write(tmp_path / "things/b.yaml", "name: dup\nsize: 2\n")
    with pytest.warns(UserWarning, match="duplicate thing name 'dup'"):
        assert build("thing", "dup", search_paths=[tmp_path]).size == 1


def test_unknown_name_did_you_mean_and_known_list(tmp_path, thing_kind):
    write(tmp_path / "things/a.yaml", "name: wedding-add\n")
    write(tmp_path / "things/b.yaml", "name: wedding-clamp\n")
    with pytest.raises(SpecError) as e:
        load_spec("thing", "weding-add", search_paths=[tmp_path])
    msg = str(e.value)
    assert "unknown thing 'weding-add'. did you mean 'wedding-add'" in msg
    assert "Known thing names: wedding-add, wedding-clamp" in msg


def test_ref_may_be_a_path_or_inline(tmp_path, thing_kind, monkeypatch):
    p = write(tmp_path / "elsewhere/t.yaml", "name: t\nsize: 4\n")
    data, source = load_spec("thing", str(p))
    assert data == {"name": "t", "size": 4} and source == str(p.resolve())
    monkeypatch.chdir(tmp_path)
    assert build("thing", "elsewhere/t.yaml").size == 4
    assert load_spec("thing", {"name": "i", "size": 2}) == ({"name": "i", "size": 2}, "<inline>")
    with pytest.raises(SpecError, match="thing file not found: missing.yaml"):
        load_spec("thing", "missing.yaml")


def test_unparseable_files_are_indexed_by_stem_and_report_the_syntax_error(tmp_path, thing_kind):
    write(tmp_path / "things/broken.yaml", "name: broken\nsize: [1\n")
    with pytest.raises(SpecError, match=r"broken.yaml: YAML syntax error at line"):
        build("thing", "broken", search_paths=[tmp_path])


def test_validation_error_becomes_spec_error_with_field(tmp_path, thing_kind):
    p = write(tmp_path / "things/t.yaml", "name: t\nsize: big\nsise: 3\n")
    with pytest.raises(SpecError) as e:
        build("thing", "t", search_paths=[tmp_path])
    assert e.value.file == str(p.resolve()) and e.value.field == "size"
    assert "valid integer" in e.value.message and "unknown key 'sise'. did you mean 'size'?" in e.value.message


def test_unknown_kind():
    with pytest.raises(SpecError, match="unknown spec kind 'studdy'"):
        load_spec("studdy", "x")


def test_builtin_presets_dir_in_a_checkout():
    d = builtin_dir("studies")
    assert d.name == "studies" and (d / "data" / "open_ended.jsonl").is_file()


def test_inline_mapping_includes_resolve_against_base_dir(tmp_path, thing_kind):
    write(tmp_path / "shared/size.part.yaml", "size: 9\n")
    data, source = load_spec("thing", {"include": "shared/size.part.yaml", "name": "i"}, base_dir=tmp_path)
    assert (data, source) == ({"size": 9, "name": "i"}, "<inline>")
    with pytest.raises(SpecError) as e:
        build("thing", {"name": "i", "size": "x"}, origin=("study.yaml", "objective"))
    assert e.value.file == "study.yaml" and e.value.field == "objective.size"
