"""Tier-1 model-free metrics on hand-made token sequences with known answers."""
from __future__ import annotations

import pytest

from steeropt.evaluation.objectives import metrics as M

EOS = 2


def test_rep_n_known_answers():
    assert M.rep_n([1, 2, 3, 4, 5], 3) == 0.0  # 3 trigrams, all unique
    assert M.rep_n([1, 2, 3, 1, 2, 3], 3) == pytest.approx(0.25)  # 123 231 312 123 -> 3 unique of 4
    assert M.rep_n([7] * 10, 3) == pytest.approx(1 - 1 / 8)
    assert M.rep_n([1, 2, 3, 1, 2, 3, 1], 4) == pytest.approx(1 - 3 / 4)
    assert M.rep_n([1, 2], 3) is None  # no trigram: undefined, not 0


def test_distinct_n_known_answers():
    assert M.distinct_n([1, 1, 2, 3], 1) == pytest.approx(3 / 4)
    assert M.distinct_n([1, 2, 1, 2, 1], 2) == pytest.approx(2 / 4)
    assert M.distinct_n([], 1) is None


def test_content_ids_strips_trailing_stop_tokens_only():
    assert M.content_ids([5, EOS, 6, EOS, EOS], {EOS}) == [5, EOS, 6]


def test_tail_loop():
    assert M.tail_loop([9, 8, 7] + [1, 2, 3] * 5, max_period=20, min_span=12) == 3
    assert M.tail_loop(list(range(30)), max_period=20, min_span=12) is None
    assert M.tail_loop([1, 2, 3] * 3, min_span=12) is None  # span 9 < 12
    assert M.tail_loop([4] * 12) == 1


def test_degenerate_kinds():
    assert M.degenerate_kind([EOS], "", True, {EOS}) == "immediate_eos"
    assert M.degenerate_kind([], "", True, {EOS}) == "immediate_eos"
    assert M.degenerate_kind([11, 12, EOS], "  \n", True, {EOS}) == "empty"
    loop = [5, 6, 7, 8] * 12
    assert M.degenerate_kind(loop, "a b c d a b c d", False, {EOS}) == "loop_at_limit"
    # the same loop that ended with EOS is not "cut at the limit" (rep_3 catches it instead)
    assert M.degenerate_kind(loop + [EOS], "a b c d", True, {EOS}) is None
    assert M.degenerate_kind(list(range(100, 148)), "a long fluent answer", False, {EOS}) is None


def test_keywords_are_whole_words_by_default():
    """Bug 12: 'star' matched 'start' (word-start prefix), a 0.17 keyword rate at alpha = 0 on astronomy."""
    pats = M.compile_keywords(["star", "ring", "best man"])
    assert M.keyword_hits("Start the car, restart it, a starter", pats) == 0
    assert M.keyword_hits("A STAR, the star. Stars and starry skies", pats) == 2  # plurals are other words
    assert M.keyword_hits("a string of rings", pats) == 0
    assert M.keyword_hits("the ring, the best\nman", pats) == 2  # spaces match any whitespace


def test_keyword_stems_and_raw_regex():
    pats = M.compile_keywords(["astronom*", "marr*", r"re:\bgalax(y|ies)\b"])
    assert M.keyword_hits("Astronomy, astronomers and astronomical units", pats) == 3
    assert M.keyword_hits("They married; marriage; they marry", pats) == 3
    assert M.keyword_hits("a galaxy, two galaxies, galactic", pats) == 2
    assert M.keyword_hits("gastronomy and a summary", pats) == 0  # a stem still starts a word
    assert M.keyword_hits("bridal and bride", M.compile_keywords([r"re:brid(e|al)"])) == 2  # as written


def test_regex_characters_in_a_plain_keyword_are_refused():
    for bad in ("stars?", "galax(y|ies)", r"ring\b"):
        with pytest.raises(ValueError, match="re:"):
            M.compile_keywords([bad])
    with pytest.raises(ValueError, match="no letter"):
        M.compile_keywords(["*"])


@pytest.mark.parametrize("name", ["astronomy", "dogs", "music", "wedding"])
def test_shipped_concept_keywords_compile_and_do_not_hit_neutral_words(name):
    from steeropt.specs.concepts import load_concept

    pats = M.compile_keywords(load_concept(name).keywords)
    neutral = "Start the day: restart, bandage the dogma, vowels, spacious doghouses, songbirdless mooning, a tailor"
    assert M.keyword_hits(neutral, pats) == 0


def test_cheap_metrics_row():
    m = M.cheap_metrics([1, 2, 3, 1, 2, 3, EOS], "a wedding", True, {EOS}, M.compile_keywords(["wedding"]))
    assert m["n_tokens"] == 6 and m["rep_3"] == pytest.approx(0.25)
    assert m["keyword_hit"] == 1.0 and m["keyword_hits"] == 1.0
    assert m["degenerate"] == 0.0 and m["degenerate_kind"] is None
    assert M.cheap_metrics([1], "x", True, {EOS}, [])["keyword_hit"] is None  # no keywords: not measured
