"""Linear layers stored as int8 for serving on a CPU: decoding reads a quarter of the bytes.

Why: a decoding step multiplies one row (or a few) by every weight matrix, so on a CPU it is
bound by memory bandwidth, not arithmetic: measured on this 2-core box with the default model,
matrix products were 80 % of a float32 step, and one step reads all 540 MB of float32 weights.
llama.cpp gets its speed from 8-bit weights; this is the same idea inside our engine, so LoRA
adapters, mixed-adapter batches and streaming keep working unchanged.

`PackedLinear` keeps each frozen base layer as int8 values with one scale per output row
(symmetric, scale = max |w| / 127), and two ways to multiply:
- up to `FEW_ROWS` rows (decoding): torch's weight-only int8 kernel (`_weight_int8pack_mm`,
  bf16 activations), which reads the int8 weights directly;
- more rows (prefill, big batches): the same int8 values as a bf16 matrix (exact: |q| <= 127
  fits bf16's 8-bit mantissa) through the bf16 matrix units, then the row scales.
Both compute x · q · scale from the same numbers, so a row's result does not depend on which
path its batch took beyond rounding. Memory: 1 + 2 bytes per weight instead of 4.
The results are not bit-identical to float32 (8-bit weights, bf16 activations into the
products); `bench/serve_throughput.py` measures the agreement (next-token top-1 agreement and
held-out perplexity against float32, and greedy answers) beside llama.cpp's q8_0. Float32
stays one setting away (`TUNESMITH_SERVE_PRECISION=float32`), and `auto` packs only where the
kernel is measured clearly faster than float32 on this machine (`int8_is_faster`).

The kernel crashes (segfault) on some shapes whose input width is not a multiple of 32, so a
layer is packed only when `in_features % 32 == 0`; others stay as they are.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Literal

Precision = Literal["auto", "float32", "int8"]
FEW_ROWS = 4  # up to this many rows the int8 kernel wins (measured: bf16 from 16 rows on)
ALIGN = 32  # input widths the int8 kernel handles safely
FASTER_BY = 1.5  # `auto` packs when the int8 kernel is at least this much faster


def _linear_class() -> type:
    from torch import nn

    return nn.Linear


def packable(module: Any) -> bool:
    """A plain float nn.Linear on the CPU whose input width the int8 kernel handles."""
    from torch import nn

    weight = getattr(module, "weight", None)
    return (
        type(module) is nn.Linear
        and weight is not None
        and weight.device.type == "cpu"
        and weight.dtype.is_floating_point
        and module.in_features % ALIGN == 0
    )


def quantize(weight: Any) -> tuple[Any, Any]:
    """(int8 values [out, in], float32 scale per output row) with weight ~ values * scale."""
    import torch

    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127.0
    values = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return values, scale


class PackedLinear(_linear_class()):  # type: ignore[misc]
    """A frozen nn.Linear as int8 values + row scales (see the module docstring). A subclass of
    nn.Linear, so peft wraps it with LoRA layers like any linear layer; `weight` is dropped (or,
    for an output layer tied to the embeddings, left pointing at the embedding's tensor)."""

    def __init__(self, linear: Any):
        import torch
        from torch import nn

        nn.Module.__init__(self)
        self.in_features = int(linear.in_features)
        self.out_features = int(linear.out_features)
        values, scale = quantize(linear.weight)
        self.register_buffer("qweight", values)
        self.register_buffer("scales", scale.to(torch.bfloat16))
        self.register_buffer("dense", values.to(torch.bfloat16))
        self.bias = linear.bias
        self.weight = None

    def forward(self, x: Any) -> Any:
        import torch
        import torch.nn.functional as F

        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if flat.shape[0] <= FEW_ROWS:
            y = torch._weight_int8pack_mm(flat.contiguous(), self.qweight, self.scales)
        else:
            y = F.linear(flat, self.dense) * self.scales
        y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def pack_linears(model: Any) -> int:
    """Replace every packable nn.Linear of `model` (before adapters are loaded on it) by a
    `PackedLinear`; returns how many were replaced. A layer shared by two parents (tied
    modules) is packed once and stays shared."""
    packed: dict[int, Any] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in packed:
                setattr(parent, name, packed[id(child)])
            elif packable(child):
                tied = _tied_to_input(model, child)
                new = PackedLinear(child)
                if tied is not None:  # keep the attribute peft and transformers look for
                    new.weight = tied
                packed[id(child)] = new
                setattr(parent, name, new)
    return len(packed)


def _tied_to_input(model: Any, layer: Any) -> Any:
    get_input = getattr(model, "get_input_embeddings", None)
    embeddings = get_input() if callable(get_input) else None
    weight = getattr(embeddings, "weight", None)
    return weight if weight is not None and weight is layer.weight else None


@functools.cache
def int8_is_faster(width: int = 1024, repeats: int = 20) -> bool:
    """Whether the int8 kernel beats float32 on one decoding row of a width x 4*width layer
    here (a few milliseconds, once per process). False where the kernel or bf16 is missing."""
    import torch
    import torch.nn.functional as F

    try:
        weight = torch.randn(4 * width, width)
        x = torch.randn(1, width)
        values, scale = quantize(weight)
        scale16, x16 = scale.to(torch.bfloat16), x.to(torch.bfloat16)

        def timed(fn: Any) -> float:
            fn()
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                for _ in range(repeats):
                    fn()
                best = min(best, time.perf_counter() - start)
            return best

        fp32 = timed(lambda: F.linear(x, weight))
        int8 = timed(lambda: torch._weight_int8pack_mm(x16, values, scale16))
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return int8 * FASTER_BY <= fp32


def choose(precision: Precision, device: Any) -> bool:
    """Whether to pack a model served on `device` with the operator's `precision`."""
    if precision == "float32" or getattr(device, "type", str(device)) != "cpu":
        return False
    if precision == "int8":
        return True
    return int8_is_faster()
