"""Model loading, architecture adapter and steering vectors (real files, real model)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from steeropt.errors import InterventionError, ModelError, SteeroptError
from steeropt.engine.models import ArchAdapter, describe, embedded_gguf_path, load_model
from steeropt.engine.activations import mean_token_norm
from steeropt.engine.interventions import site_norm, steer
from steeropt.engine.activations import NEUTRAL_TEXTS
from steeropt.engine.vectors import SteeringVector, VectorSet, caa, from_file, from_sae, head_contribution_scores
from steeropt.types import InterventionPlan, Site


def test_embedded_model_shape_and_identity(embedded):
    a = embedded.adapter
    assert (a.arch, a.n_layers, a.d_model, a.n_heads, a.head_dim) == ("llama", 30, 576, 9, 64)
    assert len(embedded.sha256) == 64
    info = describe("smollm2-135m-instruct")
    assert (info.n_layers, info.d_model, info.n_heads) == (30, 576, 9)
    assert "<|im_start|>user\nhi" in embedded.render("hi")
    assert embedded.tokenizer.padding_side == "left"


def test_warm_load_uses_cache(embedded):
    lm = load_model("smollm2-135m-instruct", use_cache=False)
    assert lm.from_cache and lm.sha256 == embedded.sha256


def test_missing_and_corrupt_model_files(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model(str(tmp_path / "nope.gguf"))
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(embedded_gguf_path().read_bytes()[:4096])
    with pytest.raises(ModelError, match="truncated.gguf"):
        load_model(str(bad), use_cache=False)
    with pytest.raises(ModelError, match="truncated.gguf"):
        describe(str(bad))
    with pytest.raises(ModelError, match="unknown model 'gpt-17'"):
        load_model("gpt-17")
    (tmp_path / "hfdir").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_model(str(tmp_path / "hfdir"))


def test_unsupported_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50))
    with pytest.raises(ModelError, match="unsupported architecture 'gpt2'"):
        ArchAdapter.for_model(model)


def test_vector_metadata_and_roundtrip(embedded, wedding_vectors, tmp_path):
    vec = wedding_vectors["wedding"]
    assert vec.method == "diff_in_means" and vec.layer == 4 and vec.site == "resid"
    assert 10 < vec.mean_norm < 1000 and vec.norm > 0
    assert vec.model_sha256 == embedded.sha256 and vec.affine is not None
    path = vec.save(tmp_path / "w.safetensors")
    back = SteeringVector.load(path)
    assert back.describe() == vec.describe()
    torch.testing.assert_close(back.affine["omega"], vec.affine["omega"])
    again = from_file(embedded, path, 4, name="again")
    torch.testing.assert_close(again.vector, vec.vector)


def test_head_vectors_have_per_head_norms_and_scores(wedding_vectors, embedded):
    # (that the scores mean something is tested in test_interventions: the top head steers more)
    heads = wedding_vectors["wedding_heads"]
    assert heads.site == "heads" and heads.vector.shape == (576,)
    assert heads.head_scores.shape == (9,) and heads.head_norms.shape == (9,)
    torch.testing.assert_close(heads.head_norms, mean_token_norm(embedded, NEUTRAL_TEXTS, 4, site="heads"),
                               rtol=1e-6, atol=0)


# Norms recomputed on the same texts in the same batch: only rounding can differ, 1e-6 relative is ~10 ulp.
SAME_MEASURE = 1e-6


def test_vector_used_at_another_layer_is_remeasured_there(embedded, wedding_vectors, tmp_path):
    vec, heads = wedding_vectors["wedding"], wedding_vectors["wedding_heads"]
    moved = from_file(embedded, vec.save(tmp_path / "w.safetensors"), 20, name="w20")
    assert moved.layer == 20
    m20 = float(mean_token_norm(embedded, NEUTRAL_TEXTS, 20))
    assert moved.mean_norm == pytest.approx(m20, rel=SAME_MEASURE)
    assert abs(m20 / vec.mean_norm - 1) > 0.5  # layer 20's scale (~246) is far from layer 4's (~142)
    # the affine map was fitted at layer 4 and cannot be refitted from the file: gone, and affine says why
    assert moved.affine is None
    vs = VectorSet()
    vs.add(moved)
    with pytest.raises(InterventionError, match="fitted at layer 4"):
        with steer(embedded, vs, [InterventionPlan([Site(20, "affine", "w20")], [0.5])]):
            pass
    hmoved = from_file(embedded, heads.save(tmp_path / "h.safetensors"), 20, name="h20", site="heads")
    torch.testing.assert_close(hmoved.head_norms, mean_token_norm(embedded, NEUTRAL_TEXTS, 20, site="heads"),
                               rtol=SAME_MEASURE, atol=0)
    torch.testing.assert_close(hmoved.head_scores, head_contribution_scores(embedded, 20, heads.vector))
    assert not torch.allclose(hmoved.head_norms, heads.head_norms, rtol=0.05)
    # loaded back at its own layer it keeps what was measured there, affine map included
    same = from_file(embedded, tmp_path / "w.safetensors", 4, name="w4")
    assert same.mean_norm == vec.mean_norm and same.affine is not None


def test_scale_comes_from_one_neutral_set_for_every_source_so_a_tent_has_no_step(embedded, wedding_vectors,
                                                                                  tmp_path):
    # The wedding vector is a diff-in-means built from the concept's negatives; a CAA vector and a raw
    # file at the same layer get the same scale, and at neighbouring layers m is measured the same way.
    caa_vec = caa(embedded, [("Talk about weddings. How was your day?", "How was your day?")], 4, name="c")
    np.save(tmp_path / "raw.npy", wedding_vectors["wedding"].vector.numpy())
    raw = from_file(embedded, tmp_path / "raw.npy", 4, name="raw")
    vs = VectorSet(wedding_vectors)
    vs.add(caa_vec)
    vs.add(raw)
    want = {layer: float(mean_token_norm(embedded, NEUTRAL_TEXTS, layer)) for layer in (3, 4, 5)}
    for name in ("wedding", "c", "raw"):
        got = {layer: site_norm(embedded, vs, Site(layer, "add", name)) for layer in (3, 4, 5)}
        assert got == pytest.approx(want, rel=SAME_MEASURE), name


def test_raw_vector_files(embedded, wedding_vectors, tmp_path):
    v = wedding_vectors["wedding"].vector
    np.save(tmp_path / "v.npy", v.numpy())
    torch.save({"vector": v}, tmp_path / "v.pt")
    for name in ("v.npy", "v.pt"):
        got = from_file(embedded, tmp_path / name, 4, name=name)
        torch.testing.assert_close(got.vector, v)
    # a pickle of arbitrary objects is refused by weights_only loading
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"vector": object()}, f)
    with pytest.raises(SteeroptError, match="evil.pt"):
        from_file(embedded, tmp_path / "evil.pt", 4)
    np.save(tmp_path / "short.npy", np.ones(100, dtype=np.float32))
    with pytest.raises(InterventionError, match=r"shape \(100,\), expected \[576\]"):
        from_file(embedded, tmp_path / "short.npy", 4)
    bad = v.clone().numpy()
    bad[3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(InterventionError, match="NaN or Inf"):
        from_file(embedded, tmp_path / "nan.npy", 4)
    with pytest.raises(SteeroptError, match="not found"):
        from_file(embedded, tmp_path / "missing.npy", 4)


def test_sae_feature_and_caa(embedded, tmp_path):
    from safetensors.torch import save_file

    w_dec = torch.randn(16, 576)
    save_file({"W_dec": w_dec}, str(tmp_path / "sae.safetensors"))
    vec = from_sae(embedded, tmp_path / "sae.safetensors", 5, 6)
    torch.testing.assert_close(vec.vector, w_dec[5])
    with pytest.raises(InterventionError, match="feature 16 out of range"):
        from_sae(embedded, tmp_path / "sae.safetensors", 16, 6)
    pairs = [("Talk about weddings. How was your day?", "How was your day?"),
             ("Talk about weddings. What is for lunch?", "What is for lunch?")]
    v = caa(embedded, pairs, 4)
    assert v.method == "caa" and v.vector.shape == (576,) and v.norm > 0
