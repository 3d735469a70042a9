"""The family router on the real embedded model: held-out accuracy, the unknown outcome, family="auto"."""
from __future__ import annotations

import pytest
import torch

from steeropt.errors import SteeroptError
from steeropt.deploy.profiles import ProfileError, apply_profile, generate, load_profile, routes
from steeropt.deploy.router import build_router

OFF_TOPIC = "def foo(x): return x + 1"  # code: measured cosine 0.05 to the nearest family, threshold ~0.10


def test_router_is_stored_with_held_out_accuracy(deploy, embedded):
    prof, splits = deploy
    entry = prof.data["router"]
    assert entry["layer"] == 15 and entry["families"] == ["open_ended", "advice", "descriptions"]
    assert entry["built_on"] == {f: len(s.selection) for f, s in splits.items()}
    held = entry["held_out"]
    assert held["n"] == sum(len(s.held_out) for s in splits.values()) == 36
    # measured 32/36 = 0.89 (open_ended 0.75, advice 0.92, descriptions 1.0); chance is 1/3
    assert held["accuracy"] >= 0.75, held
    router = prof.router()
    assert router.threshold == pytest.approx(entry["threshold"])
    # the stored router reproduces the reported figure on the same prompts
    again = router.evaluate(embedded, {f: list(s.held_out) for f, s in splits.items()})
    assert again["correct"] == held["correct"]


def test_routes_prompts_and_calls_off_topic_unknown(deploy, embedded):
    prof, splits = deploy
    r = prof.router()
    advice = list(splits["advice"].held_out)[:3]
    got = r.route(embedded, advice + [OFF_TOPIC])
    assert [g.family for g in got[:3]].count("advice") >= 2
    assert got[3].family is None and got[3].similarity < r.threshold and got[3].nearest in r.families
    # a threshold above every similarity makes everything unknown; below every one, nothing
    high = build_router(embedded, {f: list(s.selection) for f, s in splits.items()}, threshold=1.01)
    assert all(x.family is None for x in high.route(embedded, advice))
    low = build_router(embedded, {f: list(s.selection) for f, s in splits.items()}, threshold=-1.01)
    assert all(x.family is not None for x in low.route(embedded, advice + [OFF_TOPIC]))


def test_router_refuses_bad_inputs(embedded, deploy):
    _, splits = deploy
    sel = {f: list(s.selection) for f, s in splits.items()}
    with pytest.raises(SteeroptError, match="also build prompts"):
        build_router(embedded, sel, held_out={"advice": sel["advice"][:1]})
    with pytest.raises(SteeroptError, match="at least 2 families"):
        build_router(embedded, {"advice": sel["advice"]})
    with pytest.raises(SteeroptError, match="2 build prompts"):
        build_router(embedded, {"advice": sel["advice"][:1], "open_ended": sel["open_ended"]})


def test_apply_profile_auto_steers_the_routed_family(deploy, embedded):
    prof, splits = deploy
    prompt = next(p for p, r in zip(splits["advice"].held_out, prof.route(embedded, list(splits["advice"].held_out)))
                  if r.family == "advice")
    enc = embedded.tokenizer(embedded.render(prompt), return_tensors="pt", add_special_tokens=False)

    def greedy():
        with torch.no_grad():
            return embedded.model.generate(**enc, max_new_tokens=8, do_sample=False, temperature=None, top_p=None,
                                           top_k=None, pad_token_id=embedded.tokenizer.pad_token_id)[0].tolist()

    with apply_profile(embedded, prof, family="advice"):
        explicit = greedy()
    with apply_profile(embedded, prof, family="auto", prompt=prompt) as h:
        assert h.family == "advice" and h.handles
        auto = greedy()
    plain = greedy()
    assert auto == explicit and auto != plain
    # unknown prompt, or a routed family without a deployable setting: the safe default, no hooks at all
    with apply_profile(embedded, prof, family="auto", prompt=OFF_TOPIC) as h:
        assert h.family is None and not h.handles
    desc = next(p for p, r in zip(splits["descriptions"].held_out,
                                  prof.route(embedded, list(splits["descriptions"].held_out))) if r.family == "descriptions")
    assert routes(embedded, prof, [desc, OFF_TOPIC, prompt]) == [None, None, "advice"]
    # generate(family="auto") routes each prompt: the same text as the explicit family / unsteered
    texts = generate(embedded, prof, "auto", [prompt, OFF_TOPIC], max_new_tokens=8)
    assert texts[0] == generate(embedded, prof, "advice", [prompt], max_new_tokens=8)[0]
    assert texts[1] == generate(embedded, prof, "advice", [OFF_TOPIC], max_new_tokens=8, steer=False)[0]


def test_auto_needs_a_router_and_a_prompt(tmp_path, embedded, wedding_vectors, deploy):
    from tests.deploy_tests.conftest import make_profile

    prof, _ = make_profile(embedded, wedding_vectors, tmp_path, name="no-router", router=False)
    assert "router" not in load_profile(prof.path).data
    with pytest.raises(ProfileError, match="no router"):
        apply_profile(embedded, prof, family="auto", prompt="How do I sleep better?")
    with pytest.raises(ProfileError, match="pass prompt"):
        apply_profile(embedded, deploy[0], family="auto")
