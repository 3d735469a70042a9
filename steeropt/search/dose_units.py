"""Dose units (iso-KL): a site's strength given in nats of KL to the unsteered model instead of normalised α.

    sites:
      - {layer: 10, vector: wedding, controller: add, alpha: {low: 0.0, high: 2.0, unit: kl}}

α means something different for every controller (a share of the activation norm for add, λ for affine, a
per-head share for head_add), so one α range says nothing across controllers. A KL range does: it is the
measured size of the change. Before the study, `calibrate(lm, vectors, space)` measures, for every parameter
given in KL units, the map α ↔ KL on neutral text (vectors.NEUTRAL_TEXTS, teacher-forced as plain text;
KL(p_steered || p_unsteered) of the next-token distribution, averaged over every position after the first):
it bisects α for a few target doses across the range, all targets in one batched forward pass per step.
KL grows like α² at small α (measured on the embedded model: log-log slope 2.04), so the map is interpolated
in √KL, which is close to linear in α, through (0, 0) and the bisected points. The map is cached on disk
(keyed by model sha256, vector, site, controller and the neutral set) and reused by later studies and `pick`.

Clamp has no zero-dose strength (clamp at α = 0 ablates; its KL is smallest at the natural projection), so
it cannot be given in KL units; tents neither (several layers share one peak): both are refused.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from steeropt.engine.activations import NEUTRAL_SET_ID, NEUTRAL_TEXTS
from steeropt.engine.models import cache_dir
from steeropt.engine.teacher_forced import Row, next_token_logprobs
from steeropt.errors import SteeroptError
from steeropt.types import InterventionPlan, Site

TARGETS = 5  # doses bisected across a parameter's range
STEPS = 10  # bisection steps: the α bracket shrinks 1024-fold (≈ 0.1% of α at the top of the range)
MAX_ALPHA = 64.0  # the bracket grows up to this before the range is called unreachable


@dataclass
class DoseMap:
    """α as a function of KL for one parameter: interpolation through (0, 0) and the bisected (√KL, α) points."""

    param: str
    kl: list[float]  # measured KL at the bisected α (increasing)
    alpha: list[float]  # α (increasing)

    def alpha_for(self, kl: float) -> float:
        if kl < 0:
            raise SteeroptError(f"{self.param}: a KL dose cannot be negative, got {kl}")
        x = np.sqrt(np.array([0.0, *self.kl]))
        y = np.array([0.0, *self.alpha])
        if np.sqrt(kl) > x[-1] * 1.0001:
            # beyond the calibrated range: extend with the last segment's slope (√KL nearly linear in α)
            slope = (y[-1] - y[-2]) / max(x[-1] - x[-2], 1e-12)
            return float(y[-1] + slope * (np.sqrt(kl) - x[-1]))
        return float(np.interp(np.sqrt(kl), x, y))

    def to_dict(self) -> dict:
        return {"param": self.param, "kl": self.kl, "alpha": self.alpha}


def kl_params(space) -> dict:
    """param name -> (Range, [SiteSpec]) for the parameters a space gives in KL units; refuses what can't be."""
    out = {}
    for s in space.sites:
        if s.alpha.unit != "kl":
            continue
        name = s.param or space._site_param(s)
        if s.controller == "clamp" or (space.controller and "clamp" in space.controller.choices):
            raise SteeroptError(f"search space {space.name!r}: {name} gives a clamp strength in KL units; clamp has "
                                "no zero-dose strength (α = 0 ablates): use unit: alpha")
        if space.controller is not None:
            raise SteeroptError(f"search space {space.name!r}: KL units with a controller choice are not supported "
                                f"({name}): calibrate one space per controller")
        out.setdefault(name, (s.alpha, []))[1].append(s)
    for k in space.kernels:
        for f in ("peak_alpha",):
            if getattr(k, f).unit == "kl":
                raise SteeroptError(f"search space {space.name!r}: a tent's peak_alpha cannot be in KL units")
    return out


