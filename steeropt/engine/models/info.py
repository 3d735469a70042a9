"""Read a model's shape without loading its weights (for `steeropt validate`)."""
from __future__ import annotations

import json
from dataclasses import dataclass

from steeropt.errors import ModelError
from steeropt.engine.models.adapters import SUPPORTED_ARCHS
from steeropt.engine.models.loading import EMBEDDED_NAME, resolve_source


@dataclass(frozen=True)
class ModelInfo:
    name: str
    arch: str
    n_layers: int
    d_model: int
    n_heads: int
    head_dim: int


_DESCRIBED: dict[tuple, ModelInfo] = {}


def describe(ref: str = EMBEDDED_NAME) -> ModelInfo:
    """Shape of a model from its config.json or GGUF metadata (memoised per file and mtime)."""
    kind, path = resolve_source(ref)
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _DESCRIBED:
        _DESCRIBED[key] = _describe(ref, kind, path)
    return _DESCRIBED[key]


def _describe(ref: str, kind: str, path) -> ModelInfo:
    if kind == "hf":
        cfg = json.loads((path / "config.json").read_text())
        arch = cfg.get("model_type", "?")
        n_heads = cfg["num_attention_heads"]
        d_model = cfg["hidden_size"]
        info = ModelInfo(path.name, arch, cfg["num_hidden_layers"], d_model, n_heads,
                         cfg.get("head_dim") or d_model // n_heads)
    else:
        from gguf import GGUFReader

        try:
            reader = GGUFReader(str(path))
            arch = _field(reader, "general.architecture")
            n_heads = int(_field(reader, f"{arch}.attention.head_count"))
            d_model = int(_field(reader, f"{arch}.embedding_length"))
            n_layers = int(_field(reader, f"{arch}.block_count"))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot read GGUF model file {path}: {type(exc).__name__}: {exc}") from exc
        name = EMBEDDED_NAME if ref == EMBEDDED_NAME else path.name
        info = ModelInfo(name, arch, n_layers, d_model, n_heads, d_model // n_heads)
    if info.arch not in SUPPORTED_ARCHS:
        raise ModelError(f"unsupported architecture '{info.arch}' in {path}; supported: {', '.join(SUPPORTED_ARCHS)}")
    return info


def _field(reader, key: str):
    f = reader.fields.get(key)
    if f is None:
        raise ModelError(f"GGUF metadata key '{key}' missing")
    value = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(value).decode()
    return value[0]
