"""Controllers and the hooks that apply them, with one strength per batch row and site.

What α means (normalised unit, the default everywhere; `raw_alphas` gives the raw values):
- add:      x + α·m·v̂           m = mean token norm at the site's layer on NEUTRAL_TEXTS, v̂ = v/|v|
            (the same texts for every vector and layer, so a tent over layers has no step).
            α = 0.1 pushes by a tenth of a typical activation; raw = coefficient on v as given (α·m/|v|).
- clamp:    x + (α·m − x·v̂)·v̂   sets the projection on v̂ to α·m (α = 0 erases the direction, like ablate).
- ablate:   x − α·(x·v̂)·v̂       α = 1 removes the projection, 0 leaves x alone.
- affine:   x + α·((ω−1)⊙x + β)  α = λ of Linear-AcT: 0 = identity, 1 = full transport neutral → concept.
- head_add: o_in[h] + α·m_h·v̂_h for each chosen head h, at the input of the attention output projection
            (m_h = mean norm of head h's output on neutral text).

Each row r of the batch follows plan `row_plan[r]`; a site absent from a plan, or inactive in it
(`plan.active[i]` False), leaves that row untouched.
The hooks are a few tensor ops per call (add with all positions: one `+`); per-row tensors are built once
per context, not per call. Positions: "prompt" steers prompt tokens only, "generated" only tokens produced
by generation, "all" both; a pre-hook on the base model tracks absolute positions (KV cache offset), and
rows are left-padded so the prompt ends at the same column for every row. Pad tokens are never steered.
Device: each op's tensors are built on the device and dtype of the module it hooks (the hidden states it
sees), so a model on CUDA, or split over devices, is steered without copies per call.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from steeropt.errors import InterventionError
from steeropt.engine.models import LoadedModel, as_loaded
from steeropt.types import CONTROLLERS, POSITIONS, InterventionPlan, Site
from steeropt.engine.activations import neutral_norm
from steeropt.engine.vector_set import VectorSet


@dataclass
class _Op:
    site: Site
    fn: Callable[[torch.Tensor], torch.Tensor]


class Positions:
    """Where the current forward call sits: offset = tokens already in the KV cache; `real` marks the call's
    non-pad tokens ([B, T, 1] bool, None when the call has no padding). Pads are never steered."""

    def __init__(self, prompt_len: int | None, *, auto: bool = False, pad_mask: torch.Tensor | None = None):
        # auto: take the prompt width from each generation's first call (profiles: no known prompt_len)
        # pad_mask: the prompt's [B, width] mask when the caller knows it; else the call's 2-D attention_mask
        # (generate hands a static KV cache's model calls a 4-D mask, which does not say which tokens are pads)
        self.prompt_len, self.offset, self.width, self.auto = prompt_len, 0, 0, auto
        self.pad_mask = pad_mask
        self.real: torch.Tensor | None = None

    def pre_hook(self, _module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        if ids is None and args:
            ids = args[0]
        # the KV cache kwarg is `past_key_values` up to transformers 4.x, `cache` in 5.x
        cache = kwargs.get("past_key_values") if kwargs.get("past_key_values") is not None else kwargs.get("cache")
        self.offset = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
        self.width = ids.shape[1]
        if self.auto and self.offset == 0:
            self.prompt_len = self.width  # the first call of a generation is the (left-padded) prompt
        am = self.pad_mask if self.pad_mask is not None else kwargs.get("attention_mask")
        lo, hi = self.offset, self.offset + self.width
        self.real = None
        if isinstance(am, torch.Tensor) and am.dim() == 2 and am.shape[1] >= hi:
            cols = am[:, lo:hi].bool()
            if not bool(cols.all()):  # only a left-padded prompt call has pads
                self.real = cols.unsqueeze(-1)

    def mask(self, positions: str, device=None):
        """None = steer every position of this call, False = none, else a bool tensor [1 or B, T, 1]."""
        p, lo, hi = self.prompt_len, self.offset, self.offset + self.width
        keep = None
        if positions == "prompt" and hi > p:
            keep = False if lo >= p else torch.arange(lo, hi, device=device).view(1, -1, 1) < p
        elif positions == "generated" and lo < p:
            keep = False if hi <= p else torch.arange(lo, hi, device=device).view(1, -1, 1) >= p
        if self.real is None or keep is False:
            return keep
        real = self.real.to(device)
        return real if keep is None else keep & real


def validate_plans(lm: LoadedModel, vectors: VectorSet, plans: Sequence[InterventionPlan]) -> None:
    """Raise InterventionError naming the first thing that cannot be applied to `lm`."""
    for i, plan in enumerate(plans):
        if len(plan.alphas) != len(plan.sites):
            raise InterventionError(f"plan {i}: {len(plan.alphas)} strengths for {len(plan.sites)} sites")
        if plan.active is not None and len(plan.active) != len(plan.sites):
            raise InterventionError(f"plan {i}: {len(plan.active)} active flags for {len(plan.sites)} sites")
        for site, alpha in zip(plan.sites, plan.alphas):
            a = torch.tensor(float(alpha))
            if not torch.isfinite(a):
                raise InterventionError(f"plan {i}: strength {alpha} at {site} is NaN or Inf")
            if site.controller not in CONTROLLERS:
                raise InterventionError(f"unknown controller '{site.controller}'; expected one of {CONTROLLERS}")
            if site.positions not in POSITIONS:
                raise InterventionError(f"unknown positions '{site.positions}'; expected one of {POSITIONS}")
            lm.adapter.check_layer(site.layer)
            vec = vectors.get_vector(site.vector)
            vec.check(lm)
            if vec.layer != site.layer and site.controller in ("affine", "head_add"):
                raise InterventionError(
                    f"vector '{vec.name}' was fitted at layer {vec.layer}; {site.controller} needs that layer "
                    f"(site asks for layer {site.layer})")
            if site.controller == "head_add":
                if vec.site != "heads":
                    raise InterventionError(f"head_add needs a per-head vector (site 'heads'); '{vec.name}' is '{vec.site}'")
                if not site.heads:
                    raise InterventionError(f"head_add at layer {site.layer} needs a list of heads")
                lm.adapter.check_heads(site.heads)
            elif vec.site != "resid":
                raise InterventionError(f"{site.controller} needs a residual vector; '{vec.name}' is per-head")
            if site.controller == "affine" and not vec.affine:
                why = vec.meta.get("affine_dropped", "it was not fitted (diff_in_means fits it)")
                raise InterventionError(f"affine needs a fitted transport map; vector '{vec.name}' has none: {why}")


def site_norm(lm: LoadedModel, vectors: VectorSet, site: Site) -> float:
    """m, the activation scale of α at a residual site: the mean token norm at the site's layer on
    NEUTRAL_TEXTS — the vector's own stamp at its layer (measured the same way), else measured here."""
    vec = vectors[site.vector]
    if (site.layer == vec.layer or site.controller == "head_add") and vec.mean_norm == vec.mean_norm:
        return vec.mean_norm  # stamped at this layer (not NaN)
    return neutral_norm(lm, site.layer)


