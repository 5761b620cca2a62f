"""Model registry (aliases, cache) and loading (device, dtype)."""

from tunesmith.models.load import LoadedModel, load_model, load_tokenizer, resolve_path
from tunesmith.models.registry import DEFAULT_MODEL, ModelRef, list_models, resolve

__all__ = [
    "DEFAULT_MODEL",
    "LoadedModel",
    "ModelRef",
    "list_models",
    "load_model",
    "load_tokenizer",
    "resolve",
    "resolve_path",
]
