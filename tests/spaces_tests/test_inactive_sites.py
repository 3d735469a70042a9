"""Bug 4 on the real embedded model: an inactive site leaves the model untouched, clamp at α=0 does not.

A tent kernel over a clamp site must not touch layers outside the tent, and a space's baseline point must
be the unsteered model, for clamp too (clamp at α=0 erases the direction: it is an ablation, not "off")."""
from __future__ import annotations

import pytest
import torch

from steeropt.engine.activations import tokenize
from steeropt.engine.interventions import steer
from steeropt.search.spaces import SearchSpaceSpec

TEXTS = ["Tell me about your weekend.", "Write a short story about a dog and a cat."]
# Same batch, same shapes, same threads: an untouched layer computes the very same kernels, so its output
# matches the unsteered one to the last bits; 1e-5 only allows reduction-order noise. What clamp at α=0
# removes is the whole projection on v̂, tens of units at these layers (checked below).
ATOL = 1e-5
CLAMP_TENT = {"name": "clamp-tent", "kernels": [{
    "vector": "wedding", "layers": [1, 8], "controller": "clamp", "peak_layer": {"low": 1, "high": 8},
    "peak_alpha": {"low": 0.0, "high": 1.0}, "width": {"low": 1, "high": 3}}]}


def layer_outputs(lm, vectors, plans, layers):
    """{layer: its (steered) output for TEXTS}: the input of the next layer, seen after every hook."""
    store, handles = {}, []
    for layer in layers:
        def pre(_m, args, kwargs, layer=layer):
            store[layer] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        handles.append(lm.adapter.layer(layer + 1).register_forward_pre_hook(pre, with_kwargs=True))
    enc = tokenize(lm, TEXTS, render=True)
    try:
        with torch.no_grad():
            if plans is None:
                lm.model(**enc, use_cache=False)
            else:
                with steer(lm, vectors, plans, row_plan=[0] * len(TEXTS)):
                    lm.model(**enc, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return store, enc["attention_mask"].bool()


def projection(x, vectors):
    v = vectors["wedding"].vector.to(x.dtype)
    return x @ (v / v.norm())


def test_clamp_tent_at_alpha_zero_leaves_layers_outside_the_tent_untouched(embedded, wedding_vectors):
    space = SearchSpaceSpec.model_validate(CLAMP_TENT)
    plan = space.materialize({"tent_peak_layer": 6, "tent_peak_alpha": 0.0, "tent_width": 1.0, "tent_floor": 1.0})
    assert [s.layer for s, on in zip(plan.sites, plan.active) if on] == [5, 6, 7]
    layers = [2, 4, 6, 8]
    base, real = layer_outputs(embedded, wedding_vectors, None, layers)
    steered, _ = layer_outputs(embedded, wedding_vectors, [plan], layers)
    for layer in (2, 4):  # before the tent: exactly the unsteered model
        assert torch.allclose(steered[layer][real], base[layer][real], atol=ATOL), layer
    # inside the tent the clamp to 0 runs (the direction is erased) ...
    assert projection(steered[6], wedding_vectors)[real].abs().max() < 1e-3
    assert projection(base[6], wedding_vectors)[real].abs().mean() > 1.0
    # ... and layer 8, after it, is not clamped again: its output has a projection of its own
    assert projection(steered[8], wedding_vectors)[real].abs().mean() > 1.0


def test_baseline_of_a_clamp_space_is_unsteered(embedded, wedding_vectors):
    space = SearchSpaceSpec.model_validate({"name": "clamp-l4", "sites": [
        {"layer": 4, "vector": "wedding", "controller": "clamp", "alpha": {"low": 0.0, "high": 1.0}}]})
    plan = space.materialize(space.baseline_params())
    base, real = layer_outputs(embedded, wedding_vectors, None, [4, 10])
    got, _ = layer_outputs(embedded, wedding_vectors, [plan], [4, 10])
    for layer in (4, 10):
        assert torch.allclose(got[layer][real], base[layer][real], atol=ATOL), layer
    # while an active clamp at α=0 (what the baseline used to be) is an ablation, far outside ATOL
    ablated = space.materialize({"alpha_l4_wedding": 0.0})
    abl, _ = layer_outputs(embedded, wedding_vectors, [ablated], [4])
    assert (abl[4][real] - base[4][real]).abs().max() > 1.0
    assert projection(abl[4], wedding_vectors)[real].abs().max() == pytest.approx(0.0, abs=1e-3)
