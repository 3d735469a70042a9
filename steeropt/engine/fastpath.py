"""The CPU fast path for generation: prepacked fp32 weights, fused q/k/v and gate/up, lean decode attention.

Why (bench/speed.py, 2 AVX2 cores): decoding 16-64 rows of the 135M model is bound by streaming the weights
through the matmuls, and PyTorch's default CPU matmul re-packs each weight on every call. Reordering every
Linear weight once into oneDNN's blocked layout made the decode matmuls ~2x faster at 16 rows; fusing q, k, v
and the MLP's gate and up into one matmul each saves a tenth more; with the static KV cache that
engine/generation.py asks `generate` for, attention reads only the cache's filled part, and a single query
position is two small matmuls instead of the SDPA kernel. The rows' shared prompt opening is computed once per
plan (`shared_prefix`, used by generation and by the teacher-forced scoring). The math stays fp32: only the
kernels' summation order changes, so greedy tokens match the plain path except at exact near-ties (the tests
compare them). int8 was measured and is not offered: PyTorch's dynamic int8 Linear quantises activations per
tensor, and greedy tokens differed from fp32 in 16 of 16 rows, 10 of them at the first token (bench/speed.py).

`prepare(lm)` rewrites the model's modules in place, once. The packed weights are the only copy (a tied LM head
aside, whose embedding stays): each Linear keeps its place in the module tree (hooks see the same modules) and
its `weight` reads back bit-exact from the packed copy. Measured on the 1.5B (bench/speed.py): the process held
~12 GB with both copies. Off with STEEROPT_FAST=0, or off the CPU/fp32 path.
"""
from __future__ import annotations

import os
import sys
import types

import torch
import torch.nn.functional as F

ENV = "STEEROPT_FAST"
_BATCH_HINT = 16  # oneDNN picks its blocking for this many rows; any row count works
_UNPACK_CHUNK = 1024  # identity rows per unpacking matmul (bounds its scratch memory)


def shared_prefix(ids: list[list[int]], min_len: int = 8) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own; 0 below `min_len`
    (then a separate prefix pass costs more than it saves)."""
    n, cap = 0, min(len(x) for x in ids) - 1
    while n < cap and len({x[n] for x in ids}) == 1:
        n += 1
    return n if n >= min_len else 0


def cache_kwarg(model) -> str:
    """The KV cache's keyword: `cache` from transformers 5.x (`past_key_values` deprecated there), else the old one."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def available(model: torch.nn.Module) -> bool:
    """True where the fast path applies: CPU, fp32 weights, oneDNN built in, not switched off."""
    p = next(model.parameters())
    return (os.environ.get(ENV, "1").strip() != "0" and torch.backends.mkldnn.is_available()
            and p.device.type == "cpu" and p.dtype == torch.float32)


