"""Controllers and per-row strengths on the real embedded model."""
from __future__ import annotations

import pytest
import torch

from steeropt.activations import tokenize
from steeropt.errors import InterventionError
from steeropt.generation import Decoding, Generator
from steeropt.interventions import raw_alphas, steer
from steeropt.types import InterventionPlan, Site

PROMPTS = [("open", "Tell me about your weekend."), ("open", "Write a short story about a dog and a cat.")]


def plan(alpha, controller="add", layer=4, vector="wedding", **kw):
    return InterventionPlan([Site(layer, controller, vector, **kw)], [alpha])


def capture(lm, layer, point="resid"):
    """Register a recorder after any steering hooks, so it sees the steered values."""
    store = []
    if point == "resid":
        h = lm.adapter.layer(layer).register_forward_hook(
            lambda _m, _a, out: store.append((out[0] if isinstance(out, tuple) else out).detach().clone()))
    else:
        h = lm.adapter.o_proj(layer).register_forward_pre_hook(lambda _m, args: store.append(args[0].detach().clone()))
    return store, h


def forward(lm, texts):
    enc = tokenize(lm, texts, render=True)
    with torch.no_grad():
        return enc, lm.model(**enc, use_cache=False).logits


def test_alpha_zero_is_exactly_unsteered(embedded, wedding_vectors):
    gen = Generator(embedded, wedding_vectors)
    dec = Decoding(max_new_tokens=16)
    base = gen.run(PROMPTS, [InterventionPlan([], [])], dec)
    zero = gen.run(PROMPTS, [plan(0.0), plan(0.0, "affine"), plan(0.0, "ablate"), plan(0.0, "head_add", vector="wedding_heads", heads=(0, 3))], dec)
    for k in range(4):
        for j in range(len(PROMPTS)):
            s = zero[k * len(PROMPTS) + j]
            assert s.token_ids == base[j].token_ids
            assert s.logprobs == base[j].logprobs


