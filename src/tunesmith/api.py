"""The public Python API. The CLI and the server call only this module.

Functions import their heavy dependencies lazily so `import tunesmith.api` stays cheap.
Each area of the product has its own section below; the implementation lives in its package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# Models and inference
# ---------------------------------------------------------------------------------------------


def list_models() -> list[Any]:
    """Aliases and cached models (`tunesmith models list`)."""
    from tunesmith.models.registry import list_models as _list

    return _list()


def pull_model(name: str, progress: Callable[[str, float], None] | None = None) -> Path:
    """Prepare the local cache for `name` (de-quantise a packaged GGUF once) and return its dir."""
    from tunesmith.models.load import resolve_path

    return resolve_path(name, progress=progress)


def load_model(name: str | Path, *, device: str | None = None, dtype: str | None = None) -> Any:
    """Load model and tokenizer for anything the registry resolves (`LoadedModel`)."""
    from tunesmith.models.load import load_model as _load

    return _load(name, device=device, dtype=dtype)


def generate(
    model: str | Path | Any,
    prompts: str | Sequence[str] | Sequence[Sequence[dict[str, str]]],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    seed: int | None = 0,
    system: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> list[str]:
    """Answer prompts (strings or message lists) through the model's chat template.

    `model` is a name the registry resolves or an already loaded `LoadedModel`.
    """
    from tunesmith.inference import GenerationSettings
    from tunesmith.inference import generate as _generate

    lm = model if hasattr(model, "tokenizer") else load_model(model, device=device, dtype=dtype)
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    conversations = [_as_messages(p, system) for p in items]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return _generate(lm.model, lm.tokenizer, conversations, settings)


def stream_chat(
    loaded: Any,
    messages: Sequence[dict[str, str]],
    *,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Stream the reply to a conversation, piece by piece."""
    from tunesmith.inference import GenerationSettings, stream

    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return stream(loaded.model, loaded.tokenizer, messages, settings)


def _as_messages(prompt: Any, system: str | None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and not (messages and messages[0].get("role") == "system"):
        messages.insert(0, {"role": "system", "content": system})
    return messages


# ---------------------------------------------------------------------------------------------
# Data (tunesmith.data)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Training (tunesmith.train, tunesmith.config)
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Evaluation (tunesmith.eval) and the demo
# ---------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------
# Export (tunesmith.export)
# ---------------------------------------------------------------------------------------------
