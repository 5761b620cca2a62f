"""The models' side of an evaluation: load each model once, let it answer, count its tokens.

Kept apart from the statistics so `compare.py` (the verdict) and `prompt_cost.py` (a second
setup of the same models) share one way of loading and generating: greedy, seeded, batched,
through each model's own chat template, with progress reported as events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tunesmith.events import Reporter

Messages = Sequence[dict[str, Any]]


def default_max_new_tokens(tokenizer: Any, references: Sequence[str], cap: int = 512) -> int:
    """Room for answers a bit longer than the longest reference, never unbounded: an answer
    25 % + 16 tokens longer than every reference is wrong anyway, and rambling base models
    would otherwise dominate evaluation time."""
    longest = max(
        (len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=64
    )
    return min(cap, int(longest * 1.25) + 16)


def load_for_eval(model: Any, on_event: Reporter | None = None) -> Any:
    """A `LoadedModel` for a name/path, or `model` itself when it already is one."""
    if hasattr(model, "tokenizer") and hasattr(model, "model"):
        return model
    import torch

    from tunesmith.models import load_model

    loaded = load_model(model, on_event=on_event)
    # An unmerged LoRA adds two small matmuls to every adapted layer at every decoding step;
    # merging our own private copy once makes evaluation as fast as the base model, and the
    # merged weights compute the same function (float32).
    if hasattr(loaded.model, "merge_and_unload") and loaded.dtype == torch.float32:
        loaded.model = loaded.model.merge_and_unload()
        loaded.model.eval()
    return loaded


def label(model: Any) -> str:
    """How a model is named in the report."""
    if hasattr(model, "ref"):
        return str(getattr(model.ref, "name", None) or model.path)
    return str(model)


def answer(
    lm: Any,
    prompts: Sequence[Messages],
    *,
    max_new_tokens: int,
    seed: int,
    batch_size: int,
    on_event: Reporter | None,
    phase: str,
    text: str,
) -> list[str]:
    """Greedy answers to every prompt; `progress(phase, done, len(prompts), text)` events."""
    from tunesmith.inference import GenerationSettings, generate

    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, temperature=0.0, seed=seed, batch_size=batch_size
    )
    convs = [list(p) for p in prompts]
    return generate(
        lm.model, lm.tokenizer, convs, settings, on_event=on_event, phase=phase, text=text
    )


def prompt_tokens(lm: Any, prompts: Sequence[Messages]) -> float:
    """Mean prompt length in tokens, as the model is fed it (chat template + generation prompt)."""
    from tunesmith.inference import prompt_ids

    return float(np.mean([len(prompt_ids(lm.tokenizer, list(p))) for p in prompts]))


def output_tokens(lm: Any, outputs: Sequence[str]) -> float:
    """Mean answer length in tokens, counting the end-of-turn token the model also produced."""
    return float(
        np.mean([len(lm.tokenizer(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs])
    )
