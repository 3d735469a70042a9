"""`vector.apply(model, alpha=...)`: the steering-vectors-like context manager, in normalised and raw units, on the
real embedded model; plain string prompts and `Sample.alpha` in the Generator; the names `steeropt` exports."""
from __future__ import annotations

import pytest
import torch

import steeropt
from steeropt.engine.generation import Decoding, Generator
from steeropt.errors import InterventionError
from steeropt.types import InterventionPlan, Site

PROMPT = "Tell me about your weekend."


def _greedy(lm, prompt: str, n: int = 10) -> list[int]:
    enc = lm.tokenizer(lm.render(prompt), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = lm.model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def _last_logits(lm, prompt: str) -> torch.Tensor:
    enc = lm.tokenizer(lm.render(prompt), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        return lm.model(**enc).logits[0, -1].float()


def test_apply_matches_the_generator_and_leaves_the_model_clean(embedded, wedding_vectors):
    lm, vec = embedded, wedding_vectors["wedding"]
    plain = _greedy(lm, PROMPT)
    gen = Generator(lm, wedding_vectors, fast=False)
    plans = [InterventionPlan([Site(vec.layer, "add", vec.name)], [0.4])]
    (s,) = gen.run([PROMPT], plans, Decoding(max_new_tokens=10))
    with vec.apply(lm, alpha=0.4):
        steered = _greedy(lm, PROMPT)
    assert steered == s.token_ids[:len(steered)]  # the same steering as a study's batched path
    assert steered != plain  # 0.4 of a typical activation norm changes the answer
    assert _greedy(lm, PROMPT) == plain  # hooks removed on exit
    with pytest.raises(RuntimeError):
        with vec.apply(lm, alpha=0.4):
            raise RuntimeError("boom")
    assert _greedy(lm, PROMPT) == plain  # ... also when the block raises


def test_raw_coefficient_is_x_plus_c_v(embedded, wedding_vectors):
    """coefficient=c adds c·v as steering-vectors and repeng do, and equals alpha = c·|v|/m."""
    lm, vec = embedded, wedding_vectors["wedding"]
    c = 3.0
    layer = lm.adapter.layer(vec.layer)

    def hand(_m, _a, out):  # the other libraries' operation, written out
        return (out[0] + c * vec.vector.to(out[0].dtype),) + tuple(out[1:]) if isinstance(out, tuple) else out + c * vec.vector
    h = layer.register_forward_hook(hand)
    try:
        want = _last_logits(lm, PROMPT)
    finally:
        h.remove()
    with vec.apply(lm, coefficient=c):
        raw = _last_logits(lm, PROMPT)
    alpha = c * vec.norm / vec.mean_norm
    assert alpha == pytest.approx(vec.alpha_from_raw(c), rel=1e-9)
    assert vec.raw_from_alpha(alpha) == pytest.approx(c, rel=1e-9)
    with vec.apply(lm, alpha=alpha):
        norm = _last_logits(lm, PROMPT)
    base = _last_logits(lm, PROMPT)
    assert (want - base).abs().max() > 0.5  # the push is large enough to test
    assert torch.allclose(raw, want, atol=2e-3) and torch.allclose(norm, want, atol=2e-3)


def test_apply_on_a_plain_transformers_model_and_bad_strengths(embedded, wedding_vectors):
    lm, vec = embedded, wedding_vectors["wedding"]
    with vec.apply(lm.model, alpha=0.4, tokenizer=lm.tokenizer):  # not a LoadedModel: any transformers model
        steered = _greedy(lm, PROMPT)
    with vec.apply(lm, alpha=0.4):
        assert _greedy(lm, PROMPT) == steered
    with pytest.raises(InterventionError, match="exactly one"):
        with vec.apply(lm):
            pass
    with pytest.raises(InterventionError, match="exactly one"):
        with vec.apply(lm, alpha=0.1, coefficient=1.0):
            pass


def test_plain_string_prompts_and_sample_alpha(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    gen = Generator(embedded, wedding_vectors)
    plans = [InterventionPlan([Site(vec.layer, "add", vec.name)], [a]) for a in (0.0, 0.3)]
    plans.append(InterventionPlan([], []))
    by_str = gen.run([PROMPT, "Describe a kitchen."], plans, Decoding(max_new_tokens=6))
    by_pair = gen.run([("default", PROMPT), ("default", "Describe a kitchen.")], plans, Decoding(max_new_tokens=6))
    assert [s.token_ids for s in by_str] == [s.token_ids for s in by_pair]
    assert {s.family for s in by_str} == {"default"}
    assert [s.alpha for s in by_str] == [0.0, 0.0, 0.3, 0.3, None, None]


def test_the_readme_names_are_exported():
    for name in ("VectorSet", "diff_in_means", "InterventionPlan", "Site", "load_concept", "load_model",
                 "Generator", "Decoding", "SteeringVector", "apply_vector"):
        assert name in steeropt.__all__ and getattr(steeropt, name) is not None, name
    assert steeropt.Site is Site and steeropt.InterventionPlan is InterventionPlan
