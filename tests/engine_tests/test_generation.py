"""Batched generation on the real embedded model."""
from __future__ import annotations

import gc

import pytest
import torch

from steeropt.engine.activations import tokenize
from steeropt.errors import SteeroptError
from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.interventions import steer
from steeropt.evaluation.objectives.metrics import compile_keywords
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
    # cached one-token steps vs one full forward: other kernels; drift seen ~1e-5 nats, a token swap >1e-1
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
    patterns = compile_keywords(wedding_concept.keywords)
    prompts = [("p", p) for p in wedding_concept.prompts]
    plans = [InterventionPlan([Site(4, "add", "wedding")], [a]) for a in (0.0, 0.4)]
    samples = Generator(embedded, wedding_vectors).run(prompts, plans, Decoding(max_new_tokens=40))
    n = len(prompts)
    rate = [sum(any(p.search(s.text) for p in patterns) for s in samples[k * n:(k + 1) * n]) / n for k in range(2)]
    assert rate[0] <= 0.125
    assert rate[1] >= rate[0] + 0.2, rate


def test_bad_decoding_and_empty_prompts(embedded):
    with pytest.raises(SteeroptError, match="max_new_tokens"):
        Decoding(max_new_tokens=0)
    with pytest.raises(SteeroptError, match="no prompts"):
        Generator(embedded).run([], [])


def test_steered_logprobs_with_padding_match_generate_logits(embedded, wedding_vectors):
    """The per-step chosen-token logprob equals log_softmax of generate's own raw logits at the chosen
    token, for padded rows of different lengths, steered rows, and a row stopping at EOS early."""
    prompts = [("a", "Say only the word yes."), ("b", "Write a long story about a lighthouse keeper and the sea.")]
    plans = [InterventionPlan([], []), InterventionPlan([Site(4, "add", "wedding")], [0.3])]
    dec = Decoding(max_new_tokens=12)
    samples = Generator(embedded, wedding_vectors).run(prompts, plans, dec)
    assert samples[0].finished and len(samples[0].token_ids) < 12  # the unsteered "yes" row stops early
    tok = embedded.tokenizer
    for k, p in enumerate(plans):
        enc = tok([embedded.render(t) for _, t in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad(), steer(embedded, wedding_vectors, [p], [0, 0], prompt_len=enc["input_ids"].shape[1]):
            out = embedded.model.generate(**enc, **dec.generate_kwargs(), pad_token_id=tok.pad_token_id,
                                          return_dict_in_generate=True, output_logits=True)
        lp = torch.log_softmax(torch.stack(out.logits, 1).float(), -1)
        for j in range(len(prompts)):
            s = samples[k * len(prompts) + j]
            want = [float(lp[j, i, t]) for i, t in enumerate(s.token_ids)]
            # the Generator's fast path (packed weights, shared prefix) sums in another order: seen 4e-5
            assert s.logprobs == pytest.approx(want, abs=1e-4)


def test_generation_holds_one_step_of_logits_not_every_step(embedded):
    """Peak vocab-sized memory during generate: a few [B, V] step buffers, not [B, steps, V]."""
    vocab = embedded.model.config.vocab_size
    peak = []

    def probe(_m, _args, _out):
        gc.collect()
        peak.append(sum(o.numel() for o in gc.get_objects()
                        if isinstance(o, torch.Tensor) and o.dim() >= 1 and o.shape[-1] == vocab))

    rows, steps = 3, 24
    prompts = [("p", "Tell me about the sea."), ("p", "Name a colour."), ("p", "What is a cat?")]
    h = embedded.model.lm_head.register_forward_hook(probe)
    try:
        Generator(embedded).run(prompts, [], Decoding(max_new_tokens=steps))
    finally:
        h.remove()
    assert len(peak) >= steps // 2
    assert max(peak) <= 6 * rows * vocab, max(peak) / (rows * vocab)  # every step's logits: ~steps x that
