"""Plain YAML loading: includes, deep merge, cycles, syntax errors."""
from __future__ import annotations

import pytest

from steeropt.errors import SpecError
from steeropt.specs.loader import deep_merge, read_spec_file, read_yaml


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_deep_merge_local_keys_win_and_lists_replace():
    base = {"a": 1, "m": {"x": 1, "y": 2}, "l": [1, 2]}
    assert deep_merge(base, {"m": {"y": 3}, "l": [9]}) == {"a": 1, "m": {"x": 1, "y": 3}, "l": [9]}
    assert base["m"] == {"x": 1, "y": 2}  # inputs are not modified


def test_include_chain_and_order(tmp_path):
    write(tmp_path / "shared/a.part.yaml", "k: a\nm: {x: 1, y: 1}\n")
    write(tmp_path / "shared/b.part.yaml", "include: a.part.yaml\nk: b\nm: {y: 2}\n")  # relative to its own dir
    write(tmp_path / "c.part.yaml", "k: c\nz: 3\n")
    spec = write(tmp_path / "spec.yaml", "include: [shared/b.part.yaml, c.part.yaml]\nname: s\nm: {z: 0}\n")
    data = read_spec_file(spec)
    assert data == {"k": "c", "m": {"x": 1, "y": 2, "z": 0}, "z": 3, "name": "s"}


def test_include_cycle_names_the_chain(tmp_path):
    write(tmp_path / "a.part.yaml", "include: b.part.yaml\n")
    write(tmp_path / "b.part.yaml", "include: a.part.yaml\n")
    spec = write(tmp_path / "s.yaml", "include: a.part.yaml\n")
    with pytest.raises(SpecError, match=r"include cycle: s.yaml -> a.part.yaml -> b.part.yaml -> a.part.yaml"):
        read_spec_file(spec)


def test_self_include_is_a_cycle(tmp_path):
    spec = write(tmp_path / "s.yaml", "include: s.yaml\n")
    with pytest.raises(SpecError, match="include cycle: s.yaml -> s.yaml"):
        read_spec_file(spec)


def test_syntax_error_has_file_and_line(tmp_path):
    spec = write(tmp_path / "broken.yaml", "name: x\nbudget: {trials: 3\nseed: 1\n")
    with pytest.raises(SpecError) as e:
        read_yaml(spec)
    assert "broken.yaml" in str(e.value) and "line 3" in str(e.value)


def test_duplicate_keys_rejected(tmp_path):
    spec = write(tmp_path / "d.yaml", "a: 1\nb: {c: 1, c: 2}\n")
    with pytest.raises(SpecError, match=r"duplicate key 'c' \(first at line 2\)"):
        read_yaml(spec)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="file not found"):
        read_yaml(tmp_path / "nope.yaml")
