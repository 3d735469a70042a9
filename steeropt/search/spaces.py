"""Search spaces: which strengths (α) an optimizer may choose, and how a choice becomes an InterventionPlan.

A space (search_spaces/*.yaml) lists free α per site, smooth "tent" kernels over a range of layers,
an optional controller or positions choice and optional decoding parameters. Every α is in
normalised units (see steeropt.engine.interventions); bounds are checked when the spec is loaded.

    >>> spec = SearchSpaceSpec.model_validate({"name": "demo", "sites": [
    ...     {"layer": 4, "vector": "wedding", "alpha": {"low": 0.0, "high": 1.5}}]})
    >>> [p.name for p in spec.parameters()]
    ['alpha_l4_wedding']
    >>> spec.materialize({"alpha_l4_wedding": 0.5}).alphas
    [0.5]

The tent kernel (after Heretic) spends 4 parameters on a whole layer range instead of one per layer:
α(l) = peak_alpha * (1 - (1 - floor) * |l - peak_layer| / width) for |l - peak_layer| <= width, else 0.
So α is peak_alpha at the peak, floor * peak_alpha at distance `width`, and nothing beyond: every layer of
the range stays a site, so all candidates of one space have the same sites (one batched generate call over
many candidates stays simple), but layers outside the tent are INACTIVE sites (the hooks skip them), not
α = 0, because clamp at α = 0 would ablate them.

The unsteered point (`baseline_params`) gives every α and peak_alpha the value None, which `materialize`
turns into inactive sites: unsteered for every controller (no α value is "off" for clamp).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from steeropt.errors import SteeroptError
from steeropt.types import CONTROLLERS, POSITIONS, InterventionPlan, Site

Controller = Literal["add", "clamp", "affine", "head_add", "ablate"]
Position = Literal["prompt", "generated", "all"]
DEFAULT_GRID = 14  # AxBench sweeps 14 steering factors per concept


@dataclass(frozen=True)
class ParamDef:
    """One optimizer parameter: a numeric range (low/high, log, step, integer) or a categorical (choices)."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None
    step: float | None = None
    integer: bool = False


class Range(BaseModel):
    """A numeric parameter's bounds (normalised units for α)."""

    model_config = ConfigDict(extra="forbid")
    low: float
    high: float
    scale: Literal["linear", "log"] = "linear"
    step: float | None = Field(None, gt=0)  # discretise (optuna step); None = continuous
    integer: bool = False  # e.g. a tent peak that must sit on a layer
    grid: list[float] | None = None  # explicit values for the grid optimizer (else evenly spaced)
    baseline: float | None = None  # value in the unsteered point when it is not α = 0 (decoding params)
    unit: Literal["alpha", "kl"] = "alpha"  # kl: the values are doses in nats, mapped to α per site (dose_units)

    @model_validator(mode="after")
    def _check(self) -> Range:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"need finite low < high, got low={self.low}, high={self.high}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.scale == "log" and self.step is not None:
            raise ValueError("step cannot be combined with log scale")
        if self.unit == "kl" and self.low < 0:
            raise ValueError(f"a KL dose range needs low >= 0, got low={self.low}")
        bad = [v for v in self.grid or [] if not self.low <= v <= self.high]
        if bad:
            raise ValueError(f"grid values {bad} lie outside [{self.low}, {self.high}]")
        return self

    def param(self, name: str) -> ParamDef:
        return ParamDef(name, self.low, self.high, self.scale == "log", None, self.step, self.integer)

    def grid_values(self, n: int) -> list[float]:
        if self.grid:
            return sorted(set(self.grid))
        if self.integer:
            return list(range(math.ceil(self.low), math.floor(self.high) + 1))
        vals = np.geomspace(self.low, self.high, n) if self.scale == "log" else np.linspace(self.low, self.high, n)
        if self.step is not None:
            vals = self.low + np.round((vals - self.low) / self.step) * self.step
        return sorted({float(v) for v in np.clip(vals, self.low, self.high)})


class SiteSpec(BaseModel):
    """One steered site with its own free α (sites with the same `param` share one α)."""

    model_config = ConfigDict(extra="forbid")
    layer: int = Field(ge=0)
    vector: str
    controller: Controller = "add"  # replaced by the chosen one when the space has a controller choice
    heads: list[int] | None = None  # head_add only
    positions: Position = "all"
    alpha: Range
    param: str | None = None  # parameter name; default alpha_l<layer>_<vector>[_<controller>]


