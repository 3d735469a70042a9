"""Prompt families: reading, checks and the deterministic selection / held-out split."""
from __future__ import annotations

import re

import pytest

from steeropt.errors import SpecError
from steeropt.specs.prompts import (PromptFamily, check_unique, load_family, read_pairs, read_texts, split_families,
                              split_family)

from .conftest import REPO

DATA = REPO / "studies" / "data"


def test_shipped_data_files():
    for name in ("open_ended", "advice", "descriptions"):
        fam = load_family(name, path=DATA / f"{name}.jsonl")
        # 24 per family: 12 selection (trials + fresh ones for re-evaluation) and 12 held out
        assert len(fam.prompts) == 24 and len(set(fam.prompts)) == 24
        assert not any("wedd" in p.lower() or "marr" in p.lower() for p in fam.prompts)
    pos, neg = read_texts(DATA / "wedding_positive.txt"), read_texts(DATA / "wedding_neutral.txt")
    assert 8 <= len(pos) == len(neg) <= 12
    concept = re.compile(r"wedd|bride|groom|vows|marri|newlywed|honeymoon|husband", re.I)
    assert all(concept.search(t) for t in pos) and not any(concept.search(t) for t in neg)


def test_split_is_deterministic_disjoint_and_complete():
    fam = PromptFamily("f", tuple(f"prompt {i}" for i in range(11)))
    sel, held = split_family(fam, 0.5, seed=1)
    assert (sel, held) == split_family(fam, 0.5, seed=1)
    assert not set(sel) & set(held) and sorted(sel + held) == sorted(fam.prompts)
    assert len(sel) == 6 - 1 or len(sel) == 6  # round(5.5) under banker's rounding
    assert split_family(fam, 0.5, seed=2) != (sel, held)
    # each part keeps file order
    assert sel == sorted(sel, key=fam.prompts.index) and held == sorted(held, key=fam.prompts.index)


def test_split_depends_on_family_name_not_on_other_families():
    a = PromptFamily("a", tuple(f"a{i}" for i in range(8)))
    b = PromptFamily("b", tuple(f"b{i}" for i in range(8)))
    alone = split_families([a], 0.5, 0)["a"]
    with_b = split_families([a, b], 0.5, 0)["a"]
    assert alone == with_b


def test_both_parts_non_empty_even_at_extreme_fractions():
    fam = PromptFamily("two", ("x", "y"))
    for frac in (0.01, 0.5, 0.99):
        sel, held = split_family(fam, frac, 0)
        assert len(sel) == 1 and len(held) == 1


def test_family_checks():
    with pytest.raises(SpecError, match="prompt family 'e' is empty"):
        load_family("e", prompts=[])
    with pytest.raises(SpecError, match="has only 1 prompt"):
        load_family("one", prompts=["hi"])
    with pytest.raises(SpecError, match="repeats the prompt 'hi'"):
        load_family("rep", prompts=["hi", "yo", "hi"])
    with pytest.raises(SpecError, match="exactly one of 'path' or 'prompts'"):
        load_family("both", path="x.jsonl", prompts=["a", "b"])
    fams = [PromptFamily("a", ("1", "2")), PromptFamily("b", ("1", "2")), PromptFamily("a", ("3", "4"))]
    with pytest.raises(SpecError, match="duplicate prompt family names: a"):
        check_unique(fams)


def test_jsonl_reading(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_text('{"prompt": "one"}\n\n"two"\n{"text": "three"}\n')
    assert read_texts(p) == ["one", "two", "three"]
    p.write_text('{"prompt": "one"}\n{"prompt": \n')
    with pytest.raises(SpecError, match="line 2: invalid JSON"):
        read_texts(p)
    p.write_text('{"other": "one"}\n')
    with pytest.raises(SpecError, match="line 1: expected a non-empty string"):
        read_texts(p)
    t = tmp_path / "t.txt"
    t.write_text("# comment\nfirst\n\n  second  \n")
    assert read_texts(t) == ["first", "second"]


def test_pairs(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"positive": "a wedding", "negative": "a meeting"}\n{"prompt": "q", "positive": "x", "negative": "y"}\n')
    assert read_pairs(p)[1] == {"prompt": "q", "positive": "x", "negative": "y"}
    p.write_text('{"positive": "only one side"}\n')
    with pytest.raises(SpecError, match="'positive' and 'negative'"):
        read_pairs(p)