def build_op(lm: LoadedModel, vectors: VectorSet, site: Site, alpha: torch.Tensor, active: torch.Tensor) -> _Op:
    """alpha, active: `[B]` per-row strength and whether the row's plan has this site."""
    vec = vectors[site.vector]
    m = site_norm(lm, vectors, site)
    module = lm.adapter.o_proj(site.layer) if site.controller == "head_add" else lm.adapter.layer(site.layer)
    # the hidden states this op sees live on this layer's device, in its dtype (the layer's norms: a packed
    # o_proj holds no Parameter of its own, engine/fastpath.py)
    w = next(lm.adapter.layer(site.layer).parameters())
    dtype, device = w.dtype, w.device
    v = vec.vector.to(device, dtype)
    alpha, active = alpha.to(device), active.to(device)
    a = (alpha * active).to(dtype)
    if site.controller == "head_add":
        hd = lm.adapter.head_dim
        delta = torch.zeros(len(a), 1, v.shape[0], dtype=dtype, device=device)
        for h in site.heads:
            sl = slice(h * hd, (h + 1) * hd)
            unit = v[sl] / v[sl].norm().clamp(min=1e-12)
            delta[:, 0, sl] = a[:, None] * float(vec.head_norms[h]) * unit
        return _Op(site, lambda x: x + delta)
    u = v / v.norm().clamp(min=1e-12)
    if site.controller == "add":
        delta = (a * m)[:, None, None] * u
        return _Op(site, lambda x: x + delta)
    if site.controller == "ablate":
        k = a[:, None]
        return _Op(site, lambda x: x - (k * (x @ u)).unsqueeze(-1) * u)
    if site.controller == "clamp":
        target, on = (alpha.to(dtype) * m)[:, None], active.to(dtype)[:, None]
        return _Op(site, lambda x: x + ((target - x @ u) * on).unsqueeze(-1) * u)
    # affine
    lam = a[:, None, None]
    w1, b = vec.affine["omega"].to(device, dtype) - 1, vec.affine["beta"].to(device, dtype)
    return _Op(site, lambda x: x + lam * (x * w1 + b))