def neutral_rows(lm):
    """Teacher-forced rows: each neutral text as plain text, scored from its second token (the first is the
    context). No chat template: its ~30 system-prompt tokens would triple the cost of every bisection step."""
    ids = [lm.tokenizer(t, add_special_tokens=False)["input_ids"] for t in NEUTRAL_TEXTS]
    return [Row(t[:1], t[1:]) for t in ids]


def measure_kl(lm, vectors, sites, alphas: list[float], rows, base=None) -> list[float]:
    """Mean next-token KL(steered || unsteered) over every position of the neutral rows, for each α (all sites
    of the parameter at that α, positions "all"), in one batched pass. `base`: the rows' unsteered
    log-distributions (next_token_logprobs), computed once by the caller."""
    base = base if base is not None else next_token_logprobs(lm, rows)
    plans = [InterventionPlan([Site(s.layer, s.controller, s.vector, tuple(s.heads) if s.heads else None, "all")
                               for s in sites], [float(a)] * len(sites)) for a in alphas]
    batch = [Row(r.prompt_ids, r.target_ids, plan=p) for p in range(len(plans)) for r in rows]
    steered = next_token_logprobs(lm, batch, plans=plans, vectors=vectors)
    out = []
    for p in range(len(plans)):
        kls = [float((s.exp() * (s - u)).sum(-1).clamp(min=0).mean())
               for s, u in zip(steered[p * len(rows):(p + 1) * len(rows)], base)]
        out.append(sum(kls) / len(kls))
    return out


def _cache_key(lm, vectors, name, sites, rng) -> str:
    parts = [lm.sha256, NEUTRAL_SET_ID, "plain-text", name, rng.low, rng.high, TARGETS, STEPS]
    for s in sites:
        v = vectors.get_vector(s.vector)
        parts += [s.layer, s.controller, s.heads, hashlib.sha256(v.vector.float().numpy().tobytes()).hexdigest()[:16]]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


@torch.no_grad()
def calibrate_param(lm, vectors, name: str, rng, sites) -> DoseMap:
    """Bisect α for TARGETS doses spread over [rng.low, rng.high] (nats), all targets per step in one pass."""
    rows = neutral_rows(lm)
    base = next_token_logprobs(lm, rows)
    targets = np.linspace(max(rng.low, rng.high / TARGETS), rng.high, TARGETS)
    hi = 0.25
    while measure_kl(lm, vectors, sites, [hi], rows, base)[0] < targets[-1]:
        hi *= 2
        if hi > MAX_ALPHA:
            raise SteeroptError(f"{name}: KL {targets[-1]:g} nats is not reached with α up to {MAX_ALPHA:g} "
                                "(lower the range's high)")
    lo_a, hi_a = np.zeros(TARGETS), np.full(TARGETS, hi)
    for _ in range(STEPS):
        mid = (lo_a + hi_a) / 2
        kl = np.array(measure_kl(lm, vectors, sites, list(mid), rows, base))
        below = kl < targets
        lo_a, hi_a = np.where(below, mid, lo_a), np.where(below, hi_a, mid)
    alpha = (lo_a + hi_a) / 2
    kl = measure_kl(lm, vectors, sites, list(alpha), rows, base)
    order = np.argsort(alpha)
    kl_s, a_s = np.maximum.accumulate(np.array(kl)[order]), alpha[order]  # keep the map monotone
    return DoseMap(name, [float(v) for v in kl_s], [float(v) for v in a_s])


def calibrate(lm, vectors, space, *, cache: bool = True) -> dict[str, DoseMap]:
    """param -> DoseMap for every KL-unit parameter of `space` (measured or read from the cache), and set them
    on the space so `materialize` turns KL values into α."""
    params = kl_params(space)
    maps = {}
    for name, (rng, sites) in params.items():
        path = cache_dir() / "dose" / f"{_cache_key(lm, vectors, name, sites, rng)}.json"
        if cache and path.is_file():
            d = json.loads(path.read_text())
            maps[name] = DoseMap(name, d["kl"], d["alpha"])
            continue
        maps[name] = calibrate_param(lm, vectors, name, rng, sites)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(maps[name].to_dict()))
    space.set_dose_maps(maps)
    return maps