class PackedLinear(torch.nn.Module):
    """One or more Linear layers on the same input as one matmul, their weights concatenated and reordered once
    for oneDNN. The packed copy is then the only one: each part's `weight` Parameter is released and read back
    from it on demand (exactly: an identity matrix through the packed matmul gives W^T), so the model holds its
    weights once. Autograd, another device or dtype go through the parts with those unpacked weights.
    `keep` (a tied weight, e.g. the embedding an LM head shares) is packed but never released."""

    def __init__(self, *parts: torch.nn.Linear, keep: frozenset[int] = frozenset()):
        super().__init__()
        self.parts = parts  # a tuple: not registered as submodules (hooks on them are unchanged)
        weight = parts[0].weight if len(parts) == 1 else torch.cat([p.weight for p in parts])
        bias = [p.bias for p in parts]
        self.bias = None if bias[0] is None else torch.cat(bias).detach()
        self.out_features, self.in_features = weight.shape
        self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _BATCH_HINT)
        del weight
        start = 0
        for p in parts:
            if id(p.weight) not in keep:
                _release(p, self, start)
            start += p.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The (first part's) weight, as the module it replaced had it (code reading `.weight`, e.g. head scores)."""
        return self.parts[0].weight

    def unpacked(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows [start, stop) of the concatenated weight, bit-exact: I @ W^T through the same kernel, in chunks."""
        stop = self.out_features if stop is None else stop
        out = torch.empty(stop - start, self.in_features)
        with torch.no_grad():
            for i in range(0, self.in_features, _UNPACK_CHUNK):
                n = min(_UNPACK_CHUNK, self.in_features - i)
                eye = torch.zeros(n, self.in_features)
                eye[:, i:i + n] = torch.eye(n)
                wt = torch.ops.mkldnn._linear_pointwise(eye, self._packed, None, "none", [], "")  # [n, out]
                out[:, i:i + n] = wt[:, start:stop].t()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
            return torch.cat([F.linear(x, p.weight, p.bias) for p in self.parts], dim=-1)
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self._packed, self.bias,
                                               "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, parts={len(self.parts)}, packed=onednn"


class _PackedPart(torch.nn.Linear):
    """A Linear whose weight lives only in a PackedLinear: `weight` unpacks its rows when read."""

    @property
    def weight(self) -> torch.Tensor:
        return self._packed_in.unpacked(self._packed_rows[0], self._packed_rows[1])


def _release(p: torch.nn.Linear, packed: PackedLinear, start: int) -> None:
    """Drop p's own weight storage; reading p.weight afterwards unpacks it from `packed` (object.__setattr__:
    the PackedLinear must not become p's submodule, which would loop the module tree)."""
    del p._parameters["weight"]
    object.__setattr__(p, "_packed_in", packed)
    object.__setattr__(p, "_packed_rows", (start, start + p.out_features))
    p.__class__ = _PackedPart


class FusedMLP(torch.nn.Module):
    """down(act(gate(x)) * up(x)) with gate and up as one packed matmul. The original projections stay as
    attributes for code that reads them."""

    def __init__(self, mlp: torch.nn.Module, keep: frozenset[int] = frozenset()):
        super().__init__()
        self.gate_proj, self.up_proj, self.act_fn = mlp.gate_proj, mlp.up_proj, mlp.act_fn
        self.down_proj = PackedLinear(mlp.down_proj, keep=keep)
        self.gate_up = PackedLinear(mlp.gate_proj, mlp.up_proj, keep=keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).split(self.gate_proj.out_features, dim=-1)
        return self.down_proj(self.act_fn(gate) * up)


def _fused_attention_forward(self, hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kwargs):
    """LlamaAttention.forward / Qwen2Attention.forward (transformers 5.x) with q, k, v (and their biases) from one
    packed matmul, and attention over the filled part of a static KV cache only (its tail is masked anyway: ~8% of a
    decode step). Grouped-query attention: k and v have fewer heads than q, the attention kernels expand them."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    shape = hidden_states.shape[:-1]
    split = [p.out_features for p in self.qkv.parts]
    q, k, v = (t.view(*shape, -1, self.head_dim).transpose(1, 2) for t in self.qkv(hidden_states).split(split, -1))
    modeling = sys.modules[type(self).__module__]
    q, k = modeling.apply_rotary_pos_emb(q, k, *position_embeddings)
    if cache is not None:
        k, v = cache.update(k, v, self.layer_idx, kwargs=kwargs)
        filled = cache.get_seq_length(self.layer_idx)
        if k.shape[2] > filled:
            k, v = k[:, :, :filled], v[:, :, :filled]
            attention_mask = None if attention_mask is None else attention_mask[..., :filled]
    if q.shape[2] == 1 and not kwargs.get("output_attentions"):
        out, weights = _decode_attention(q, k, v, attention_mask, self.scaling), None
    else:
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, modeling.eager_attention_forward)
        out, weights = attend(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs)
    return self.o_proj(out.reshape(*shape, -1).contiguous()), weights


def _decode_attention(q, k, v, mask, scaling: float) -> torch.Tensor:
    """One query position: grouped-query attention as two small batched matmuls ([B, kv heads, group, L]),
    about half the time of the SDPA kernel at these sizes. Returns [B, 1, heads, head_dim] like HF's."""
    b, h, _, d = q.shape
    kv = k.shape[1]
    scores = torch.matmul(q.view(b, kv, h // kv, d), k.transpose(-1, -2)) * scaling
    if mask is not None:  # [B, 1, 1, L]: bool = may attend, else additive
        m = mask.view(b, 1, 1, -1)
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m
    return torch.matmul(scores.softmax(-1), v).view(b, 1, h, d)


def _fusable_attention(m: torch.nn.Module) -> bool:
    """transformers 5.x's LlamaAttention and Qwen2Attention without a sliding window (Qwen2.5 uses none): the forward
    above is a copy of theirs. Others get packed q/k/v."""
    import inspect

    name = type(m).__name__
    if name not in ("LlamaAttention", "Qwen2Attention") or "cache" not in inspect.signature(type(m).forward).parameters:
        return False
    return getattr(m, "sliding_window", None) is None


def _fusable_mlp(m: torch.nn.Module) -> bool:
    return all(type(getattr(m, a, None)) is torch.nn.Linear and getattr(m, a).bias is None
               for a in ("gate_proj", "up_proj", "down_proj")) and hasattr(m, "act_fn")


def prepare(lm) -> bool:
    """Pack `lm.model`'s Linear layers (fusing gate/up and q/k/v) in place, once. Returns whether the fast path is on."""
    if getattr(lm, "fast", False):
        return True
    if not available(lm.model):
        return False
    # an Embedding's weight may be tied to the LM head: packed for the head, kept for the lookup
    keep = frozenset(id(m.weight) for m in lm.model.modules() if isinstance(m, torch.nn.Embedding))
    with torch.no_grad():
        _swap(lm.model, keep)
        _own_rest(lm.model)
    lm.fast = True
    return True


def _own_rest(model: torch.nn.Module) -> None:
    """Copy what is left of the weights (embeddings, norms, biases) out of the loader's memory map: the map holds
    every original weight resident until nothing points into it (measured: packing alone left the 135M's 513 MiB
    file mapping resident beside the packed copy)."""
    for t in [*model.parameters(), *model.buffers()]:
        t.data = t.data.clone()


def _swap(module: torch.nn.Module, keep: frozenset[int]) -> None:
    for name, child in module.named_children():
        if _fusable_mlp(child):
            setattr(module, name, FusedMLP(child, keep))
        elif _fusable_attention(child):
            child.qkv = PackedLinear(child.q_proj, child.k_proj, child.v_proj, keep=keep)
            child.o_proj = PackedLinear(child.o_proj, keep=keep)
            child.forward = types.MethodType(_fused_attention_forward, child)
        elif type(child) is torch.nn.Linear:
            setattr(module, name, PackedLinear(child, keep=keep))
        else:
            _swap(child, keep)