class TentKernel(BaseModel):
    """α over layers [first, last] from 4 parameters: peak_layer, peak_alpha, width (layers), floor (fraction)."""

    model_config = ConfigDict(extra="forbid")
    vector: str
    layers: tuple[int, int]  # first and last layer, inclusive
    controller: Controller = "add"
    heads: list[int] | None = None
    positions: Position = "all"
    peak_layer: Range  # may be continuous: the tent then peaks between two layers
    peak_alpha: Range
    width: Range  # distance in layers at which α falls to floor * peak_alpha (0 beyond)
    floor: Range = Range(low=0.0, high=1.0)  # fraction of peak_alpha at the tent's edge
    prefix: str = "tent"  # parameter names: <prefix>_peak_layer, <prefix>_peak_alpha, ...

    @model_validator(mode="after")
    def _check(self) -> TentKernel:
        first, last = self.layers
        if not 0 <= first <= last:
            raise ValueError(f"layers must be [first, last] with 0 <= first <= last, got {list(self.layers)}")
        if self.peak_layer.low < first or self.peak_layer.high > last:
            raise ValueError(f"peak_layer bounds must lie inside layers {list(self.layers)}")
        if self.width.low <= 0:
            raise ValueError("width.low must be > 0 (layers)")
        if self.floor.low < 0 or self.floor.high > 1:
            raise ValueError("floor is a fraction of peak_alpha: bounds must lie in [0, 1]")
        return self

    def names(self) -> dict[str, str]:
        return {k: f"{self.prefix}_{k}" for k in ("peak_layer", "peak_alpha", "width", "floor")}

    def alphas(self, peak_layer: float, peak_alpha: float, width: float, floor: float) -> list[float]:
        """α for every layer of the range (len = last - first + 1); 0.0 outside the tent (see `active`)."""
        first, last = self.layers
        out = []
        for layer in range(first, last + 1):
            d = abs(layer - peak_layer)
            out.append(float(peak_alpha * (1 - (1 - floor) * d / width)) if d <= width else 0.0)
        return out

    def active(self, peak_layer: float, width: float) -> list[bool]:
        """Which layers of the range lie inside the tent (the others are inactive sites)."""
        return [abs(layer - peak_layer) <= width for layer in range(self.layers[0], self.layers[1] + 1)]


class ControllerChoice(BaseModel):
    """A categorical over controllers; every site and kernel then uses the chosen one."""

    model_config = ConfigDict(extra="forbid")
    choices: list[Controller] = Field(min_length=2)
    param: str = "controller"


class DecodingSpace(BaseModel):
    """Decoding parameters searched with α (they interact with strength)."""

    model_config = ConfigDict(extra="forbid")
    temperature: Range | None = None
    repetition_penalty: Range | None = None


