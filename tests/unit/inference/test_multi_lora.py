"""The fused mixed-adapter path gives peft's mixed-batch logits, reuses its weight sets, and
leaves layers it does not cover to peft."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from tunesmith.inference.adapters import AdapterSet
from tunesmith.inference.batch import BASE, Batch
from tunesmith.inference.multi_lora import MultiLora, covered


@pytest.fixture
def served(tiny_model_dir: Path, adapter_dirs: list[Path]):
    """A base with three adapters, fused path on."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    s = AdapterSet(base, lock=threading.Lock(), fused=True)
    names = [s.acquire(d) for d in adapter_dirs]
    return s, names


def logits(model, mixed, prompts, names, steps=3):
    with torch.inference_mode():
        b = Batch(model)
        out = [b.prefill(model, prompts, names, mixed)]
        out += [b.step(model, [7 + k] * len(names), mixed) for k in range(steps)]
    return out


def test_fused_rows_match_peft_mixed_batches(served, prompts) -> None:
    s, (a, b, c) = served
    assert s.mixed is not None and s.mixed.active
    rows = [a, BASE, b, c, a]
    ids = [prompts[i % len(prompts)] for i in range(len(rows))]
    fused = logits(s.model, s.mixed, ids, rows)
    s.mixed.use(False)  # peft's own path: its LoRA layers back on, adapter_names per row
    reference = logits(s.model, None, ids, rows)
    for f, r in zip(fused, reference, strict=True):
        assert torch.allclose(f, r, atol=1e-5, rtol=1e-4)
        assert torch.equal(f.argmax(-1), r.argmax(-1))
    with torch.inference_mode():  # and the adapters do something
        plain = Batch(s.model).prefill(s.model, ids, [BASE] * len(rows))
    assert not torch.allclose(plain[0], reference[0][0], atol=1e-3)


def test_one_adapter_alone_needs_no_copy_and_no_mask(served, prompts) -> None:
    s, (a, _, _) = served
    mixed = s.mixed
    mixed.prepare([a, a])
    layout, masks = mixed._plan
    assert set(masks.values()) == {None}
    layer = next(iter(layout.entries))
    assert layout.entries[layer][0].data_ptr() == layer.lora_A[a].weight.data_ptr()
    mixed.prepare([a, BASE])  # a base row next to it: now it is masked out
    assert all(m is not None for m in mixed._plan[1].values())
    mixed.prepare([BASE])
    assert mixed._plan is None


def test_weight_sets_are_reused_while_they_cover_the_batch(served) -> None:
    s, (a, b, c) = served
    mixed = s.mixed
    mixed.prepare([a, b, c])
    full = mixed._plan[0]
    mixed.prepare([a, c, BASE])  # two of three left: the same concatenated weights, masked
    assert mixed._plan[0] is full
    mixed.prepare([b, c])
    assert mixed._plan[0] is full
    s.release(a)
    s.drop(s.loaded()[0])  # an adapter leaves: weight sets are rebuilt from peft's layers
    assert a not in s.model.peft_config
    mixed.prepare([b, c])
    assert mixed._plan[0] is not full and mixed._plan[0].names == tuple(sorted((b, c)))


def test_dora_and_embedding_adapters_stay_with_peft(tiny_model_dir: Path, dora_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    dora = PeftModel.from_pretrained(base, str(dora_dir))
    assert not covered(dora)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    embed = get_peft_model(base, LoraConfig(r=2, target_modules=["embed_tokens", "q_proj"]))
    assert not covered(embed)
    mixed = MultiLora(embed.eval())
    assert not mixed.active
    assert all(not layer.disable_adapters for layer in mixed._layers)  # peft computes them
