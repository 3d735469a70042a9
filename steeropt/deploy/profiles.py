"""Steering profiles: a deployable α per prompt family, written by `steeropt pick` and applied at inference.

A profile is a directory:

    profile.yaml                 model identity, sites, controller, α per family, decoding, measured scores
    vectors/<name>.safetensors   the steering vectors (SteeringVector.save: vector + mean norm + affine map ...)
    <family>.control-vector.gguf llama.cpp control vector (only when every site of that family is `add`)
    router.safetensors           family router for new prompts (deploy/router.py), when pick gave its prompts

Apply it to a model (a LoadedModel, or a raw transformers model with its tokenizer):

    >>> import steeropt
    >>> with steeropt.apply_profile(lm, "profiles/quickstart", family="advice"):    # doctest: +SKIP
    ...     out = lm.model.generate(**lm.tokenizer(text, return_tensors="pt"), max_new_tokens=40)

`family="auto"` routes the prompt (`apply_profile(lm, prof, family="auto", prompt=text)`): a prompt the router
calls unknown, or a family without a deployable setting, gets the safe default, the unsteered model.

The hooks are the same controllers as in a study (steeropt.engine.interventions), with one strength for every
row, so any batch size works. A profile made for another model (weights hash / fingerprint mismatch) or
an unknown family raises ProfileError (a SteeroptError: the CLI exits with code 2).

llama.cpp control vectors (GGUF, arch "controlvector"): tensors `direction.N`, float32 [n_embd], keys
controlvector.model_hint and controlvector.layer_count — what repeng's export_gguf writes. llama.cpp
(common_control_vector_load_one) stores direction.N at buffer offset n_embd*(N-1), and
llama_adapter_cvec::apply fills block il from offset n_embd*(il-1), adding it to block il's output
(after the FFN residual add, "l_out"). So direction.N acts on the output of 0-based block N — the same
index as our `layer` (a forward hook on decoder layer N's output) and as repeng's. Layer 0 cannot be
expressed (llama.cpp rejects direction.0). The tensor is raw_α · v = α · m · v̂ (our add), applied at all
positions (llama.cpp has no prompt/generated switch), with strength 1 (`--control-vector FILE`).
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from steeropt.deploy.router import Router, build_router
from steeropt.engine.generation import Decoding
from steeropt.engine.interventions import Positions, build_op, hook_point, install_hooks, validate_plans
from steeropt.engine.models import as_loaded
from steeropt.engine.vectors import SteeringVector, VectorSet
from steeropt.errors import SteeroptError
from steeropt.types import InterventionPlan, Site

FORMAT = "steeropt-profile/1"


class ProfileError(SteeroptError):
    """A profile cannot be used: unreadable, for a different model, or without the asked family."""


# ---- model identity --------------------------------------------------------------------------------
def weights_fingerprint(model) -> str:
    """A cheap hash of a model's weights (config sizes + a strided sample of a few tensors, float32).
    Identifies a raw transformers model whose file hash is unknown."""
    h = hashlib.sha256()
    cfg = model.config
    h.update(json.dumps([getattr(cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                         "num_attention_heads", "vocab_size")]).encode())
    params = dict(model.named_parameters())
    names = sorted(params)
    for name in names[:3] + names[-3:]:
        t = params[name].detach().float().flatten()
        h.update(name.encode())
        h.update(t[:: max(1, t.numel() // 4096)][:4096].cpu().numpy().round(5).tobytes())  # .cpu(): a GPU model
    return h.hexdigest()


# ---- the profile -------------------------------------------------------------------------------------
@dataclass
class Profile:
    path: Path
    data: dict

    @property
    def families(self) -> dict:
        return self.data["families"]

    @property
    def model(self) -> dict:
        return self.data["model"]

    def family(self, name: str) -> dict:
        fams = self.families
        if name not in fams:
            raise ProfileError(f"profile {self.path} has no family '{name}'; it has: {', '.join(sorted(fams)) or 'none'}")
        fam = fams[name]
        if fam.get("status") != "ok":
            raise ProfileError(f"profile {self.path}: family '{name}' has no deployable setting "
                               f"({fam.get('reason', 'no setting met the constraint')})")
        return fam

    def plan(self, family: str, scale: float = 1.0):
        """The family's InterventionPlan; `scale` multiplies every α (parity: strength 0, ½, -1 ...)."""
        fam = self.family(family)
        sites = [Site(int(s["layer"]), s["controller"], s["vector"],
                      tuple(s["heads"]) if s.get("heads") else None, s.get("positions", "all")) for s in fam["sites"]]
        return InterventionPlan(sites, [scale * float(s["alpha"]) for s in fam["sites"]])

    def router(self):
        """The family router stored in the profile (deploy/router.py), or None for a profile without one."""
        entry = self.data.get("router")
        if not entry:
            return None
        try:
            return Router.load(entry, self.path)
        except (SteeroptError, KeyError, OSError) as exc:
            raise ProfileError(f"profile {self.path}: unusable router: {exc}") from None

    def route(self, lm, prompts: list[str]) -> list:
        """One deploy.router.Route per prompt (route.family None = unknown)."""
        router = self.router()
        if router is None:
            raise ProfileError(f"profile {self.path} has no router for family='auto'; re-run steeropt pick "
                               "(it stores one), or name the family")
        return router.route(lm, list(prompts))

    def resolve(self, lm, family: str, prompt: str | None = None) -> str | None:
        """The family whose setting applies: `family` itself, or for "auto" the routed one; None = the safe
        default (unsteered): an unknown prompt, or a family without a deployable setting."""
        if family != "auto":
            self.family(family)
            return family
        if prompt is None:
            raise ProfileError("family='auto' routes a prompt: pass prompt=...")
        routed = self.route(lm, [prompt])[0].family
        return routed if routed is not None and self.families.get(routed, {}).get("status") == "ok" else None

    def vectors(self):
        vs = VectorSet()
        for name, rel in self.data["vectors"].items():
            p = self.path / rel
            if not p.is_file():
                raise ProfileError(f"profile {self.path}: vector file {rel} is missing")
            vec = SteeringVector.load(p)
            vec.name = name
            vs.add(vec)
        return vs

    def check_model(self, lm) -> None:
        """Raise ProfileError if `lm` is not the model the profile was made for."""
        want = self.model
        if lm.sha256:
            if want.get("sha256") and lm.sha256 != want["sha256"]:
                raise ProfileError(f"profile {self.path} was made for model {want.get('name')} "
                                   f"(sha256 {want['sha256'][:12]}), not for {lm.name} (sha256 {lm.sha256[:12]})")
            return
        fp = weights_fingerprint(lm.model)
        if want.get("fingerprint") and fp != want["fingerprint"]:
            raise ProfileError(f"profile {self.path} was made for model {want.get('name')} "
                               f"(weights fingerprint {want['fingerprint'][:12]}); this model's is {fp[:12]}")

    def decoding(self):
        return Decoding(**self.data.get("decoding", {}))


