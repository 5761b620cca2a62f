"""Inference: chat-template rendering, batched and streaming generation, and the serving engine.

engine.py renders prompts and generates for evaluation and the CLI. The server's engine is
`pool.ModelPool` (models and adapters in memory), `scheduler.Scheduler` (one generation thread
per model, iteration-level batching), `batch.Batch` (the shared KV cache, left padding, per-row
positions), `multi_lora.MultiLora` (rows of different LoRA adapters in one pass),
`adapters.AdapterSet` (adapters of one base on one peft model), `sampling` and `completion`
(per-request sampling, text, stop strings and counts).
"""

from tunesmith.inference.engine import GenerationSettings, generate, prompt_ids, stream

__all__ = ["GenerationSettings", "generate", "prompt_ids", "stream"]
