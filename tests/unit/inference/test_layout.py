"""Transposed weight storage changes the memory layout only: same shapes, same outputs, tied
weights still tied."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.inference.batch import BASE, Batch
from tunesmith.inference.layout import transpose_linear_storage


def test_outputs_and_ties_survive_the_new_layout(tiny_model_dir: Path, prompts) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.inference_mode():
        before = Batch(model).prefill(model, prompts, [BASE] * len(prompts))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    changed = transpose_linear_storage(model)
    assert changed == linears  # lm_head counts once: the embeddings are not a linear layer
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.stride() == (1, model.lm_head.weight.shape[0])
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    with torch.inference_mode():
        after = Batch(model).prefill(model, prompts, [BASE] * len(prompts))
    assert torch.allclose(before, after, atol=1e-5)
    assert transpose_linear_storage(model) == 0  # already done