def load_profile(path) -> Profile:
    if isinstance(path, Profile):
        return path
    p = Path(path)
    f = p / "profile.yaml" if p.is_dir() else p
    if not f.is_file():
        raise ProfileError(f"no steering profile at {path} (expected a directory with profile.yaml)")

    try:
        data = yaml.safe_load(f.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{f}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ProfileError(f"{f}: not a steeropt profile (format should be '{FORMAT}')")
    for key in ("model", "vectors", "families"):
        if key not in data:
            raise ProfileError(f"{f}: missing field '{key}'")
    return Profile(f.parent, data)


def write_profile(out_dir, *, lm, vectors, families: dict, decoding: dict, study: dict, objective: dict,
                  gguf: bool = True, router_prompts: dict[str, list[str]] | None = None,
                  router_test_prompts: dict[str, list[str]] | None = None) -> Profile:
    """Write profile.yaml + vectors (+ a llama.cpp GGUF per family whose sites are all `add`, + a router).

    families: name -> {"status": "ok"|"no_deployable_setting", "sites": [{layer, controller, vector, heads,
    positions, alpha, raw_alpha}], "selection": {...}, "held_out": {...}, ...}.
    router_prompts: family -> prompts to build the family router on (the selection prompts);
    router_test_prompts: family -> prompts never used to build it (the held-out prompts): its reported accuracy."""
    out = Path(out_dir)
    (out / "vectors").mkdir(parents=True, exist_ok=True)
    used = sorted({s["vector"] for f in families.values() for s in f.get("sites") or []}) or sorted(vectors)
    vec_files = {}
    for name in used:
        vectors[name].save(out / "vectors" / f"{name}.safetensors")
        vec_files[name] = f"vectors/{name}.safetensors"
    data = {"format": FORMAT,
            "model": {"name": lm.name, "sha256": lm.sha256, "arch": lm.adapter.arch,
                      "fingerprint": weights_fingerprint(lm.model)},
            "study": study, "objective": objective, "decoding": dict(decoding), "vectors": vec_files,
            "families": families}
    if gguf:
        for fam, f in families.items():
            sites = f.get("sites") or []
            if f.get("status") == "ok" and sites and all(s["controller"] == "add" for s in sites):
                try:
                    path = export_control_vector(out / f"{fam}.control-vector.gguf", sites, vectors, lm)
                    f["llama_cpp"] = {"control_vector": path.name, "usage": f"--control-vector {path.name}"}
                except ProfileError as exc:
                    f["llama_cpp"] = {"skipped": str(exc)}
    if router_prompts:
        router = build_router(lm, router_prompts, held_out=router_test_prompts)
        data["router"] = router.save(out / "router.safetensors")
    (out / "profile.yaml").write_text(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True))
    return load_profile(out)


