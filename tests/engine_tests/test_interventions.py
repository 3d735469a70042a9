"""Controllers and per-row strengths on the real embedded model."""
from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from steeropt.engine.activations import tokenize
from steeropt.errors import InterventionError
from steeropt.engine.generation import Decoding, Generator
from steeropt.engine.interventions import raw_alphas, steer
from steeropt.types import InterventionPlan, Site

PROMPTS = [("open", "Tell me about your weekend."), ("open", "Write a short story about a dog and a cat.")]


def plan(alpha, controller="add", layer=4, vector="wedding", **kw):
    return InterventionPlan([Site(layer, controller, vector, **kw)], [alpha])


@contextmanager
def capture(lm, layer, point="resid"):
    """Record what the next module sees, whenever the steering hooks were registered: the layer's output
    as the input of layer+1, or the o_proj input (forward hooks get the args after every pre-hook)."""
    store = []
    if point == "resid":
        def pre(_m, args, kwargs):
            store.append((args[0] if args else kwargs["hidden_states"]).detach().clone())
        h = lm.adapter.layer(layer + 1).register_forward_pre_hook(pre, with_kwargs=True)
    else:
        h = lm.adapter.o_proj(layer).register_forward_hook(lambda _m, args, _out: store.append(args[0].detach().clone()))
    try:
        yield store
    finally:
        h.remove()


def forward(lm, texts):
    enc = tokenize(lm, texts, render=True)
    with torch.no_grad():
        return enc, lm.model(**enc, use_cache=False).logits


# Logprobs of the same text in different batch rows differ in the last bits: fp32 matmul reductions
# depend on batch shape, row position and thread count (seen: 2.4e-6 apart). 1e-4 nats is 40x that and
# still far below what the smallest strength tested anywhere moves (α=0.05 changes logits by ~1e-2).
LOGPROB_ATOL = 1e-4


def test_alpha_zero_is_exactly_unsteered(embedded, wedding_vectors):
    # α=0 on add/affine/ablate/head_add is the identity: same tokens exactly, logprobs within LOGPROB_ATOL.
    gen = Generator(embedded, wedding_vectors)
    dec = Decoding(max_new_tokens=16)
    plans = [InterventionPlan([], []), plan(0.0), plan(0.0, "affine"), plan(0.0, "ablate"),
             plan(0.0, "head_add", vector="wedding_heads", heads=(0, 3))]
    out = gen.run(PROMPTS, plans, dec)
    n = len(PROMPTS)
    base = out[:n]
    for k in range(1, len(plans)):
        for j in range(n):
            s = out[k * n + j]
            assert s.token_ids == base[j].token_ids
            assert s.logprobs == pytest.approx(base[j].logprobs, abs=LOGPROB_ATOL)
    # and an unsteered call without any hooks gives the same tokens
    alone = gen.run(PROMPTS, [InterventionPlan([], [])], dec)
    assert [s.token_ids for s in alone] == [s.token_ids for s in base]


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
    for a in (0.05, 0.2):
        with steer(embedded, wedding_vectors, [plan(a)]):
            _, logits = forward(embedded, ["Tell me about your weekend."])
        dist.append(float((logits[0, -1] - base[0, -1]).abs().mean()))
    assert 0 < dist[0] < dist[1]


def test_clamp_sets_projection_to_target(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    u = vec.vector / vec.vector.norm()
    for alpha in (0.0, 0.3):
        with steer(embedded, wedding_vectors, [plan(alpha, "clamp")]), capture(embedded, 4) as store:
            forward(embedded, ["Tell me about your weekend."])
        proj = store[0][0] @ u
        torch.testing.assert_close(proj, torch.full_like(proj, alpha * vec.mean_norm), atol=1e-2, rtol=1e-4)


def test_ablate_removes_projection(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    u = vec.vector / vec.vector.norm()
    with capture(embedded, 4) as store:
        forward(embedded, ["The bride and the groom said their vows."])
    with steer(embedded, wedding_vectors, [plan(1.0, "ablate")]), capture(embedded, 4) as steered:
        forward(embedded, ["The bride and the groom said their vows."])
    before, after = store[0][0] @ u, steered[0][0] @ u
    assert before.abs().max() > 1.0
    assert after.abs().max() < 1e-3


def test_head_add_changes_only_chosen_heads(embedded, wedding_vectors):
    hd = embedded.adapter.head_dim
    with capture(embedded, 4, "o_proj") as store:
        forward(embedded, ["Tell me about your weekend."])
    with steer(embedded, wedding_vectors, [plan(0.5, "head_add", vector="wedding_heads", heads=(2, 5))]), \
            capture(embedded, 4, "o_proj") as steered:
        forward(embedded, ["Tell me about your weekend."])
    diff = (steered[0] - store[0]).abs().amax(dim=(0, 1)).view(embedded.adapter.n_heads, hd).amax(1)
    changed = {i for i, d in enumerate(diff.tolist()) if d > 1e-6}
    assert changed == {2, 5}


def test_affine_moves_toward_concept(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    u = vec.vector / vec.vector.norm()
    with capture(embedded, 4) as store:
        forward(embedded, ["Our office meeting had a long agenda."])
    with steer(embedded, wedding_vectors, [plan(1.0, "affine")]), capture(embedded, 4) as steered:
        forward(embedded, ["Our office meeting had a long agenda."])
    assert float((steered[0][0, 1:] @ u).mean()) > float((store[0][0, 1:] @ u).mean())


def test_positions_generated_leaves_prompt_untouched_with_kv_cache(embedded, wedding_vectors):
    gen = Generator(embedded, wedding_vectors)
    dec = Decoding(max_new_tokens=6)
    runs = {}
    for name, plans in {"base": [InterventionPlan([], [])], "gen": [plan(0.4, positions="generated")],
                        "prompt": [plan(0.4, positions="prompt")]}.items():
        with capture(embedded, 4) as store:
            runs[name] = (gen.run(PROMPTS[:1], plans, dec)[0], store)
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
        with steer(embedded, wedding_vectors, [plan(0.1)], [0, 0, 0]):  # 3 row plans for a 1-row batch
            forward(embedded, ["one prompt"])
    assert n_hooks() == before


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
