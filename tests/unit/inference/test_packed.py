"""int8 serving weights (inference/packed.py): close to float32, LoRA adapters and mixed batches
on top unchanged, float32 one setting away, `auto` decided by a measurement."""

from __future__ import annotations

import queue

import pytest
import torch
from torch import nn

from tunesmith.inference import GenerationSettings
from tunesmith.inference import packed as packed_mod
from tunesmith.inference.completion import Completion
from tunesmith.inference.packed import PackedLinear, choose, pack_linears, quantize
from tunesmith.inference.pool import ModelPool
from tunesmith.inference.scheduler import results

GREEDY = GenerationSettings(max_new_tokens=8, temperature=0.0)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 37])  # both paths, and the border between them
def test_packed_linear_is_close_to_float32_on_both_paths(rows: int) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(128, 96, bias=True)
    x = torch.randn(2, rows, 128)
    want = linear(x)
    got = PackedLinear(linear)(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert _relative(got, want) < 0.02


def test_the_two_paths_agree_with_each_other() -> None:
    torch.manual_seed(1)
    layer = PackedLinear(nn.Linear(256, 64, bias=False))
    x = torch.randn(8, 256)
    few = torch.cat([layer(x[i : i + 2]) for i in range(0, 8, 2)])  # int8 kernel
    many = layer(x)  # bf16 product of the same int8 values
    assert _relative(few, many) < 0.01


def test_quantize_round_trips_within_half_a_step() -> None:
    torch.manual_seed(2)
    w = torch.randn(32, 64) * torch.linspace(0.01, 3, 32)[:, None]  # rows of different scale
    values, scale = quantize(w)
    assert values.dtype == torch.int8 and int(values.abs().max()) == 127
    assert torch.all((values.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-6)


def test_pack_linears_replaces_aligned_layers_and_keeps_tied_embeddings(tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.eval()
    odd = nn.Linear(20, 32)  # an input width the int8 kernel does not handle: left alone
    model.model.extra = odd
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    ids = torch.tensor([[5, 9, 14, 3, 7, 1]])
    with torch.inference_mode():
        want = model(input_ids=ids).logits
    count = pack_linears(model)
    assert count == len(linears) - 1 and model.model.extra is odd
    assert all(type(m) is not nn.Linear for m in model.modules() if m is not odd)
    head = model.get_output_embeddings()
    if model.config.tie_word_embeddings:
        assert head.weight is model.get_input_embeddings().weight
    else:
        assert head.weight is None
    with torch.inference_mode():
        got = model(input_ids=ids).logits
    assert _relative(got, want) < 0.05
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.8


def test_choose_follows_the_setting_and_the_measurement(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose("float32", cpu) is False
    assert choose("int8", cpu) is True
    assert choose("int8", cuda) is False and choose("auto", cuda) is False  # bf16 there
    for faster in (True, False):
        monkeypatch.setattr(packed_mod, "int8_is_faster", lambda faster=faster: faster)
        assert choose("auto", cpu) is faster


def test_the_probe_compares_the_two_kernels(monkeypatch) -> None:
    calls = []
    real = torch._weight_int8pack_mm

    def slow(*args):
        calls.append(1)
        import time

        time.sleep(0.002)  # far slower than a 1-row float32 product of this size
        return real(*args)

    packed_mod.int8_is_faster.cache_clear()
    monkeypatch.setattr(torch, "_weight_int8pack_mm", slow)
    try:
        assert packed_mod.int8_is_faster(width=64, repeats=2) is False and calls
    finally:
        packed_mod.int8_is_faster.cache_clear()


def test_a_packed_pool_serves_adapters_batched_like_one_at_a_time(
    tiny_model_dir, adapter_dirs, prompts
) -> None:
    pool = ModelPool(2, wait_ms=20, precision="int8")
    try:
        targets = [str(tiny_model_dir), *map(str, adapter_dirs[:2])]
        served = {t: pool.get(t) for t in targets}
        model = served[str(tiny_model_dir)].model
        assert any(isinstance(m, PackedLinear) for m in model.loaded.model.modules())
        assert model.adapters.mixed is not None and model.adapters.mixed.active  # fused LoRA
        alone = {(t, k): served[t].complete(ids, GREEDY) for t in targets for k, ids in
                 enumerate(prompts)}  # fmt: skip
        sink: queue.Queue = queue.Queue()
        with model.lock:
            for t in targets:
                for k, ids in enumerate(prompts):
                    served[t].submit(ids, GREEDY, sink=sink, tag=(t, k))
        together = {tag: c for tag, c in results(sink, len(alone)) if isinstance(c, Completion)}
        same = sum(together[k].text == alone[k].text for k in alone)
        assert same >= len(alone) - 1  # rounding may flip one near-tie, never the batch's rule
        assert len({alone[(t, 1)].text for t in targets}) == len(targets)  # adapters applied
    finally:
        pool.close()