def _plain(x):
    return json.loads(json.dumps(x, default=lambda o: None if o != o else (list(o) if isinstance(o, tuple) else str(o))))


def export_control_vector(path, sites: list[dict], vectors, lm) -> Path:
    """llama.cpp control vector for `add` sites: direction.<layer> = raw α · v (float32), layers summed."""
    import gguf

    dirs: dict[int, np.ndarray] = {}
    for s in sites:
        if s["controller"] != "add":
            raise ProfileError(f"only the add controller exports to a llama.cpp control vector, not {s['controller']}")
        if s.get("positions", "all") != "all":
            raise ProfileError("llama.cpp control vectors steer every position; this site steers only "
                               f"'{s['positions']}'")
        layer = int(s["layer"])
        if layer == 0:
            raise ProfileError("llama.cpp cannot apply a control vector to layer 0 (direction.0 is rejected)")
        vec = vectors[s["vector"]]
        d = (float(s["raw_alpha"]) * vec.vector.float().cpu()).numpy().astype(np.float32)
        dirs[layer] = dirs.get(layer, 0) + d
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", getattr(lm.model.config, "model_type", lm.adapter.arch))
    writer.add_uint32("controlvector.layer_count", len(dirs))
    for layer in sorted(dirs):
        writer.add_tensor(f"direction.{layer}", dirs[layer])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def read_control_vector(path) -> tuple[dict, dict[int, "np.ndarray"]]:  # noqa: F821
    """(metadata, {layer: direction}) of a control-vector GGUF, read with the gguf package."""
    import gguf

    r = gguf.GGUFReader(str(path))
    meta = {}
    for key in ("general.architecture", "controlvector.model_hint", "controlvector.layer_count"):
        f = r.get_field(key)
        if f is not None:
            v = f.parts[f.data[0]]
            meta[key] = bytes(v).decode() if f.types and f.types[0] == gguf.GGUFValueType.STRING else int(v[0])
    return meta, {int(t.name.split(".", 1)[1]): t.data.copy() for t in r.tensors if t.name.startswith("direction.")}


