"""Architecture adapters: where the decoder layers, attention output projections and heads live."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from steeropt.errors import InterventionError, ModelError

# Llama-family decoders share the module layout model.model.layers[i].self_attn.o_proj.
SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text")


@dataclass
class ArchAdapter:
    """Finds the steerable modules of a Llama-family causal LM."""

    model: torch.nn.Module = field(repr=False)
    arch: str
    n_layers: int
    d_model: int
    n_heads: int
    head_dim: int

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> "ArchAdapter":
        cfg = model.config
        arch = getattr(cfg, "model_type", type(model).__name__)
        if arch not in SUPPORTED_ARCHS:
            raise ModelError(
                f"unsupported architecture '{arch}' ({type(model).__name__}); "
                f"steeropt supports Llama-family decoders: {', '.join(SUPPORTED_ARCHS)}"
            )
        n_heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        return cls(model, arch, cfg.num_hidden_layers, cfg.hidden_size, n_heads, head_dim)

    def layers(self) -> torch.nn.ModuleList:
        return self.model.model.layers

    def layer(self, index: int) -> torch.nn.Module:
        self.check_layer(index)
        return self.layers()[index]

    def o_proj(self, index: int) -> torch.nn.Linear:
        """The attention output projection of a layer; its input is the concatenation of head outputs."""
        return self.layer(index).self_attn.o_proj

    def check_layer(self, index: int) -> None:
        if not isinstance(index, int) or not 0 <= index < self.n_layers:
            raise InterventionError(f"unknown layer {index!r}: this model has layers 0..{self.n_layers - 1}")

    def check_heads(self, heads) -> None:
        bad = [h for h in heads if not 0 <= int(h) < self.n_heads]
        if bad:
            raise InterventionError(f"head(s) {bad} out of range: this model has heads 0..{self.n_heads - 1}")