def test_per_row_alpha_matches_rows_run_alone(embedded, wedding_vectors):
    alphas = [0.0, 0.1, 0.25, 0.4]
    plans = [plan(a) for a in alphas]
    texts = [p for _, p in PROMPTS]
    enc = tokenize(embedded, texts * len(plans), render=True)
    with torch.no_grad(), steer(embedded, wedding_vectors, plans, [i // 2 for i in range(8)]):
        batched = embedded.model(**enc, use_cache=False).logits[:, -1]
    for i, p in enumerate(plans):
        for j, text in enumerate(texts):
            alone_enc = tokenize(embedded, [text], render=True)
            with torch.no_grad(), steer(embedded, wedding_vectors, [p]):
                alone = embedded.model(**alone_enc, use_cache=False).logits[0, -1]
            torch.testing.assert_close(batched[2 * i + j], alone, atol=2e-3, rtol=1e-3)
    # And through generate: one batched call equals separate calls (same prompt: no padding differences).
    gen = Generator(embedded, wedding_vectors)
    dec = Decoding(max_new_tokens=12)
    together = gen.run(PROMPTS[:1], plans, dec)
    for i, p in enumerate(plans):
        assert gen.run(PROMPTS[:1], [p], dec)[0].token_ids == together[i].token_ids


def test_steering_changes_output_monotonically_with_alpha(embedded, wedding_vectors):
    _, base = forward(embedded, ["Tell me about your weekend."])
    dist = []
    for a in (0.05, 0.2, 0.5):
        with steer(embedded, wedding_vectors, [plan(a)]):
            _, logits = forward(embedded, ["Tell me about your weekend."])
        dist.append(float((logits[0, -1] - base[0, -1]).abs().mean()))
    assert 0 < dist[0] < dist[1] < dist[2]


def test_clamp_sets_projection_to_target(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    u = vec.vector / vec.vector.norm()
    for alpha in (0.0, 0.3):
        store, h = capture(embedded, 4)
        try:
            with steer(embedded, wedding_vectors, [plan(alpha, "clamp")]):
                forward(embedded, ["Tell me about your weekend."])
        finally:
            h.remove()
        proj = store[0][0] @ u
        torch.testing.assert_close(proj, torch.full_like(proj, alpha * vec.mean_norm), atol=1e-2, rtol=1e-4)


def test_ablate_removes_projection(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    u = vec.vector / vec.vector.norm()
    store, h = capture(embedded, 4)
    try:
        forward(embedded, ["The bride and the groom said their vows."])
        with steer(embedded, wedding_vectors, [plan(1.0, "ablate")]):
            forward(embedded, ["The bride and the groom said their vows."])
    finally:
        h.remove()
    before, after = store[0][0] @ u, store[1][0] @ u
    assert before.abs().max() > 1.0
    assert after.abs().max() < 1e-3


def test_head_add_changes_only_chosen_heads(embedded, wedding_vectors):
    hd = embedded.adapter.head_dim
    store, h = capture(embedded, 4, "o_proj")
    try:
        forward(embedded, ["Tell me about your weekend."])
        with steer(embedded, wedding_vectors, [plan(0.5, "head_add", vector="wedding_heads", heads=(2, 5))]):
            forward(embedded, ["Tell me about your weekend."])
    finally:
        h.remove()
    diff = (store[1] - store[0]).abs().amax(dim=(0, 1)).view(embedded.adapter.n_heads, hd).amax(1)
    changed = {i for i, d in enumerate(diff.tolist()) if d > 1e-6}
    assert changed == {2, 5}


def test_affine_moves_toward_concept(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    u = vec.vector / vec.vector.norm()
    store, h = capture(embedded, 4)
    try:
        forward(embedded, ["Our office meeting had a long agenda."])
        with steer(embedded, wedding_vectors, [plan(1.0, "affine")]):
            forward(embedded, ["Our office meeting had a long agenda."])
    finally:
        h.remove()
    assert float((store[1][0, 1:] @ u).mean()) > float((store[0][0, 1:] @ u).mean())


def test_positions_generated_leaves_prompt_untouched_with_kv_cache(embedded, wedding_vectors):
    gen = Generator(embedded, wedding_vectors)
    dec = Decoding(max_new_tokens=6)
    runs = {}
    for name, plans in {"base": [InterventionPlan([], [])], "gen": [plan(0.4, positions="generated")],
                        "prompt": [plan(0.4, positions="prompt")]}.items():
        store, h = capture(embedded, 4)
        try:
            runs[name] = (gen.run(PROMPTS[:1], plans, dec)[0], store)
        finally:
            h.remove()
    (base, b_acts), (steered, g_acts), (_, p_acts) = runs["base"], runs["gen"], runs["prompt"]
    assert g_acts[0].shape[1] > 1 and all(a.shape[1] == 1 for a in g_acts[1:])  # prefill, then cached steps
    torch.testing.assert_close(g_acts[0], b_acts[0], atol=0, rtol=0)  # prompt activations untouched
    assert not torch.allclose(g_acts[1], b_acts[1])  # generated positions steered
    assert not torch.allclose(p_acts[0], b_acts[0])  # positions="prompt" does steer the prompt
    assert steered.token_ids != base.token_ids


def test_hooks_removed_after_exception(embedded, wedding_vectors):
    def n_hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in embedded.model.modules())

    before = n_hooks()
    with pytest.raises(RuntimeError, match="boom"):
        with steer(embedded, wedding_vectors, [plan(0.2), plan(0.3, "head_add", vector="wedding_heads", heads=(1,))]):
            assert n_hooks() > before
            raise RuntimeError("boom")
    assert n_hooks() == before
    # a generate that fails inside the hooks (row count mismatch) also leaves none behind
    with pytest.raises(InterventionError, match="rows"):
        Generator(embedded, wedding_vectors)._generate([(0, 0), (0, 1)], PROMPTS, [plan(0.1)], Decoding(4), 0).__next__() \
            if False else _mismatch(embedded, wedding_vectors)
    assert n_hooks() == before


def _mismatch(lm, vectors):
    with steer(lm, vectors, [plan(0.1)], [0, 0, 0]):
        forward(lm, ["one prompt"])


def test_raw_alphas_recorded(wedding_vectors):
    vec = wedding_vectors["wedding"]
    p = InterventionPlan([Site(4, "add", "wedding"), Site(4, "clamp", "wedding"), Site(4, "affine", "wedding")], [0.2, 0.5, 0.7])
    raw = raw_alphas(p, wedding_vectors)
    assert raw[0] == pytest.approx(0.2 * vec.mean_norm / vec.norm)
    assert raw[1] == pytest.approx(0.5 * vec.mean_norm)
    assert raw[2] == pytest.approx(0.7)


@pytest.mark.parametrize("bad, match", [
    (plan(0.1, layer=99), "unknown layer 99"),
    (plan(0.1, "head_add", vector="wedding_heads", heads=(12,)), r"head\(s\) \[12\] out of range"),
    (plan(float("nan")), "NaN or Inf"),
    (plan(float("inf")), "NaN or Inf"),
    (plan(0.1, vector="nope"), "unknown vector 'nope'"),
    (plan(0.1, "twist"), "unknown controller 'twist'"),
    (plan(0.1, "head_add", vector="wedding"), "per-head vector"),
    (InterventionPlan([Site(4, "add", "wedding")], [0.1, 0.2]), "2 strengths for 1 sites"),
])
def test_bad_plans_are_refused_with_a_clear_error(embedded, wedding_vectors, bad, match):
    with pytest.raises(InterventionError, match=match):
        with steer(embedded, wedding_vectors, [bad], prompt_len=4):
            pass
