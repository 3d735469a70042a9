"""Steering profiles: a deployable α per prompt family, written by `steeropt pick` and applied at inference.

A profile is a directory:

    profile.yaml                 model identity, sites, controller, α per family, decoding, measured scores
    vectors/<name>.safetensors   the steering vectors (SteeringVector.save: vector + mean norm + affine map ...)
    <family>.control-vector.gguf llama.cpp control vector (only when every site of that family is `add`)

Apply it to a model (a LoadedModel, or a raw transformers model with its tokenizer):

    >>> import steeropt
    >>> with steeropt.apply_profile(lm, "profiles/quickstart", family="advice"):    # doctest: +SKIP
    ...     out = lm.model.generate(**lm.tokenizer(text, return_tensors="pt"), max_new_tokens=40)

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

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from steeropt.errors import SteeroptError

FORMAT = "steeropt-profile/1"


class ProfileError(SteeroptError):
    """A profile cannot be used: unreadable, for a different model, or without the asked family."""


# ---- model identity --------------------------------------------------------------------------------
def weights_fingerprint(model) -> str:
    """A cheap hash of a model's weights (config sizes + a strided sample of a few tensors, float32).
    Identifies a raw transformers model whose file hash is unknown."""
    import hashlib

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


def _as_loaded(model, tokenizer=None):
    """A LoadedModel from a LoadedModel or a raw transformers model (+ tokenizer)."""
    from steeropt.engine.models import ArchAdapter, LoadedModel

    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        model, tokenizer = model
    if not isinstance(model, torch.nn.Module):
        raise ProfileError(f"apply_profile needs a steeropt LoadedModel or a transformers model, got {type(model).__name__}")
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return LoadedModel(model, tokenizer, name, "", ArchAdapter.for_model(model))


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

    def plan(self, family: str):
        from steeropt.types import InterventionPlan, Site

        fam = self.family(family)
        sites = [Site(int(s["layer"]), s["controller"], s["vector"], tuple(s["heads"]) if s.get("heads") else None,
                      s.get("positions", "all")) for s in fam["sites"]]
        return InterventionPlan(sites, [float(s["alpha"]) for s in fam["sites"]])

    def vectors(self):
        from steeropt.engine.vectors import SteeringVector, VectorSet

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
        from steeropt.engine.generation import Decoding

        return Decoding(**self.data.get("decoding", {}))


def load_profile(path) -> Profile:
    if isinstance(path, Profile):
        return path
    p = Path(path)
    f = p / "profile.yaml" if p.is_dir() else p
    if not f.is_file():
        raise ProfileError(f"no steering profile at {path} (expected a directory with profile.yaml)")
    import yaml

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
                  gguf: bool = True) -> Profile:
    """Write profile.yaml + vectors (+ a llama.cpp GGUF per family whose sites are all `add`).

    families: name -> {"status": "ok"|"no_deployable_setting", "sites": [{layer, controller, vector, heads,
    positions, alpha, raw_alpha}], "selection": {...}, "held_out": {...}, ...}."""
    import yaml

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
    (out / "profile.yaml").write_text(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True))
    return load_profile(out)


def _plain(x):
    return json.loads(json.dumps(x, default=lambda o: None if o != o else (list(o) if isinstance(o, tuple) else str(o))))


def export_control_vector(path, sites: list[dict], vectors, lm) -> Path:
    """llama.cpp control vector for `add` sites: direction.<layer> = raw α · v (float32), layers summed."""
    import gguf
    import numpy as np

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

    def __init__(self, lm, profile: Profile, family: str):
        from steeropt.engine.interventions import _build_op, _Positions, hook_point, install_hooks, validate_plans

        self.lm, self.profile, self.family = lm, profile, family
        self.plan = profile.plan(family)
        self.vectors = profile.vectors()
        validate_plans(lm, self.vectors, [self.plan])
        ops: dict[tuple[int, str], list] = {}
        for site, alpha in zip(self.plan.sites, self.plan.alphas):
            op = _build_op(lm, self.vectors, site, torch.tensor([float(alpha)]), torch.ones(1))
            ops.setdefault(hook_point(site), []).append(op)
        self.handles = install_hooks(lm, ops, _Positions(None, auto=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def apply_profile(model, profile, family: str, *, tokenizer=None) -> ProfileHandle:
    """Steer `model` with the profile's setting for `family`. Use as a context manager, or keep the
    handle and call `.remove()`. `model`: a steeropt LoadedModel, or a transformers model (+ tokenizer)."""
    prof = load_profile(profile)
    lm = _as_loaded(model, tokenizer)
    prof.check_model(lm)
    prof.family(family)
    return ProfileHandle(lm, prof, family)


def generate(model, profile, family: str, prompts: list[str], *, max_new_tokens: int | None = None,
             tokenizer=None, steer: bool = True) -> list[str]:
    """Generate with the profile's decoding settings for each prompt (chat template applied), steered by
    the family's setting (or unsteered with steer=False, for a side-by-side look)."""
    from dataclasses import replace

    prof = load_profile(profile)
    lm = _as_loaded(model, tokenizer)
    if lm.tokenizer is None:
        raise ProfileError("generate needs a tokenizer")
    prof.check_model(lm)
    prof.family(family)
    dec = prof.decoding()
    if max_new_tokens:
        dec = replace(dec, max_new_tokens=max_new_tokens)
    tok = lm.tokenizer
    enc = tok([lm.render(p) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    enc = {k: v.to(lm.device) for k, v in enc.items()}  # the model may be on a GPU
    ctx = apply_profile(lm, prof, family) if steer else _null()
    with ctx, torch.no_grad():
        out = lm.model.generate(**enc, **dec.generate_kwargs(), pad_token_id=tok.pad_token_id)
    return [tok.decode(o[enc["input_ids"].shape[1]:], skip_special_tokens=True) for o in out]


@contextmanager
def _null():
    yield