# ---- applying a profile --------------------------------------------------------------------------------
class ProfileHandle:
    """Active steering from a profile; `remove()` (or leaving the `with` block) takes the hooks off."""

    def __init__(self, lm, profile: Profile, family: str | None, scale: float = 1.0):
        # family None: the safe default (unsteered), e.g. a prompt the router calls unknown; no hooks
        self.lm, self.profile, self.family = lm, profile, family
        self.handles = []
        if family is None:
            self.plan = None
            return
        self.plan = profile.plan(family, scale)  # scale != 1: the parity check's strength sweep
        self.vectors = profile.vectors()
        validate_plans(lm, self.vectors, [self.plan])
        ops: dict[tuple[int, str], list] = {}
        for site, alpha in zip(self.plan.sites, self.plan.alphas):
            op = build_op(lm, self.vectors, site, torch.tensor([float(alpha)]), torch.ones(1))
            ops.setdefault(hook_point(site), []).append(op)
        self.handles = install_hooks(lm, ops, Positions(None, auto=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def apply_profile(model, profile, family: str, *, tokenizer=None, prompt: str | None = None) -> ProfileHandle:
    """Steer `model` with the profile's setting for `family`. Use as a context manager, or keep the
    handle and call `.remove()`. `model`: a steeropt LoadedModel, or a transformers model (+ tokenizer).
    family="auto": the profile's router picks the family of `prompt`; an unknown prompt or a family without a
    deployable setting gets no steering (handle.family is None)."""
    prof = load_profile(profile)
    lm = as_loaded(model, tokenizer)
    prof.check_model(lm)
    if family == "auto" and lm.tokenizer is None:
        raise ProfileError("family='auto' needs the model's tokenizer to route the prompt")
    return ProfileHandle(lm, prof, prof.resolve(lm, family, prompt))


def generate(model, profile, family: str, prompts: list[str], *, max_new_tokens: int | None = None,
             tokenizer=None, steer: bool = True) -> list[str]:
    """Generate with the profile's decoding settings for each prompt (chat template applied), steered by
    the family's setting (or unsteered with steer=False, for a side-by-side look). family="auto" routes each
    prompt (unknown: unsteered); `routes(model, profile, prompts)` tells which family each one got."""
    prof = load_profile(profile)
    lm = as_loaded(model, tokenizer)
    if lm.tokenizer is None:
        raise ProfileError("generate needs a tokenizer")
    prof.check_model(lm)
    if family == "auto":
        groups: dict = {}
        for i, p in enumerate(prompts):
            groups.setdefault(prof.resolve(lm, "auto", p), []).append(i)
    else:
        prof.family(family)
        groups = {family: list(range(len(prompts)))}
    dec = prof.decoding()
    if max_new_tokens:
        dec = replace(dec, max_new_tokens=max_new_tokens)
    tok = lm.tokenizer
    texts: list[str] = [""] * len(prompts)
    for fam, idx in groups.items():
        enc = tok([lm.render(prompts[i]) for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(lm.device) for k, v in enc.items()}  # the model may be on a GPU
        ctx = ProfileHandle(lm, prof, fam) if steer else _null()
        with ctx, torch.no_grad():
            out = lm.model.generate(**enc, **dec.generate_kwargs(), pad_token_id=tok.pad_token_id)
        for i, o in zip(idx, out):
            texts[i] = tok.decode(o[enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return texts


def routes(model, profile, prompts: list[str], *, tokenizer=None) -> list[str | None]:
    """The family whose setting applies to each prompt under family="auto" (None: unsteered)."""
    prof = load_profile(profile)
    lm = as_loaded(model, tokenizer)
    prof.check_model(lm)
    return [prof.resolve(lm, "auto", p) for p in prompts]


@contextmanager
def _null():
    yield
