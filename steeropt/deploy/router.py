"""Route a new prompt to one of a study's prompt families, from the model's own activations.

A profile holds a deployable α per family, but a prompt in production has no family. The router assigns one:

    >>> r = build_router(lm, {"advice": [...], "descriptions": [...]}, held_out={"advice": [...], ...})  # doctest: +SKIP
    >>> r.route(lm, ["How do I fix a flat tyre?"])[0].family      # a family name, or None = unknown
    'advice'
    >>> r.report["accuracy"]                                     # on the held-out prompts, never the build ones

Features: the mean hidden state of the raw prompt text (no chat template, first token skipped: an
attention-sink outlier) at the output of a middle layer of the *unsteered* model (routing happens before any
steering), centred on the mean of the family centroids and scaled to unit length.
Model: nearest centroid by cosine similarity.
Unknown: a prompt whose best similarity is below `threshold` gets no family (callers apply the safe default,
the unsteered model). The threshold is the `unknown_quantile` (default 0.2) quantile of the leave-one-out
similarities of the build prompts to their own family's centroid: about one build prompt in five would be
unknown. An unknown prompt only loses its steering; a misrouted or off-topic one gets another family's α.
Measured on the embedded model (studies/data families, 12 build + 12 held-out prompts each): in-family
similarities ~0.1-0.7, off-topic prompts (arithmetic, code, translation) ~0.05-0.2.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from steeropt.engine.activations import collect
from steeropt.errors import SteeroptError

UNKNOWN_DEFAULT = "unsteered"  # what callers do with an unknown prompt (documented in the profile)


@dataclass
class Route:
    family: str | None  # None: unknown (below the threshold)
    similarity: float  # cosine to the nearest centroid
    nearest: str  # the nearest family, also when unknown
    margin: float  # best minus second-best similarity (how clear the choice was)


@dataclass
class Router:
    layer: int
    families: list[str]
    center: torch.Tensor  # [d]
    centroids: torch.Tensor  # [F, d], unit length
    threshold: float
    report: dict = field(default_factory=dict)  # built_on counts, held-out accuracy

    def features(self, lm, prompts: list[str]) -> torch.Tensor:
        return _features(lm, prompts, self.layer, self.center)

    def route(self, lm, prompts: list[str]) -> list[Route]:
        if not prompts:
            return []
        sims = self.features(lm, prompts) @ self.centroids.T  # [n, F]
        out = []
        for row in sims:
            top = torch.topk(row, min(2, len(self.families)))
            best, i = float(top.values[0]), int(top.indices[0])
            margin = best - float(top.values[1]) if len(self.families) > 1 else best
            out.append(Route(self.families[i] if best >= self.threshold else None, best, self.families[i], margin))
        return out

    def evaluate(self, lm, prompts: dict[str, list[str]]) -> dict:
        """Accuracy on labelled prompts (unknown counts as wrong), unknown share, per-family accuracy."""
        per, right, unknown, n = {}, 0, 0, 0
        for fam, ps in prompts.items():
            if not ps:
                continue
            routes = self.route(lm, list(ps))
            ok = sum(r.family == fam for r in routes)
            per[fam] = {"n": len(ps), "correct": ok, "accuracy": ok / len(ps),
                        "unknown": sum(r.family is None for r in routes)}
            right, unknown, n = right + ok, unknown + per[fam]["unknown"], n + len(ps)
        return {"n": n, "correct": right, "accuracy": right / n if n else None,
                "unknown_share": unknown / n if n else None,
                "routed_accuracy": right / (n - unknown) if n - unknown else None, "per_family": per}

    # ---- storage: tensors in safetensors, the rest in profile.yaml -----------------------------------
    def save(self, path: str | Path) -> dict:
        """Write the tensors; returns the profile.yaml entry (everything else)."""
        from safetensors.torch import save_file

        path = Path(path)
        save_file({"center": self.center.contiguous(), "centroids": self.centroids.contiguous()}, str(path))
        return {"file": path.name, "method": "nearest_centroid_cosine", "layer": self.layer,
                "features": f"mean hidden state of the raw prompt (no chat template, first token skipped) "
                            f"at the output of layer {self.layer}, centred, unit length",
                "families": list(self.families), "threshold": self.threshold, "unknown": UNKNOWN_DEFAULT,
                **self.report}

    @classmethod
    def load(cls, entry: dict, directory: Path) -> "Router":
        from safetensors.torch import load_file

        f = Path(directory) / entry["file"]
        if not f.is_file():
            raise SteeroptError(f"router file {f} is missing")
        t = load_file(str(f))
        report = {k: v for k, v in entry.items() if k in ("built_on", "held_out", "threshold_rule")}
        return cls(int(entry["layer"]), list(entry["families"]), t["center"], t["centroids"],
                   float(entry["threshold"]), report)


def _features(lm, prompts: list[str], layer: int, center: torch.Tensor | None) -> torch.Tensor:
    # unit length first (prompts of any length weigh the same), then centred and unit length again
    x = _unit(collect(lm, list(prompts), [layer], reduce="mean", render=False)[layer].float())
    return x if center is None else _unit(x - center)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def build_router(lm, prompts: dict[str, list[str]], *, held_out: dict[str, list[str]] | None = None,
                 layer: int | None = None, threshold: float | None = None, unknown_quantile: float = 0.2) -> Router:
    """A nearest-centroid router on `prompts` (family -> build prompts, >= 2 per family, >= 2 families).
    `held_out` (family -> prompts never used to build) gives the reported accuracy. `layer` defaults to the
    middle layer; `threshold` to the leave-one-out quantile rule of the module docstring."""
    fams = [f for f, ps in prompts.items() if ps]
    if len(fams) < 2:
        raise SteeroptError(f"a router needs at least 2 families with prompts, got {fams}")
    small = [f for f in fams if len(prompts[f]) < 2]
    if small:
        raise SteeroptError(f"a router needs at least 2 build prompts per family (leave-one-out threshold); {small} have 1")
    if held_out:
        shared = {f: sorted(set(prompts.get(f, ())) & set(ps)) for f, ps in held_out.items()}
        shared = {f: s for f, s in shared.items() if s}
        if shared:
            raise SteeroptError(f"router: held-out prompts are also build prompts: {shared}")
    layer = lm.adapter.n_layers // 2 if layer is None else int(layer)
    lm.adapter.check_layer(layer)
    raw = {f: _features(lm, list(prompts[f]), layer, None) for f in fams}  # unit length before centring
    # centre on the mean of the family means: every family weighs the same, whatever its size
    center = torch.stack([raw[f].mean(0) for f in fams]).mean(0)
    feats = {f: _unit(raw[f] - center) for f in fams}
    centroids = torch.stack([_unit(feats[f].mean(0)) for f in fams])
    loo = []
    for f in fams:
        x = feats[f]
        for i in range(len(x)):
            rest = torch.cat([x[:i], x[i + 1:]])
            loo.append(float(x[i] @ _unit(rest.mean(0))))
    rule = (f"{unknown_quantile:g} quantile of the build prompts' leave-one-out cosine to their own family's "
            "centroid")
    if threshold is None:
        if not 0 <= unknown_quantile < 1:
            raise SteeroptError(f"unknown_quantile must be in [0, 1), got {unknown_quantile}")
        threshold = float(torch.quantile(torch.tensor(loo), unknown_quantile))
    else:
        rule = "given"
    router = Router(layer, fams, center, centroids, float(threshold),
                    {"built_on": {f: len(prompts[f]) for f in fams}, "threshold_rule": rule})
    if held_out:
        router.report["held_out"] = router.evaluate(lm, {f: ps for f, ps in held_out.items() if f in fams})
    return router
