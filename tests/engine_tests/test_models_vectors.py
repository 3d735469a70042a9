"""Model loading, architecture adapter and steering vectors (real files, real model)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from steeropt.errors import InterventionError, ModelError, SteeroptError
from steeropt.engine.models import ArchAdapter, describe, embedded_gguf_path, load_model
from steeropt.engine.vectors import SteeringVector, caa, from_file, from_sae


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


def test_head_vectors_and_contribution_scores(wedding_vectors, embedded):
    heads = wedding_vectors["wedding_heads"]
    assert heads.site == "heads" and heads.vector.shape == (576,)
    assert heads.head_scores.shape == (9,) and heads.head_norms.shape == (9,)
    assert float(heads.head_scores.sum()) == pytest.approx(1.0, abs=1e-4)


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
