"""Inference engine: chat-template rendering, batched and streaming generation."""

from tunesmith.inference.engine import GenerationSettings, generate, prompt_ids, stream

__all__ = ["GenerationSettings", "generate", "prompt_ids", "stream"]
