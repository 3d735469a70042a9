"""The local backend on the real embedded model: logprob scores, digit tree, batching, cache."""
from __future__ import annotations

import json
import math

import pytest

from steeropt.evaluation.judges import JudgeRequest, load_judge_spec, make_judge

FLUENT = "The bride walked down the aisle and the guests cheered as the couple exchanged their vows."
GIBBERISH = "xq plorm vantish grebble oo nattic wem sprandle kooth ibber fane dos"


@pytest.fixture()
def judge(judge_lm, tmp_path):
    spec = load_judge_spec("local-default")
    j = make_judge(spec, lm=judge_lm, cache=tmp_path / "cache.sqlite")
    yield j
    j.close()


def test_scores_from_logprobs_on_both_scales(judge):
    reqs = [JudgeRequest("fluency", "Tell me about a wedding.", FLUENT, "weddings"),
            JudgeRequest("fluency", "Tell me about a wedding.", GIBBERISH, "weddings"),
            JudgeRequest("coherence", "Tell me about a wedding.", FLUENT, "weddings")]
    res = judge.judge(reqs)
    for r in res:
        assert r.missing is None and r.method == "logprobs" and 0.0 <= r.score <= 1.0
        assert r.valid_mass >= 0.25 and not r.cached
    assert math.isclose(res[0].score, res[0].rating / 2)
    assert math.isclose(res[2].score, res[2].rating / 100)
    dist = json.loads(res[2].raw)  # 0-100 via the digit tree: multi-digit ratings get their own mass
    assert any(int(v) >= 10 for v in dist)
    assert judge.stats.calls == 3 and judge.stats.forward_passes >= 3


# (prompt, fluent answer, broken answer). Clear-cut breaks only: measured on the 135M judge, fluency_yn orders
# these by 0.06-0.19 in P("1"), but NOT shuffled-word salad (4 pairs: margins -0.03 to +0.04, two reversed),
# a loop of "of" (-0.05) or symbol garbage (-0.01); see the report of issue 10.
CLEAR_PAIRS = [
    ("Tell me about a wedding.", FLUENT, GIBBERISH),
    ("Tell me about your weekend.", "On Saturday I went hiking with my sister, and on Sunday we cooked dinner together.",
     "asdf qwer zxcv uiop hjkl vbnm tyui ghjk wert sdfg xcvb"),
    ("Describe a city you like.", "I love Lisbon because its old streets are full of light and the food is wonderful.",
     "blorf zindle quapper vesh trom glibbet yarn sprock fen dulm ottle"),
    ("How do plants grow?", "Plants take in water through their roots and use sunlight to turn carbon dioxide into sugar.",
     " ".join(["the"] * 18)),
    ("Give me some advice for a job interview.",
     "Arrive a few minutes early, research the company, and prepare short examples of your past work.",
     " ".join(["interview"] * 10)),
]


def test_fluency_yn_ranks_fluent_text_above_broken_text(judge):
    """P(fluent) is higher for the fluent answer of every pair, by more than 0.02: batch and thread effects
    move these scores by < 1e-3 (test_batching_does_not_change_scores), the measured margins are >= 0.057."""
    reqs = [JudgeRequest("fluency_yn", p, t) for p, good, bad in CLEAR_PAIRS for t in (good, bad)]
    res = judge.judge(reqs)
    assert all(r.method == "logprobs" and r.valid_mass > 0.9 for r in res)
    margins = [res[i].score - res[i + 1].score for i in range(0, len(res), 2)]
    assert all(m > 0.02 for m in margins), margins


def test_batching_does_not_change_scores(judge_lm, tmp_path):
    spec = load_judge_spec("local-default")
    reqs = [JudgeRequest("fluency", "Describe your day.", t) for t in (FLUENT, "Short.", FLUENT + " " + GIBBERISH)]
    one = make_judge(spec.model_copy(update={"batch_size": 1}), lm=judge_lm, cache=None).judge(reqs)
    many = make_judge(spec.model_copy(update={"batch_size": 3}), lm=judge_lm, cache=None).judge(reqs)
    for a, b in zip(one, many):  # left padding + position ids: same numbers whatever the batch
        assert abs(a.rating - b.rating) < 1e-3


def test_rerun_makes_zero_new_judge_calls(judge, judge_lm, tmp_path):
    reqs = [JudgeRequest("fluency", "p", FLUENT), JudgeRequest("fluency", "p", FLUENT),  # duplicate
            JudgeRequest("concept", "p", GIBBERISH, "weddings")]
    first = judge.judge(reqs)
    assert judge.stats.calls == 2  # duplicates judged once
    passes = judge.stats.forward_passes
    again = make_judge(load_judge_spec("local-default"), lm=judge_lm, cache=tmp_path / "cache.sqlite")
    second = again.judge(reqs)
    assert again.stats.calls == 0 and again.stats.forward_passes == 0 and again.stats.cache_hits == 3
    assert all(r.cached for r in second)
    assert [r.score for r in first] == [r.score for r in second]  # exact: read back from SQLite, not recomputed
    assert judge.stats.forward_passes == passes


def test_low_valid_mass_is_missing_and_not_cached(judge_lm, tmp_path):
    spec = load_judge_spec("local-default")
    rub = spec.rubrics["fluency"].model_copy(update={"answer_prefix": "", "min_valid_mass": 0.99})
    spec = spec.model_copy(update={"rubrics": {"fluency": rub}})
    j = make_judge(spec, lm=judge_lm, cache=tmp_path / "c.sqlite")
    [r] = j.judge([JudgeRequest("fluency", "p", FLUENT)])
    assert r.score is None and r.rating is None and "probability mass" in r.missing
    assert len(j.cache) == 0 and j.stats.missing == 1
