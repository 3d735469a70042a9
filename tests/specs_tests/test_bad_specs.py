"""Every malformed spec in tests/data/bad_specs raises SpecError naming the file, the field and the problem."""
from __future__ import annotations

import pytest
import yaml

from steeropt.errors import SpecError
from steeropt.specs import build, validate_study

from .conftest import BAD, need

EXPECTED = yaml.safe_load((BAD / "expected.yaml").read_text())
SUPPORT = [BAD / "support"]


def test_corpus_is_complete():
    files = {p.name for p in BAD.glob("*.yaml")
             if not p.name.endswith(".part.yaml") and p.name not in ("expected.yaml", "good.yaml")}
    assert files == set(EXPECTED), "every bad spec needs an entry in expected.yaml (and vice versa)"
    assert len(EXPECTED) >= 20


def test_control_spec_is_valid():
    need("search_space", "objective", "judge")
    parts = validate_study(BAD / "good.yaml", search_paths=SUPPORT)
    assert parts[0].name == "bad-good"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_spec(name):
    case = EXPECTED[name]
    need(*case.get("needs", []))
    kind = case.get("kind", "study")
    with pytest.raises(SpecError) as e:
        if kind == "study":
            validate_study(BAD / name, search_paths=SUPPORT)
        else:
            build(kind, BAD / name, search_paths=SUPPORT)
    msg = str(e.value)
    assert case.get("names", name) in msg, msg
    assert case["fragment"] in msg, msg
    if "field" in case:
        assert e.value.field == case["field"], msg