@contextmanager
def steer(lm: LoadedModel, vectors: VectorSet, plans: Sequence[InterventionPlan],
          row_plan: Sequence[int] | None = None, *, prompt_len: int | None = None,
          pad_mask: torch.Tensor | None = None):
    """Steer `lm` inside the block: batch row r follows plans[row_plan[r]] (default: row r = plan r).

    prompt_len: padded prompt width, needed for positions "prompt"/"generated". pad_mask: the prompt's
    [rows, prompt_len] attention mask (0 = pad), when the model's calls may not get it in 2-D (a static KV
    cache). Hooks are removed on exit, also when the block raises.

    Example:
        >>> plan = InterventionPlan([Site(4, "add", "wedding")], [0.3])
        >>> with steer(lm, vectors, [plan], row_plan=[0, 0], prompt_len=ids.shape[1]):
        ...     out = lm.model.generate(ids, attention_mask=mask, max_new_tokens=32)
    """
    validate_plans(lm, vectors, plans)
    if prompt_len is None and any(s.positions != "all" for p in plans for s in p.sites):
        raise InterventionError("positions 'prompt'/'generated' need prompt_len (the padded prompt width)")
    row_plan = list(range(len(plans))) if row_plan is None else list(row_plan)
    n_rows = len(row_plan)
    sites: list[Site] = []
    for plan in plans:
        sites += [s for s in plan.sites if s not in sites]
    ops_by_point: dict[tuple[int, str], list[_Op]] = {}
    for site in sites:
        alpha, active = torch.zeros(n_rows), torch.zeros(n_rows)
        for r, p in enumerate(row_plan):
            i = plans[p].sites.index(site) if site in plans[p].sites else None
            if i is not None and plans[p].is_active(i):  # an inactive site is skipped (clamp at α=0 is not)
                alpha[r] = float(plans[p].alphas[i])
                active[r] = 1.0
        if not active.any():
            continue
        ops_by_point.setdefault(hook_point(site), []).append(build_op(lm, vectors, site, alpha, active))
    handles = install_hooks(lm, ops_by_point, Positions(prompt_len, pad_mask=pad_mask), n_rows=n_rows)
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def apply_vector(model, vec, alpha: float | None = None, *, coefficient: float | None = None,
                 controller: str = "add", layer: int | None = None, tokenizer=None):
    """Steer every row and position of `model` with one vector (a SteeringVector) inside the block (the steering-vectors /
    repeng way: plain `model.generate(...)` calls, any batch size). Give exactly one strength:

    alpha: normalised units, x + α·m·v̂ for add (m = `vec.mean_norm`, see the module docstring);
    coefficient: a raw coefficient on the vector as given, x + c·v for add (clamp: the target projection
        in raw units); at the vector's own layer α = `vec.alpha_from_raw(c)`.

    Example:
        >>> with apply_vector(lm, vec, alpha=0.3):
        ...     out = lm.model.generate(**ids, max_new_tokens=32)
    """
    lm = as_loaded(model, tokenizer)
    if (alpha is None) == (coefficient is None):
        raise InterventionError("give exactly one of alpha (normalised units) or coefficient (raw)")
    if controller not in ("add", "clamp", "ablate"):
        raise InterventionError(f"apply steers with add, clamp or ablate; got '{controller}' (use steer() for others)")
    site = Site(vec.layer if layer is None else layer, controller, vec.name)
    vectors = VectorSet({vec.name: vec})
    if alpha is None:  # the raw coefficient in units of m at the site's layer (the vector's own m there)
        m, c = site_norm(lm, vectors, site), float(coefficient)
        alpha = c * vec.norm / m if controller == "add" else c / m if controller == "clamp" else c
    plan = InterventionPlan([site], [float(alpha)])
    validate_plans(lm, vectors, [plan])
    # one row of strengths broadcasts over any batch: the hook is not tied to a row count
    op = build_op(lm, vectors, site, torch.tensor([float(alpha)]), torch.ones(1))
    handles = install_hooks(lm, {hook_point(site): [op]}, Positions(None))
    try:
        yield lm
    finally:
        for h in handles:
            h.remove()


