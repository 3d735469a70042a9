"""Batched generation on the real embedded model."""
from __future__ import annotations

import re

import pytest
import torch

from steeropt.engine.activations import tokenize
from steeropt.errors import SteeroptError
from steeropt.engine.generation import Decoding, Generator
from steeropt.types import InterventionPlan, Site


def test_logprobs_match_teacher_forcing_and_sampling_is_seeded(embedded):
    gen = Generator(embedded)
    s = gen.run([("f", "Name three colours.")], [], Decoding(max_new_tokens=10))[0]
    ids = torch.tensor([s.prompt_ids + s.token_ids])
    with torch.no_grad():
        logits = embedded.model(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    n = len(s.prompt_ids)
    expected = [float(lp[n - 1 + i, t]) for i, t in enumerate(s.token_ids)]
    assert s.logprobs == pytest.approx(expected, abs=1e-3)
    dec = Decoding(max_new_tokens=10, temperature=1.0)
    a, b = gen.run([("f", "Name three colours.")], [], dec, seed=3), gen.run([("f", "Name three colours.")], [], dec, seed=3)
    assert a[0].token_ids == b[0].token_ids


def test_chunking_under_memory_cap_gives_same_samples(embedded, wedding_vectors):
    prompts = [("a", "Describe your ideal vacation."), ("b", "What is your favourite season?")]
    plans = [InterventionPlan([Site(4, "add", "wedding")], [a]) for a in (0.0, 0.15, 0.3)]
    dec = Decoding(max_new_tokens=8)
    big = Generator(embedded, wedding_vectors).run(prompts, plans, dec)
    small_gen = Generator(embedded, wedding_vectors, memory_cap_gb=0.01)
    assert small_gen.rows_per_call(40, dec) < 6
    small = small_gen.run(prompts, plans, dec)
    assert [(s.candidate, s.family) for s in big] == [(p, f) for p in range(3) for f in ("a", "b")]
    for x, y in zip(big, small):
        assert x.token_ids == y.token_ids


def test_keyword_rate_rises_from_zero_to_sweet_spot(embedded, wedding_vectors, wedding_concept):
    pattern = re.compile(r"\b(" + "|".join(wedding_concept.keywords) + r")\b", re.I)
    prompts = [("p", p) for p in wedding_concept.prompts]
    plans = [InterventionPlan([Site(4, "add", "wedding")], [a]) for a in (0.0, 0.4)]
    samples = Generator(embedded, wedding_vectors).run(prompts, plans, Decoding(max_new_tokens=40))
    n = len(prompts)
    rate = [sum(bool(pattern.search(s.text)) for s in samples[k * n:(k + 1) * n]) / n for k in range(2)]
    assert rate[0] <= 0.125
    assert rate[1] >= rate[0] + 0.2, rate


def test_bad_decoding_and_empty_prompts(embedded):
    with pytest.raises(SteeroptError, match="max_new_tokens"):
        Decoding(max_new_tokens=0)
    with pytest.raises(SteeroptError, match="no prompts"):
        Generator(embedded).run([], [])
