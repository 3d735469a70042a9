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
            # a padded 8-row batch vs one unpadded row: other kernels and reduction orders; logits are
            # O(10), fp32 drift seen ~1e-4; α steps of 0.1 move them by >1e-1
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


@contextmanager
def before_and_after(lm, layer):
    """Layer `layer`'s output in the same forward call before and after the steering hooks: a forward hook
    registered before steer() runs first; the next layer's pre-hook sees the steered output. Their
    difference is exactly what steering added (0.0 where a position was left alone: torch.where keeps x)."""
    pre = []
    h = lm.adapter.layer(layer).register_forward_hook(
        lambda _m, _a, out: pre.append((out[0] if isinstance(out, tuple) else out).detach().clone()))
    try:
        with capture(lm, layer) as post:
            yield pre, post
    finally:
        h.remove()


# x + δ − x in fp32 with |x| up to ~1e3 (the first-token outlier) is δ within ~1e-4; 1e-3 is well below
# the smallest δ tested (α·m ≈ 0.4 · 20 per unit direction, spread over 576 dims: entries ~1e-1).
DELTA_ATOL = 1e-3


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
@pytest.mark.parametrize("positions", ["prompt", "generated", "all"])
def test_positions_with_left_padding_steer_only_real_tokens_of_their_part(embedded, wedding_vectors, positions, fast):
    # Three prompts of different lengths: rows are left-padded by different amounts.
    prompts = [("p", "Hi."), ("p", "Write a short story about a dog and a cat who become best friends."),
               ("p", "What is your favourite season?")]
    vec = wedding_vectors["wedding"]
    want = 0.4 * vec.mean_norm * vec.vector / vec.vector.norm()
    with before_and_after(embedded, 4) as (pre, post):
        samples = Generator(embedded, wedding_vectors, fast=fast).run(prompts, [plan(0.4, positions=positions)],
                                                           Decoding(max_new_tokens=5))
    width = max(len(s.prompt_ids) for s in samples)
    pads = [width - len(s.prompt_ids) for s in samples]
    assert len(set(pads)) == 3 and min(pads) == 0
    calls = list(zip(pre, post))
    if calls[0][0].shape[0] < len(prompts):  # the fast path's shared prefix: once per plan, no pads
        x, y = calls.pop(0)
        if positions == "generated":
            assert (y - x == 0).all(), "a prefix token was steered"
        else:
            torch.testing.assert_close(y - x, want.expand_as(x), atol=DELTA_ATOL, rtol=0)
        width -= x.shape[1]  # the rest of the prompt: [pads][the row's own tokens]
    assert calls[0][0].shape[1] == width and [x.shape[1] for x, _ in calls[1:]] == [1] * (len(calls) - 1)  # KV cache steps
    for call, (x, y) in enumerate(calls):
        delta = y - x
        for r, n_pad in enumerate(pads):
            if call == 0:  # the prompt call: pads, then the row's real prompt tokens
                assert (delta[r, :n_pad] == 0).all(), f"row {r}: a pad was steered"
                real = delta[r, n_pad:]
                if positions == "generated":
                    assert (real == 0).all(), f"row {r}: a prompt token was steered"
                else:
                    torch.testing.assert_close(real, want.expand_as(real), atol=DELTA_ATOL, rtol=0)
            elif positions == "prompt":
                assert (delta[r] == 0).all(), f"row {r}: generated token {call} was steered"
            else:
                torch.testing.assert_close(delta[r], want.expand_as(delta[r]), atol=DELTA_ATOL, rtol=0)


def test_top_contribution_head_carries_the_concept_more_than_the_bottom_head(embedded, wedding_vectors,
                                                                              wedding_concept):
    """head_scores rank heads by how much of the concept direction they write into the residual stream:
    steering the top head alone must move the model's next-token distribution toward the concept's
    words more than steering the bottom head alone (same α)."""
    scores = wedding_vectors["wedding_heads"].head_scores
    top, bottom = int(scores.argmax()), int(scores.argmin())
    tok = embedded.tokenizer
    words = sorted({tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in wedding_concept.keywords})
    texts = [p for p in wedding_concept.prompts]

    def concept_logprob(heads):
        plans = [plan(2.0, "head_add", vector="wedding_heads", heads=heads)] if heads else [InterventionPlan([], [])]
        with steer(embedded, wedding_vectors, plans, [0] * len(texts)):
            _, logits = forward(embedded, texts)
        return float(torch.log_softmax(logits[:, -1].float(), -1)[:, words].logsumexp(-1).mean())

    base = concept_logprob(None)
    gain_top, gain_bottom = concept_logprob((top,)) - base, concept_logprob((bottom,)) - base
    assert gain_top > gain_bottom + 0.05, (top, gain_top, bottom, gain_bottom)


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


def test_raw_alphas_recorded(embedded, wedding_vectors):
    vec = wedding_vectors["wedding"]
    p = InterventionPlan([Site(4, "add", "wedding"), Site(4, "clamp", "wedding"), Site(4, "affine", "wedding")], [0.2, 0.5, 0.7])
    raw = raw_alphas(p, wedding_vectors, embedded)
    assert raw[0] == pytest.approx(0.2 * vec.mean_norm / vec.norm)
    assert raw[1] == pytest.approx(0.5 * vec.mean_norm)
    assert raw[2] == pytest.approx(0.7)


def test_pick_raw_alpha_and_llama_cpp_export_use_the_site_layer(embedded, wedding_vectors, tmp_path):
    """A layer-4 vector steering layer 10: the profile's raw α and the exported control vector must be
    what the add hook really adds at layer 10 (α·m₁₀·v̂), not layer 4's scale."""
    from steeropt.deploy.pick import profile_sites
    from steeropt.deploy.profiles import export_control_vector, read_control_vector

    vec = wedding_vectors["wedding"]
    sites = profile_sites(InterventionPlan([Site(10, "add", "wedding")], [0.3]), wedding_vectors, embedded)
    _, dirs = read_control_vector(export_control_vector(tmp_path / "cv.gguf", sites, wedding_vectors, embedded))
    with before_and_after(embedded, 10) as (pre, post), steer(embedded, wedding_vectors, [plan(0.3, layer=10)]):
        forward(embedded, ["Tell me about your weekend."])
    added = (post[0] - pre[0])[0, -1]  # what the hook added to one token
    torch.testing.assert_close(torch.from_numpy(dirs[10]), added, atol=DELTA_ATOL, rtol=0)
    assert sites[0]["raw_alpha"] == pytest.approx(float(added.norm()) / vec.norm, rel=1e-4)


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
