"""Model loading and architecture adapters."""
from steeropt.engine.models.adapters import SUPPORTED_ARCHS, ArchAdapter
from steeropt.engine.models.info import ModelInfo, describe
from steeropt.engine.models.loading import (EMBEDDED_NAME, LoadedModel, as_loaded, cache_dir, embedded_gguf_path,
                                            load_model)

__all__ = ["ArchAdapter", "SUPPORTED_ARCHS", "ModelInfo", "describe", "EMBEDDED_NAME", "LoadedModel", "as_loaded",
           "cache_dir", "embedded_gguf_path", "load_model"]
