"""Qwen2 models (grouped-query attention, biases on q/k/v) through every controller and the fast path, on the real
Qwen2.5-Coder-0.5B-Instruct: the same architecture and code path as the quickstart's 1.5B at a third of the cost
(12 query heads over 2 KV heads there, 14 over 2 here). The 1.5B itself: tests/study_tests/test_qwen15_quickstart.py."""
from __future__ import annotations

import pytest
import torch

from steeropt.engine import fastpath
from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.models import load_model
from steeropt.engine.vectors import VectorSet, diff_in_means, head_contribution_scores
from steeropt.types import InterventionPlan, Site

MODEL = "qwen2.5-coder-0.5b-instruct"
LAYER = 12


@pytest.fixture(scope="module")
def qwen05(wedding_concept):
    lm = load_model(MODEL)
    c = wedding_concept
    vs = VectorSet()
    vs.add(diff_in_means(lm, c.positive, c.negative, LAYER, name="wedding"))
    vs.add(diff_in_means(lm, c.positive, c.negative, LAYER, name="wedding_heads", site="heads"))
    return lm, vs


@pytest.fixture(scope="module")
def plain_qwen05():
    """An unpacked copy: the module fixture's model gets packed by its first Generator."""
    lm = load_model(MODEL, use_cache=False)
    assert not lm.fast
    return lm


def plans(vs, lm) -> list[InterventionPlan]:
    top = [int(h) for h in torch.argsort(vs["wedding_heads"].head_scores, descending=True)[:2]]
    return [InterventionPlan([], []),
            InterventionPlan([Site(LAYER, "add", "wedding")], [0.4]),
            InterventionPlan([Site(LAYER, "add", "wedding", positions="generated")], [0.4]),
            InterventionPlan([Site(LAYER, "clamp", "wedding")], [0.5]),
            InterventionPlan([Site(LAYER, "ablate", "wedding")], [1.0]),
            InterventionPlan([Site(LAYER, "affine", "wedding")], [0.5]),
            InterventionPlan([Site(LAYER, "head_add", "wedding_heads", heads=top)], [1.0]),
            InterventionPlan([], [], instruction="In your answer, bring in weddings.")]


def test_qwen2_attention_is_fused_and_heads_follow_the_query_heads(qwen05):
    lm, vs = qwen05
    Generator(lm, vs)  # packs the model once
    attn = lm.adapter.layer(LAYER).self_attn
    assert lm.fast and isinstance(attn.qkv, fastpath.PackedLinear) and attn.qkv.bias is not None  # q/k/v biases kept
    cfg = lm.model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    # head-level steering acts on the o_proj input: one slot per QUERY head, whatever the KV grouping
    assert vs["wedding_heads"].vector.numel() == lm.adapter.n_heads * lm.adapter.head_dim
    scores = head_contribution_scores(lm, LAYER, vs["wedding_heads"].vector)
    assert scores.shape == (lm.adapter.n_heads,) and torch.isfinite(scores).all()


def test_fast_path_gives_the_plain_path_tokens_on_qwen2(qwen05, plain_qwen05, wedding_concept):
    lm, vs = qwen05
    prompts = [("p", p) for p in wedding_concept.prompts[:2]] + [("q", "Hi")]  # rows of different lengths
    dec = Decoding(max_new_tokens=16)
    ps = plans(vs, lm)
    ref = Generator(plain_qwen05, vs, fast=False).run(prompts, ps, dec)
    got = Generator(lm, vs).run(prompts, ps, dec)
    same = [a.token_ids == b.token_ids for a, b in zip(ref, got)]
    # fp32 throughout; only kernel summation order differs, so a token flips only at an exact near-tie
    assert sum(same) >= 0.9 * len(same), [(a.candidate, a.text[:40], b.text[:40]) for a, b, s in zip(ref, got, same) if not s]
    for a, b in zip(ref, got):
        n = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), len(a.token_ids))
        assert b.logprobs[:n] == pytest.approx(a.logprobs[:n], abs=1e-3)
    # every controller acts: its rows' tokens, or else their logprobs, differ from the unsteered rows
    base = [s for s in got if s.candidate == 0]
    for k in range(1, len(ps)):
        rows = [s for s in got if s.candidate == k]
        moved = any(a.token_ids != b.token_ids or max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) > 1e-3
                    for a, b in zip(rows, base))
        assert moved, ps[k]
    prompted = [s for s in got if s.candidate == len(ps) - 1]
    assert all(s.instruction and s.prompt_ids != b.prompt_ids for s, b in zip(prompted, got[:len(prompts)]))
