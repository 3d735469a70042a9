"""The generation fast path (engine/fastpath.py, prefix sharing in engine/generation.py) on the real embedded
model, against transformers' plain `generate` on an unpacked copy of the same weights."""
from __future__ import annotations

import pytest
import torch

from steeropt.engine import fastpath
from steeropt.engine.generation import Decoding, Generator, _layout
from steeropt.engine.models import load_model
from steeropt.types import InterventionPlan, Site

PLANS = [InterventionPlan([], []),
         InterventionPlan([Site(4, "add", "wedding")], [0.2]),
         InterventionPlan([Site(4, "add", "wedding", positions="generated")], [0.3]),
         InterventionPlan([Site(4, "add", "wedding", positions="prompt")], [0.3]),
         InterventionPlan([Site(4, "clamp", "wedding")], [0.5]),
         InterventionPlan([Site(4, "ablate", "wedding")], [1.0]),
         InterventionPlan([Site(4, "affine", "wedding")], [0.5]),
         InterventionPlan([Site(4, "head_add", "wedding_heads", heads=[0, 3])], [0.5])]


@pytest.fixture(scope="module")
def plain():
    """A second, unpacked copy of the embedded model (the shared fixture gets packed by any Generator)."""
    lm = load_model(use_cache=False)
    assert not lm.fast
    return lm


def test_fast_path_gives_the_plain_path_tokens_for_every_controller(embedded, plain, wedding_vectors, wedding_concept):
    prompts = [("p", p) for p in wedding_concept.prompts[:3]] + [("q", "Hi")]  # rows of different lengths
    dec = Decoding(max_new_tokens=20)
    ref = Generator(plain, wedding_vectors, fast=False).run(prompts, PLANS, dec)
    fast = Generator(embedded, wedding_vectors)
    assert fast.fast and not plain.fast
    got = fast.run(prompts, PLANS, dec)
    same = [a.token_ids == b.token_ids for a, b in zip(ref, got)]
    # fp32 throughout; only kernel summation order differs, so a token can flip only at an exact near-tie
    # (seen: 32/32 rows identical, logprobs within 4e-5 nats)
    assert sum(same) >= 0.9 * len(same), [(a.candidate, a.text[:40], b.text[:40]) for a, b, s in zip(ref, got, same) if not s]
    for a, b in zip(ref, got):
        n = next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y), len(a.token_ids))
        assert b.logprobs[:n] == pytest.approx(a.logprobs[:n], abs=1e-3)
        assert a.prompt_ids == b.prompt_ids  # the [prefix][pads][rest] layout keeps each row's prompt


def test_sampled_decoding_is_seeded_on_the_fast_path(embedded, wedding_vectors):
    gen = Generator(embedded, wedding_vectors)
    prompts = [("p", "Tell me about your weekend."), ("p", "Describe a city at night.")]
    dec = Decoding(max_new_tokens=12, temperature=1.0)
    a, b = gen.run(prompts, PLANS[:2], dec, seed=5), gen.run(prompts, PLANS[:2], dec, seed=5)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]


def test_packed_weights_are_the_only_copy_read_back_exactly_and_fall_back_under_autograd(embedded, plain):
    Generator(embedded)  # packs the shared model if no test did yet
    want = dict(plain.model.named_parameters())
    released = set(want) - {n for n, _ in embedded.model.named_parameters()}
    # the projections' weights live only in the packed copy; the embedding (tied to the LM head) and norms stay
    assert released and all(n.rsplit(".", 2)[-2].endswith("proj") for n in released)
    assert "model.embed_tokens.weight" not in released
    for name in sorted(want):  # every weight reads back bit-exact (an identity through the packed matmul)
        module, attr = name.rsplit(".", 1)
        assert torch.equal(getattr(embedded.model.get_submodule(module), attr), want[name]), name
    o_proj = embedded.adapter.o_proj(4)
    assert isinstance(o_proj, fastpath.PackedLinear) and torch.equal(o_proj.weight, plain.adapter.o_proj(4).weight)
    mlp = embedded.adapter.layer(4).mlp
    x = torch.randn(3, 5, embedded.adapter.d_model)
    ref = plain.adapter.layer(4).mlp(x)
    # outputs of ~1e2 on random input: fp32 with another summation order, relative 1e-5
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), ref, rtol=1e-5, atol=1e-3)
    xg = x.clone().requires_grad_(True)
    out = mlp(xg)  # autograd: the parts with their unpacked weights, gradients flow
    out.sum().backward()
    assert xg.grad is not None
    torch.testing.assert_close(out.detach(), ref, rtol=1e-5, atol=1e-3)


def test_shared_prefix_layout_keeps_rows_ending_together(embedded):
    tok = embedded.tokenizer
    ids = [tok(embedded.render(p), add_special_tokens=False)["input_ids"] for p in ("Hi", "Tell me a long story.")]
    n = fastpath.shared_prefix(ids)
    system = tok(embedded.render("Hi").split("<|im_start|>user")[0], add_special_tokens=False)["input_ids"]
    assert n >= len(system)  # at least the chat template's system turn
    rows, mask = _layout(ids, n, tok.pad_token_id)
    assert rows.shape[1] == max(map(len, ids)) and mask[:, -1].all() and mask[:, :n].all()
    for r, x in enumerate(ids):
        assert rows[r][mask[r].bool()].tolist() == x
    assert _layout(ids, 0, tok.pad_token_id)[1][0].tolist()[0] == 0  # shared=0: plain left padding


def test_fast_path_can_be_switched_off(monkeypatch, plain):
    monkeypatch.setenv(fastpath.ENV, "0")
    assert not fastpath.available(plain.model)
    assert not Generator(plain).fast and not plain.fast
