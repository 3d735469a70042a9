"""Steering vectors: how they are computed, and saved with the metadata needed to use them.

Every vector carries `mean_norm`, the mean per-token activation norm at its site on neutral text, so
strengths can be given in a normalised unit that means the same at every layer (see interventions.py).
That norm is always measured on the same texts, NEUTRAL_TEXTS, whatever the vector was built from
(its negatives, CAA prompts, a file): a scale measured on different texts per source would put a step
into a tent over layers where one vector's own layer meets its neighbours.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from steeropt.engine.activations import NEUTRAL_SET_ID, NEUTRAL_TEXTS, collect, neutral_norm  # noqa: F401
from steeropt.errors import InterventionError, SteeroptError
from steeropt.engine.interventions import apply_vector
from steeropt.engine.models import LoadedModel
from steeropt.engine.vector_set import VectorSet  # noqa: F401  (re-exported: the public home of VectorSet)

@dataclass
class SteeringVector:
    """A direction at one site of one model.

    vector: `[d]` with d = d_model (site "resid") or n_heads * head_dim (site "heads", per-head slices).
    mean_norm: mean per-token activation norm at the site on neutral text (resid).
    head_norms: per-head mean norm of the o_proj input slices on neutral text (heads), `[n_heads]`.
    affine: {"omega": [d], "beta": [d]} per-dimension transport map (Affine controller), if fitted.
    """

    name: str
    layer: int
    vector: torch.Tensor
    site: str = "resid"
    method: str = "file"
    mean_norm: float = float("nan")
    head_norms: torch.Tensor | None = None
    head_scores: torch.Tensor | None = None
    affine: dict | None = None
    model_name: str = ""
    model_sha256: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def check(self, lm: LoadedModel) -> None:
        """Raise InterventionError if this vector cannot be used on `lm`."""
        a = lm.adapter
        a.check_layer(self.layer)
        want = a.d_model if self.site == "resid" else a.n_heads * a.head_dim
        if self.vector.ndim != 1 or self.vector.shape[0] != want:
            raise InterventionError(
                f"vector '{self.name}' has shape {tuple(self.vector.shape)}, expected [{want}] "
                f"for site '{self.site}' of {lm.name}"
            )
        if not torch.isfinite(self.vector).all():
            raise InterventionError(f"vector '{self.name}' contains NaN or Inf")
        if self.affine is not None and not all(torch.isfinite(t).all() for t in self.affine.values()):
            raise InterventionError(f"vector '{self.name}' has a non-finite affine map")

    def alpha_from_raw(self, coefficient: float, controller: str = "add") -> float:
        """The normalised α of a raw coefficient: add x + c·v (repeng, steering-vectors) is α = c·|v|/m;
        clamp's raw target projection c is α = c/m; ablate has no raw unit (α = c)."""
        if controller == "add":
            return float(coefficient) * self.norm / self.mean_norm
        return float(coefficient) / self.mean_norm if controller == "clamp" else float(coefficient)

    def raw_from_alpha(self, alpha: float, controller: str = "add") -> float:
        """The raw coefficient of a normalised α (the inverse of `alpha_from_raw`)."""
        if controller == "add":
            return float(alpha) * self.mean_norm / self.norm
        return float(alpha) * self.mean_norm if controller == "clamp" else float(alpha)

    def apply(self, model, alpha: float | None = None, *, coefficient: float | None = None,
              controller: str = "add", layer: int | None = None, tokenizer=None):
        """A context manager that steers `model` (a LoadedModel or a transformers model) with this vector:

            with vec.apply(lm, alpha=0.3):            # normalised units
                out = lm.model.generate(**ids, max_new_tokens=40)
            with vec.apply(lm, coefficient=4.0):      # raw: x + 4.0 * v, as in repeng / steering-vectors

        `alpha = coefficient * vec.norm / vec.mean_norm`. See `interventions.apply_vector`."""
        return apply_vector(model, self, alpha, coefficient=coefficient, controller=controller, layer=layer,
                            tokenizer=tokenizer)

    def describe(self) -> dict:
        return {"name": self.name, "layer": self.layer, "site": self.site, "method": self.method,
                "norm": self.norm, "mean_norm": self.mean_norm, "model_name": self.model_name,
                "model_sha256": self.model_sha256, **self.meta}

    def save(self, path: str | Path) -> Path:
        """One .safetensors file; metadata in its header."""
        from safetensors.torch import save_file

        tensors = {"vector": self.vector.float().contiguous()}
        if self.head_norms is not None:
            tensors["head_norms"] = self.head_norms.float().contiguous()
        if self.head_scores is not None:
            tensors["head_scores"] = self.head_scores.float().contiguous()
        for key, t in (self.affine or {}).items():
            tensors[f"affine.{key}"] = t.float().contiguous()
        meta = self.describe() | {"meta": self.meta}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"steeropt": json.dumps(meta, default=str)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                info = json.loads((f.metadata() or {})["steeropt"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:
            raise SteeroptError(f"cannot read steering vector file {path}: {type(exc).__name__}: {exc}") from exc
        affine = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("affine.")} or None
        return cls(info["name"], int(info["layer"]), tensors["vector"], info["site"], info["method"],
                   float(info["mean_norm"]), tensors.get("head_norms"), tensors.get("head_scores"), affine,
                   info.get("model_name", ""), info.get("model_sha256", ""), info.get("meta") or {})


def _stamp(vec: SteeringVector, lm: LoadedModel) -> SteeringVector:
    """Fill model identity and the activation scale at the vector's layer and site (on NEUTRAL_TEXTS)."""
    vec.check(lm)
    vec.model_name, vec.model_sha256 = lm.name, lm.sha256
    if vec.site == "heads":
        vec.head_norms = neutral_norm(lm, vec.layer, "heads")
        vec.mean_norm = float(vec.head_norms.mean())
    else:
        vec.mean_norm = neutral_norm(lm, vec.layer)
    vec.meta["norm_layer"], vec.meta["norm_set"] = vec.layer, NEUTRAL_SET_ID
    return vec


def _need(texts, what: str) -> list[str]:
    texts = [t for t in (texts or []) if str(t).strip()]
    if not texts:
        raise SteeroptError(f"{what} is empty: a steering vector needs at least one text")
    return list(texts)


def diff_in_means(lm: LoadedModel, positive: list[str], negative: list[str], layer: int, *,
                  name: str = "concept", site: str = "resid", fit_affine: bool = True) -> SteeringVector:
    """mean(token-mean activations of `positive`) - mean(... of `negative`) at `layer`.

    With site="heads" the vector is the per-head diff at the o_proj input and `head_scores` holds each
    head's contribution score (Style Modulation Heads): dot(W_o[:, head] @ diff_head, W_o @ diff).
    `fit_affine` also fits the per-dimension transport map neutral -> concept (Linear-AcT).
    """
    positive, negative = _need(positive, "positive set"), _need(negative, "negative set")
    pos = collect(lm, positive, [layer], site=site)[layer]
    neg = collect(lm, negative, [layer], site=site)[layer]
    vec = SteeringVector(name, layer, pos.mean(0) - neg.mean(0), site, "diff_in_means",
                         meta={"n_positive": len(positive), "n_negative": len(negative)})
    if site == "heads":
        vec.head_scores = head_contribution_scores(lm, layer, vec.vector)
    elif fit_affine:
        vec.affine = fit_transport(collect(lm, negative, [layer], reduce="tokens")[layer],
                                   collect(lm, positive, [layer], reduce="tokens")[layer])
    return _stamp(vec, lm)


def caa(lm: LoadedModel, pairs: list[tuple[str, str]], layer: int, *, name: str = "concept") -> SteeringVector:
    """Contrastive activation addition: diff-in-means at the last prompt token of (with, without) pairs,
    each rendered with the chat template."""
    if not pairs:
        raise SteeroptError("CAA needs at least one (with, without) prompt pair")
    pos = collect(lm, [p for p, _ in pairs], [layer], reduce="last", render=True)[layer]
    neg = collect(lm, [n for _, n in pairs], [layer], reduce="last", render=True)[layer]
    vec = SteeringVector(name, layer, pos.mean(0) - neg.mean(0), "resid", "caa", meta={"n_pairs": len(pairs)})
    return _stamp(vec, lm)


def from_sae(lm: LoadedModel, path: str | Path, feature: int, layer: int, *, name: str = "feature",
             key: str = "W_dec") -> SteeringVector:
    """A feature's decoder direction from a local SAE file holding `W_dec` of shape [d_sae, d_model]."""
    w = _read_tensor(path, key)
    if w.ndim != 2:
        raise InterventionError(f"{path}: '{key}' must have shape [d_sae, d_model], got {tuple(w.shape)}")
    if not 0 <= feature < w.shape[0]:
        raise InterventionError(f"{path}: feature {feature} out of range 0..{w.shape[0] - 1}")
    vec = SteeringVector(name, layer, w[feature].float().clone(), "resid", "sae",
                         meta={"sae_path": str(path), "feature": feature})
    return _stamp(vec, lm)


def from_file(lm: LoadedModel, path: str | Path, layer: int, *, name: str = "vector", site: str = "resid",
              key: str | None = None) -> SteeringVector:
    """A raw vector from .safetensors, .npy or .pt (loaded with weights_only: never unpickles code)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            saved = SteeringVector.load(path)
        except (SteeroptError, KeyError):
            saved = None  # not a steeropt vector file: read the raw tensor
        if saved is not None:
            return _restamp(saved, lm, layer, name, site)
    vec = SteeringVector(name, layer, _read_tensor(path, key).float().flatten().clone(), site, "file",
                         meta={"path": str(path)})
    return _stamp(vec, lm)


def _restamp(vec: SteeringVector, lm, layer, name, site) -> SteeringVector:
    if vec.model_sha256 and vec.model_sha256 != lm.sha256:
        raise InterventionError(
            f"vector '{vec.name}' was computed on model {vec.model_name} ({vec.model_sha256[:12]}), "
            f"not on {lm.name} ({lm.sha256[:12]})"
        )
    if site != vec.site:
        raise InterventionError(f"vector file for '{vec.name}' holds a '{vec.site}' vector, not '{site}'")
    vec.name = name
    if layer != vec.layer:
        # Everything measured or fitted at the old layer is stale here: norms are re-measured below, head
        # scores recomputed; the affine map (fitted on contrast texts the file does not carry) is dropped.
        vec.meta["fitted_layer"] = vec.layer
        if vec.affine is not None:
            vec.affine = None
            vec.meta["affine_dropped"] = f"fitted at layer {vec.meta['fitted_layer']}, not refittable at {layer}"
        vec.layer = layer
        if vec.site == "heads":
            vec.check(lm)
            vec.head_scores = head_contribution_scores(lm, layer, vec.vector.float())
    if (vec.meta.get("norm_layer"), vec.meta.get("norm_set"), vec.model_sha256) == (vec.layer, NEUTRAL_SET_ID, lm.sha256):
        vec.check(lm)
        return vec  # its norms were measured here, on the current neutral set
    return _stamp(vec, lm)


def _read_tensor(path: str | Path, key: str | None) -> torch.Tensor:
    path = Path(path)
    if not path.is_file():
        raise SteeroptError(f"vector file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if key is None and len(tensors) == 1:
                return next(iter(tensors.values()))
            key = key or "vector"
            if key not in tensors:
                raise SteeroptError(f"{path}: no tensor '{key}' (has {sorted(tensors)})")
            return tensors[key]
        if path.suffix == ".npy":
            import numpy as np

            return torch.from_numpy(np.load(path, allow_pickle=False))
        if path.suffix == ".pt":
            obj = torch.load(path, weights_only=True, map_location="cpu")
            if isinstance(obj, dict):
                obj = obj[key or "vector"] if (key or "vector") in obj else obj
            if not isinstance(obj, torch.Tensor):
                raise SteeroptError(f"{path}: expected a tensor, found {type(obj).__name__}")
            return obj
    except SteeroptError:
        raise
    except Exception as exc:
        raise SteeroptError(f"cannot read vector file {path}: {type(exc).__name__}: {exc}") from exc
    raise SteeroptError(f"unsupported vector file type '{path.suffix}' ({path}): use .safetensors, .npy or .pt")


def head_contribution_scores(lm: LoadedModel, layer: int, head_diff: torch.Tensor) -> torch.Tensor:
    """Score per head: dot(W_o[:, slice_h] @ diff_h, W_o @ diff) / |W_o @ diff|^2, `[n_heads]`.
    The scores sum to 1; a head with a large score carries the concept into the residual stream."""
    w = lm.adapter.o_proj(layer).weight.float().cpu()
    head_diff = head_diff.float().cpu()  # [d_model, n_heads * head_dim]
    n, hd = lm.adapter.n_heads, lm.adapter.head_dim
    mapped = torch.stack([w[:, h * hd:(h + 1) * hd] @ head_diff[h * hd:(h + 1) * hd] for h in range(n)])
    total = mapped.sum(0)
    return mapped @ total / total.dot(total).clamp(min=1e-12)


def fit_transport(source: torch.Tensor, target: torch.Tensor) -> dict:
    """Per-dimension affine map omega * x + beta sending the source distribution to the target one
    (Linear-AcT): least squares between matched quantiles of each dimension. source/target: `[n, d]`."""
    q = torch.linspace(0.02, 0.98, 49)
    s = torch.quantile(source.float(), q, dim=0)  # [49, d]
    t = torch.quantile(target.float(), q, dim=0)
    s_c, t_c = s - s.mean(0), t - t.mean(0)
    omega = (s_c * t_c).sum(0) / (s_c * s_c).sum(0).clamp(min=1e-8)
    beta = t.mean(0) - omega * s.mean(0)
    return {"omega": omega, "beta": beta}
