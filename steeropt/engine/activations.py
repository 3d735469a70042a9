"""Read activations at a steering site: a decoder layer's output (resid) or the input of its attention
output projection (heads, the concatenated per-head outputs)."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager

import torch

from steeropt.engine.models import LoadedModel

SITES = ("resid", "heads")


def tokenize(lm: LoadedModel, texts: list[str], *, render: bool = False) -> dict:
    """Left-padded batch; `render` applies the chat template first."""
    if render:
        texts = [lm.render(t) for t in texts]
    return lm.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not render)


@contextmanager
def _record(lm: LoadedModel, layers: list[int], site: str, store: dict):
    handles = []
    for layer in layers:
        if site == "resid":
            def hook(_m, _args, out, layer=layer):
                store[layer] = (out[0] if isinstance(out, tuple) else out).detach()
            handles.append(lm.adapter.layer(layer).register_forward_hook(hook))
        elif site == "heads":
            def pre(_m, args, layer=layer):
                store[layer] = args[0].detach()
            handles.append(lm.adapter.o_proj(layer).register_forward_pre_hook(pre))
        else:
            raise ValueError(f"unknown site '{site}': expected one of {SITES}")
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def collect(lm: LoadedModel, texts: list[str], layers: list[int], *, site: str = "resid",
            reduce: str = "mean", render: bool = False, batch_size: int = 16, skip_first: bool = True):
    """Activations per text at each layer.

    reduce="mean": token mean over real tokens -> {layer: [n_texts, d]};
    reduce="last": the last token -> {layer: [n_texts, d]};
    reduce="tokens": every real token stacked -> {layer: [n_tokens, d]}.
    `skip_first` drops each text's first token from mean/tokens: it is an attention sink whose norm is
    an outlier and would dominate token means.
    """
    for layer in layers:
        lm.adapter.check_layer(layer)
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(texts), batch_size):
        enc = tokenize(lm, texts[start:start + batch_size], render=render)
        store: dict = {}
        dev = lm.device
        with _record(lm, layers, site, store):
            lm.model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev), use_cache=False)
        mask = enc["attention_mask"].bool()
        if skip_first and reduce != "last":
            first = mask.float().argmax(dim=1)  # left padding: first real token per row
            mask = mask.clone()
            mask[torch.arange(mask.shape[0]), first] = mask.sum(1) <= 1  # keep it only if it is alone
        for layer in layers:
            acts = store[layer].float().cpu()  # vectors live on the CPU: saved, compared, moved by the hooks
            if reduce == "mean":
                m = mask.unsqueeze(-1).float()
                out[layer].append((acts * m).sum(1) / m.sum(1).clamp(min=1))
            elif reduce == "last":
                out[layer].append(acts[:, -1])
            elif reduce == "tokens":
                out[layer].append(acts[mask])
            else:
                raise ValueError(f"unknown reduce '{reduce}'")
    return {layer: torch.cat(chunks) for layer, chunks in out.items()}


def mean_token_norm(lm: LoadedModel, texts: list[str], layer: int, *, site: str = "resid",
                    n_heads: int | None = None) -> torch.Tensor:
    """Mean L2 norm of per-token activations at a site: a scalar (resid) or one value per head (heads)."""
    toks = collect(lm, texts, [layer], site=site, reduce="tokens")[layer]
    if site == "heads":
        n_heads = n_heads or lm.adapter.n_heads
        return toks.view(toks.shape[0], n_heads, -1).norm(dim=-1).mean(0)
    return toks.norm(dim=-1).mean()


# The one set every activation scale (mean_norm, head_norms, a site's m at another layer) is measured on.
NEUTRAL_TEXTS = [
    "The train to the city leaves every hour from the main platform.",
    "Water boils at a lower temperature at high altitude.",
    "She updated the spreadsheet with the numbers from last quarter.",
    "The library is open from nine in the morning until six in the evening.",
    "Please remember to bring a pen and a notebook to the meeting.",
    "The recipe needs two cups of flour and a pinch of salt.",
    "Our team fixed the bug in the login page yesterday.",
    "The river runs through the valley and into the lake.",
]
# Stamped into each vector: a saved vector whose norm came from other texts is re-measured on load.
NEUTRAL_SET_ID = hashlib.sha256("\n".join(NEUTRAL_TEXTS).encode()).hexdigest()[:12]


def neutral_norm(lm: LoadedModel, layer: int, site: str = "resid"):
    """Mean token norm at (layer, site) on NEUTRAL_TEXTS, cached on `lm`: a float (resid) or a
    `[n_heads]` tensor (heads)."""
    key = (layer, site)
    if key not in lm._neutral_norms:
        value = mean_token_norm(lm, NEUTRAL_TEXTS, layer, site=site).cpu()
        lm._neutral_norms[key] = float(value) if site == "resid" else value
    value = lm._neutral_norms[key]
    return value if site == "resid" else value.clone()