def hook_point(site: Site) -> tuple[int, str]:
    """(layer, "resid" | "o_proj"): where a site's op runs."""
    return site.layer, "o_proj" if site.controller == "head_add" else "resid"


def install_hooks(lm: LoadedModel, ops_by_point: dict, pos: Positions, *, n_rows: int | None = None) -> list:
    """Register the position tracker and one hook per (layer, point) running its ops; returns the handles
    (on error, nothing stays registered)."""

    def run(ops: list[_Op], x: torch.Tensor) -> torch.Tensor:
        if n_rows is not None and x.shape[0] != n_rows:
            raise InterventionError(f"steering was set up for {n_rows} rows but the batch has {x.shape[0]}")
        for op in ops:
            m = pos.mask(op.site.positions, x.device)
            if m is None:
                x = op.fn(x)
            elif m is not False:
                x = torch.where(m, op.fn(x), x)
        return x

    handles = [lm.model.model.register_forward_pre_hook(pos.pre_hook, with_kwargs=True)]
    try:
        for (layer, point), ops in ops_by_point.items():
            if point == "resid":
                def hook(_m, _args, out, ops=ops):
                    if isinstance(out, tuple):
                        return (run(ops, out[0]),) + tuple(out[1:])
                    return run(ops, out)
                handles.append(lm.adapter.layer(layer).register_forward_hook(hook))
            else:
                def pre(_m, args, ops=ops):
                    return (run(ops, args[0]),) + tuple(args[1:])
                handles.append(lm.adapter.o_proj(layer).register_forward_pre_hook(pre))
    except BaseException:
        for h in handles:
            h.remove()
        raise
    return handles


def raw_alphas(plan: InterventionPlan, vectors: VectorSet, lm: LoadedModel) -> list[float]:
    """The raw value of each site's strength (see the module docstring for each controller).
    `lm` is required: a vector used at another layer than its own takes that layer's scale m."""
    raw = []
    for site, alpha in zip(plan.sites, plan.alphas):
        vec = vectors[site.vector]
        m = site_norm(lm, vectors, site)
        if site.controller == "add":
            raw.append(alpha * m / max(vec.norm, 1e-12))
        elif site.controller == "clamp":
            raw.append(alpha * m)
        elif site.controller == "head_add":
            raw.append(alpha * float(vec.head_norms[list(site.heads)].mean()))
        else:
            raw.append(float(alpha))
    return raw
