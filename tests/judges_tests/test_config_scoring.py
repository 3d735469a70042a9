"""Rubric specs and the rating rules (pure logic, small synthetic inputs)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from steeropt.errors import SpecError
from steeropt.evaluation.judges import JudgeSpec, Rubric, load_judge_spec
from steeropt.specs import list_specs
from steeropt.evaluation.judges.scoring import normalise, parse_rating, score_completion, weighted_rating

REPO = Path(__file__).resolve().parents[2]
AX = Rubric(template="{concept} {response}", scale={"min": 0, "max": 2})
PERSONA = Rubric(template="{response}", scale={"min": 0, "max": 100}, parse=r"^\s*(\d{1,3})(?!\d)",
                 logprob_position="first", max_tokens=1)


@pytest.mark.parametrize("name", ["local-default", "openai-example", "llama-server"])
def test_shipped_specs_load_by_name(name):
    spec = load_judge_spec(name)
    assert spec.name == name
    assert {"concept", "fluency", "trait", "coherence"} <= set(spec.rubrics)
    assert spec.rubrics["concept"].scale.max == 2 and spec.rubrics["coherence"].scale.max == 100
    path = next(e.path for e in list_specs("judge") if e.name == name)
    assert load_judge_spec(path) == spec == JudgeSpec.from_yaml(path)  # by name, by path: the same spec
    assert load_judge_spec(spec.model_dump()) == spec  # and from a mapping


def test_one_loader_for_includes_and_search_paths(tmp_path):
    """Judge specs go through steeropt.specs: `include:` fragments, search paths, "did you mean"."""
    (tmp_path / "judges").mkdir()
    (tmp_path / "judges" / "shared.part.yaml").write_text(
        "backend: local\nrubrics:\n  yn: {template: 'Fluent? {response}', scale: {min: 0, max: 1}}\n")
    (tmp_path / "judges" / "mine.yaml").write_text("name: my-judge\ninclude: shared.part.yaml\nbatch_size: 3\n")
    spec = load_judge_spec("my-judge", search_paths=[tmp_path])
    assert (spec.batch_size, spec.rubrics["yn"].scale.max) == (3, 1)
    with pytest.raises(SpecError, match="did you mean 'my-judge'"):
        load_judge_spec("my-judg", search_paths=[tmp_path])


def test_openai_example_names_the_key_variable_not_a_key():
    spec = load_judge_spec("openai-example")
    assert (spec.backend, spec.api_key_env) == ("openai", "OPENAI_API_KEY")
    assert spec.rubrics["trait"].max_tokens == 1 and spec.top_logprobs == 20  # persona_vectors settings


def test_from_yaml_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbackend: local\nrubrics:\n  c:\n    template: 'no placeholder'\n")
    with pytest.raises(SpecError) as e:
        JudgeSpec.from_yaml(bad)
    assert "bad.yaml" in str(e.value) and "rubrics.c.template" in str(e.value)
    bad.write_text("name: x\nbackend: local\napi_key_env: sk-abc123\nrubrics: {}\n")
    with pytest.raises(SpecError, match="api_key_env"):
        JudgeSpec.from_yaml(bad)
    with pytest.raises(SpecError, match="did you mean"):
        load_judge_spec("local-defualt")


def test_parse_takes_the_last_rating_in_the_required_format():
    text = "Scores of 0 or 1 are wrong here. First draft Rating: [[1]]... on reflection Rating: [[2]]"
    assert parse_rating(text, AX)[0].rating == 2
    r, _ = parse_rating("I would give it a 2 out of 2.", AX)  # digits but not the format: missing, not 2 or 0
    assert r.rating is None and "required format" in r.missing
    r, _ = parse_rating("Rating: [[7]]", AX)
    assert r.rating is None and "outside the scale" in r.missing


def test_weighted_rating_and_mass_threshold():
    r = weighted_rating({0: 0.1, 1: 0.2, 2: 0.5}, AX)
    assert math.isclose(r.rating, (0.2 + 1.0) / 0.8) and math.isclose(r.valid_mass, 0.8)
    r = weighted_rating({2: 0.2}, AX)
    assert r.rating is None and "0.200" in r.missing  # below persona_vectors' 0.25: missing


def lp(p):
    return math.log(p)


def test_score_from_top_logprobs_at_the_rating_token():
    tokens = [("It", [("It", lp(0.9))]), (" is", [(" is", lp(0.9))]), (" fine", [(" fine", lp(0.9))]),
              (" Rating", [(" Rating", lp(0.9))]), (":", [(":", lp(0.9))]), (" [[", [(" [[", lp(0.9))]),
              ("2", [("2", lp(0.6)), ("1", lp(0.3)), ("x", lp(0.1))]), ("]]", [("]]", lp(0.9))])]
    text = "".join(t for t, _ in tokens)
    r = score_completion(text, tokens, AX)
    assert r.method == "logprobs" and math.isclose(r.rating, (0.6 * 2 + 0.3) / 0.9)
    assert score_completion(text, None, AX).method == "parsed"


def test_persona_first_token_with_single_token_numbers():
    tokens = [("85", [("85", lp(0.5)), ("90", lp(0.3)), ("REF", lp(0.2))])]
    r = score_completion("85", tokens, PERSONA)
    assert r.method == "logprobs" and math.isclose(r.rating, (85 * 0.5 + 90 * 0.3) / 0.8)
    r = score_completion("REFUSAL", [("REF", [("REF", lp(0.9)), ("50", lp(0.05))])], PERSONA)
    assert r.rating is None and "mass" in r.missing


def test_digit_split_tokenizer_never_reads_8_as_a_rating_of_8():
    # "85" as "8","5": the first-token distribution is over leading digits, not ratings
    tokens = [("8", [("8", lp(0.6)), ("9", lp(0.3))]), ("5", [("5", lp(0.7))])]
    r = score_completion("85", tokens, PERSONA)
    assert (r.rating, r.method) == (85, "parsed")
    r = score_completion("8", tokens[:1], PERSONA, cut_off=True)  # max_tokens=1 cut the number
    assert r.rating is None and "max_tokens" in r.missing


def test_normalise():
    assert normalise(1, AX) == 0.5 and normalise(75, PERSONA) == 0.75


def test_rubric_digest_changes_with_the_template_not_the_label():
    assert AX.digest() != AX.model_copy(update={"template": "{response}!"}).digest()
    assert AX.digest() != AX.model_copy(update={"max_tokens": 8}).digest()
    assert AX.digest() == AX.model_copy(update={"description": "x", "style": "axbench"}).digest()
