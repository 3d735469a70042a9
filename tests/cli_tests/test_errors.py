"""Spec-like files (concept files, prompt families, label files) get the spec error quality: the file, the field,
"did you mean", and exit code 2 from the real CLI, before any model loads."""
from __future__ import annotations

import json

import pytest

from steeropt.errors import SpecError
from steeropt.evaluation.validation import read_labels
from steeropt.specs.concepts import load_concept
from steeropt.specs.prompts import read_texts
from steeropt.specs.scaffold import write_concept

from .conftest import fill_concept, steeropt


@pytest.fixture
def ocean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_concept("ocean", tmp_path)
    fill_concept(path)
    return path


def test_filled_template_loads_by_name(ocean):
    c = load_concept("ocean")  # ./concepts first
    assert c.name == "ocean" and len(c.positive) == len(c.negative) == 8 and c.layer == 10
    assert "sail*" in c.keywords


def test_typo_key_names_file_field_and_suggestion(ocean):
    ocean.write_text(ocean.read_text().replace("\npositive:", "\npositivee:"))
    with pytest.raises(SpecError) as e:
        load_concept(ocean)
    assert e.value.file == str(ocean) and e.value.field == "positivee"
    assert "did you mean 'positive'?" in str(e.value)
    r = steeropt("sweep", "--concept", ocean, cwd=ocean.parent.parent)  # exits before the model loads
    assert r.returncode == 2, r.stderr
    assert "positivee" in r.stderr and "did you mean 'positive'" in r.stderr and "Traceback" not in r.stderr


def test_unknown_concept_name_did_you_mean(ocean):
    with pytest.raises(SpecError) as e:
        load_concept("ocen")
    assert "did you mean 'ocean'?" in str(e.value) and "steeropt new concept ocen" in str(e.value)


def test_unedited_template_is_refused_with_the_field(tmp_path):
    path = write_concept("cooking", tmp_path)
    with pytest.raises(SpecError) as e:
        load_concept(path)
    assert e.value.field == "description" and "placeholder" in str(e.value)
    assert "field 'positive.0'" in str(e.value)  # every unedited list is named, not only the first problem


def test_unmatched_pairs_and_bad_keyword(ocean):
    text = ocean.read_text()
    first_neg = text.index("negative:\n") + len("negative:\n")
    end = text.index("\n", first_neg)
    ocean.write_text(text[:first_neg] + text[end + 1:])  # drop one negative sentence
    with pytest.raises(SpecError) as e:
        load_concept(ocean)
    assert e.value.field == "negative" and "8" in str(e.value) and "7" in str(e.value)
    ocean.write_text(text.replace("keywords: [ocean,", "keywords: [\"oceans?\","))
    with pytest.raises(SpecError) as e:
        load_concept(ocean)
    assert e.value.field == "keywords.0" and "re:" in str(e.value)


def test_unquoted_colon_gets_a_hint(ocean):
    ocean.write_text(ocean.read_text().replace('description: "the ocean and the sea: waves',
                                               "description: the ocean and the sea: waves").replace(
        'fish and whales"', "fish and whales"))
    with pytest.raises(SpecError) as e:
        load_concept(ocean)
    assert "line" in str(e.value) and "needs quotes" in str(e.value)


def test_prompt_family_file_typo_key_and_missing_file(tmp_path):
    fam = tmp_path / "advice.jsonl"
    fam.write_text(json.dumps({"prompt": "How do I sleep?"}) + "\n" + json.dumps({"promt": "How do I cook?"}) + "\n")
    with pytest.raises(SpecError) as e:
        read_texts(fam)
    assert e.value.file == str(fam) and "line 2" in str(e.value) and "did you mean 'prompt'?" in str(e.value)
    with pytest.raises(SpecError) as e:
        read_texts(tmp_path / "advise.jsonl")
    assert "not found" in str(e.value) and "advice.jsonl" in str(e.value)


def test_prompt_family_error_through_validate_exits_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fill_concept(write_concept("ocean", tmp_path))
    assert steeropt("new", "study", "ocean", "--concept", "ocean", cwd=tmp_path).returncode == 0
    fam = tmp_path / "studies" / "data" / "advice.jsonl"
    lines = fam.read_text().splitlines()
    fam.write_text("\n".join([lines[0].replace('"prompt"', '"promt"'), *lines[1:]]) + "\n")
    r = steeropt("validate", "ocean", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    msg = " ".join(r.stderr.split())  # rich wraps at the terminal width
    assert "studies/ocean.yaml" in msg and "prompts.families.1.path" in msg and "did you mean 'prompt'" in msg


def test_label_file_errors(tmp_path):
    good = {"prompt": "Hi", "response": "Hello", "concept": "ocean", "labels": {"concept": 1, "coherency": 2}}
    path = tmp_path / "labels.jsonl"
    cases = [({**{k: v for k, v in good.items() if k != "response"}, "respone": "Hello"}, "response", "respone"),
             ({**good, "labels": {"concept": 1, "fluency": 2}}, "labels.fluency", "coherency"),
             ({**good, "labels": {"concept": 1, "coherence": 2}}, "labels.coherence", "did you mean 'coherency'?"),
             ({k: v for k, v in good.items() if k != "labels"} | {"lables": {"concept": 1}}, "labels", "'lables'")]
    for line, field, fragment in cases:
        path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
        with pytest.raises(SpecError) as e:
            read_labels(path)
        assert e.value.file == f"{path}:2" and e.value.field == field, str(e.value)
        assert fragment in str(e.value), str(e.value)
    r = steeropt("judge", "check", path, cwd=tmp_path)
    assert r.returncode == 2 and "lables" in r.stderr, r.stderr