class SearchSpaceSpec(BaseModel):
    """A search space file: free α per site, tent kernels, controller/positions choice, decoding params."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    description: str = ""
    sites: list[SiteSpec] = []
    kernels: list[TentKernel] = []
    controller: ControllerChoice | None = None
    positions: list[Position] | None = None  # a categorical "positions" parameter for every site
    decoding: DecodingSpace | None = None
    _dose_maps: dict = PrivateAttr(default_factory=dict)  # param -> dose_units.DoseMap (KL-unit parameters)

    def set_dose_maps(self, maps: dict) -> None:
        """The α ↔ KL maps of the KL-unit parameters (search.dose_units.calibrate sets them)."""
        self._dose_maps = dict(maps)

    def kl_unit_params(self) -> list[str]:
        return [s.param or self._site_param(s) for s in self.sites if s.alpha.unit == "kl"]

    @model_validator(mode="after")
    def _check(self) -> SearchSpaceSpec:
        if not self.sites and not self.kernels:
            raise ValueError("a search space needs at least one site or kernel")
        names: dict[str, Any] = {}
        for s in self.sites:
            name = s.param or self._site_param(s)
            if name in names and names[name] != s.alpha:
                raise ValueError(f"sites sharing parameter {name!r} must have the same alpha range")
            names[name] = s.alpha
        others = [n for k in self.kernels for n in k.names().values()]
        others += [self.controller.param] if self.controller else []
        others += ["positions"] if self.positions else []
        others += [k for k, v in (self.decoding or DecodingSpace()) if v is not None]
        dup = sorted({n for n in others if others.count(n) > 1 or n in names})
        if dup:
            raise ValueError(f"duplicate parameter names {dup} (set `param:` on sites or `prefix:` on kernels)")
        if self.positions is not None and len(set(self.positions)) < 2:
            raise ValueError("positions choice needs at least two distinct values")
        head_add = self.controller and "head_add" in self.controller.choices
        for what, items in (("sites", self.sites), ("kernels", self.kernels)):
            for i, s in enumerate(items):
                if (s.controller == "head_add" or head_add) and not s.heads:
                    raise ValueError(f"{what}[{i}] can use head_add but lists no heads")
        return self

    def _site_param(self, s: SiteSpec) -> str:
        # The controller joins the name only when two sites at one (layer, vector) differ by controller.
        twins = [t for t in self.sites if t.layer == s.layer and t.vector == s.vector and t.param is None]
        suffix = f"_{s.controller}" if len({t.controller for t in twins}) > 1 else ""
        return f"alpha_l{s.layer}_{s.vector}{suffix}"

    def _alpha_params(self) -> dict[str, Range]:
        out: dict[str, Range] = {}
        for s in self.sites:
            out.setdefault(s.param or self._site_param(s), s.alpha)
        return out

    def labels(self) -> dict[str, str]:
        """A display name per parameter, for tables and plots: "α (layer 10, add)" instead of the parameter
        name alpha_l10_wedding (the vector is named when the space has several)."""
        out = {}
        several = len({s.vector for s in self.sites} | {k.vector for k in self.kernels}) > 1
        for s in self.sites:
            ctrl = "" if self.controller else f", {s.controller}"
            vec = f", {s.vector}" if several else ""
            out.setdefault(s.param or self._site_param(s), f"α (layer {s.layer}{ctrl}{vec})")
        for k in self.kernels:
            span = f"layers {k.layers[0]}-{k.layers[1]}, {k.vector}"
            for field, name in k.names().items():
                out[name] = f"tent {field.replace('_', ' ').replace('alpha', 'α')} ({span})"
        return out

    def parameters(self) -> list[ParamDef]:
        """All parameters, in a stable order: site α, kernel parameters, controller, positions, decoding."""
        out = [r.param(n) for n, r in self._alpha_params().items()]
        for k in self.kernels:
            out += [getattr(k, field).param(name) for field, name in k.names().items()]
        if self.controller:
            out.append(ParamDef(self.controller.param, choices=tuple(self.controller.choices)))
        if self.positions:
            out.append(ParamDef("positions", choices=tuple(self.positions)))
        for key, r in self.decoding or DecodingSpace():
            if r is not None:
                out.append(r.param(key))
        return out

    def materialize(self, params: dict) -> InterventionPlan:
        """The InterventionPlan for one parameter set (sites in file order, then kernel layers). An α or
        peak_alpha of None makes its site(s) inactive; so do layers outside a tent."""
        want = {p.name: p for p in self.parameters()}
        off = set(self._alpha_params()) | {k.names()["peak_alpha"] for k in self.kernels}  # None = site(s) off
        missing, unknown = sorted(set(want) - set(params)), sorted(set(params) - set(want))
        if missing or unknown:
            raise SteeroptError(f"search space {self.name!r}: missing parameters {missing}, unknown {unknown}")
        for name, p in want.items():
            v = params[name]
            if v is None and name in off:
                continue
            if p.choices is not None and v not in p.choices:
                raise SteeroptError(f"search space {self.name!r}: {name}={v!r} is not one of {list(p.choices)}")
            if p.choices is None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise SteeroptError(f"search space {self.name!r}: {name}={v!r} is not a finite number")
        ctrl = params.get(self.controller.param) if self.controller else None
        pos = params.get("positions")

        def site(layer: int, s: SiteSpec | TentKernel) -> Site:
            return Site(layer, ctrl or s.controller, s.vector, tuple(s.heads) if s.heads else None, pos or s.positions)

        sites = [site(s.layer, s) for s in self.sites]
        site_alphas = [self._alpha_of(s, params[s.param or self._site_param(s)]) for s in self.sites]
        alphas = [0.0 if a is None else float(a) for a in site_alphas]
        active = [a is not None for a in site_alphas]
        for k in self.kernels:
            n = k.names()
            at, peak, width, floor = (params[n[f]] for f in ("peak_layer", "peak_alpha", "width", "floor"))
            inside = k.active(float(at), float(width))
            alphas += k.alphas(float(at), 0.0 if peak is None else float(peak), float(width), float(floor))
            active += [on and peak is not None for on in inside]
            sites += [site(layer, k) for layer in range(k.layers[0], k.layers[1] + 1)]
        decoding = {key: float(params[key]) for key, r in self.decoding or DecodingSpace() if r is not None}
        return InterventionPlan(sites=sites, alphas=alphas, params=dict(params), decoding=decoding,
                                active=None if all(active) else active)

    def _alpha_of(self, s: SiteSpec, value):
        """A site's α from its parameter value: as given, or through the dose map of a KL-unit parameter."""
        if value is None or s.alpha.unit != "kl":
            return value
        name = s.param or self._site_param(s)
        if name not in self._dose_maps:
            raise SteeroptError(f"search space {self.name!r}: {name} is in KL units and needs its α ↔ KL map "
                                "(search.dose_units.calibrate, done by Study.setup)")
        return self._dose_maps[name].alpha_for(float(value))

    def baseline_params(self) -> dict:
        """The unsteered point: every α and peak_alpha None (materialize makes those sites inactive: α = 0
        is not "off" for clamp), other parameters at their `baseline` (default: low, or the first choice)."""
        out: dict[str, Any] = {}
        for p in self.parameters():
            out[p.name] = p.choices[0] if p.choices is not None else p.low
        out.update({n: None for n in self._alpha_params()})
        for k in self.kernels:
            out[k.names()["peak_alpha"]] = None
        for key, r in self.decoding or DecodingSpace():
            if r is not None and r.baseline is not None:
                out[key] = r.baseline
        return out

    def grid(self, n: int = DEFAULT_GRID) -> dict[str, list]:
        """Values per parameter for a factor grid (optuna GridSampler takes the Cartesian product):
        n evenly spaced values per numeric dimension (log-spaced on log scale, or the explicit
        `grid:` list), every layer for integer ranges, every choice for categoricals."""
        if n < 1:
            raise SteeroptError(f"grid size must be >= 1, got {n}")
        ranges: dict[str, Range] = dict(self._alpha_params())
        for k in self.kernels:
            ranges.update({name: getattr(k, field) for field, name in k.names().items()})
        for key, r in self.decoding or DecodingSpace():
            if r is not None:
                ranges[key] = r
        out = {}
        for p in self.parameters():
            out[p.name] = list(p.choices) if p.choices is not None else ranges[p.name].grid_values(n)
        return out

    def grid_points(self, n: int = DEFAULT_GRID) -> list[dict]:
        """The Cartesian product of grid(n) as parameter dicts."""
        g = self.grid(n)
        return [dict(zip(g, combo)) for combo in itertools.product(*g.values())]

    def layers_used(self) -> list[int]:
        layers = {s.layer for s in self.sites}
        for k in self.kernels:
            layers.update(range(k.layers[0], k.layers[1] + 1))
        return sorted(layers)

    def heads_used(self) -> dict[int, list[int]]:
        """layer -> heads, for sites that may steer heads (to check against the model's n_heads)."""
        out: dict[int, set[int]] = {}
        for s in self.sites:
            if s.heads:
                out.setdefault(s.layer, set()).update(s.heads)
        for k in self.kernels:
            for layer in range(k.layers[0], k.layers[1] + 1):
                if k.heads:
                    out.setdefault(layer, set()).update(k.heads)
        return {layer: sorted(h) for layer, h in sorted(out.items())}

    def vectors_used(self) -> list[str]:
        return sorted({s.vector for s in [*self.sites, *self.kernels]})


assert set(CONTROLLERS) == set(Controller.__args__) and set(POSITIONS) == set(Position.__args__)
