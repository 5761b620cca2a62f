"""Per-example attention for packed rows gives the stock numbers (loss and gradients)."""

from __future__ import annotations

import torch

from tunesmith.train.attention import NAME, restore_stock_attention, use_packed_attention
from tunesmith.train.objectives.sft import SFTLoss


def test_packed_attention_matches_stock_sdpa(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    stock = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    packed = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    assert use_packed_attention(packed)
    assert packed.config._attn_implementation == NAME
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 600, (2, 40), generator=g)
    # row 0: three examples; row 1: two examples then padding with continuing positions
    pos = torch.tensor([[*range(12), *range(20), *range(8)], [*range(25), *range(15)]])
    labels = ids.clone()
    labels[0, [12, 32]] = -100
    labels[1, 25] = -100
    a, na, _ = SFTLoss(stock)(ids, pos, labels).values()
    b, nb, _ = SFTLoss(packed)(ids, pos, labels).values()
    a.backward()
    b.backward()
    assert int(na) == int(nb)
    assert torch.allclose(a, b, rtol=1e-5)
    for (name, p), q in zip(stock.named_parameters(), packed.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5), name
    # generation with a KV cache still works (falls back to stock SDPA) and matches
    prompt = ids[:1, :10]
    with torch.no_grad():
        out_packed = packed.generate(prompt, max_new_tokens=5, do_sample=False)
        out_stock = stock.generate(prompt, max_new_tokens=5, do_sample=False)
    assert torch.equal(out_packed, out_stock)
    restore_stock_attention(packed)
    assert packed.config._attn_implementation == "sdpa"
