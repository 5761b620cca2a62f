"""LoRA layers on a faster path: one autograd function per adapted linear layer.

peft computes a LoRA layer as `base(x) + lora_B(lora_A(dropout(x))) * scaling`: five separate
operations forward and more backward, each allocating an activation-sized tensor, and the
dropout draws one random number per input element (on a CPU that alone was ~15 % of a LoRA
step on the default model) and keeps a dropped copy of the input alive for the backward pass.

Here the same arithmetic runs as one `torch.autograd.Function`:

  forward   y = x W^T + b;  h = (x * m) A^T;  y += s * h B^T  (one in-place addmm)
  backward  g = s * dy B;   dB = s * dy^T h;  dA = g^T (x * m);  dx = dy W + (g A) * m

where m is the dropout mask scaled by 1 / (1 - p). The mask is drawn 4 elements per 64-bit
random number from torch's own generator (so seeds, checkpointed RNG states and resume stay
deterministic) and kept as booleans; the backward pass recomputes the dropped input from the
layer input (which the layers sharing it keep only once) instead of keeping a dropped copy.
The drop probability is p rounded to a multiple of 1/65536 (0.05 becomes 0.0500031) and the
scale uses that rounded value, so the expectation stays exact.

On CPUs with bf16 matrix units (models/precision.py decides, `install(..., torch.bfloat16)`)
the two products with the frozen base weight W, `x W^T` and `dy W`, run from a bf16 copy of W
(inputs cast to bf16, fp32 accumulation in the kernel, results back to float32): those are
nearly all of a layer's arithmetic, and AMX does them 4-5x faster. The LoRA products, the
gradients of A and B, the dropout and everything outside the layer stay float32; W itself
stays the float32 parameter it was, so eval, inference, saving and merging are unchanged.

Nothing about the adapter changes: the parameters are peft's own `lora_A` / `lora_B`, so
saving, loading and merging are peft's. Layers this path does not cover (DoRA, 4-bit bases,
several active adapters, autocast, mixed dtypes, inference) run peft's code unchanged.
`tests/unit/train/test_fast_lora.py` checks outputs and all gradients against peft's path.

Why a class swap after `get_peft_model` and not peft's custom-module registry: that registry is
experimental, meant for layer types peft does not support, and matches by isinstance, so it
would also capture bitsandbytes' 4-bit layers (subclasses of nn.Linear) that QLoRA needs peft
to dispatch. The swap changes only which `forward` runs; peft still builds, saves and merges.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_LEVELS = 65536


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, device: torch.device
) -> tuple[torch.Tensor, float]:
    """Boolean keep-mask with P(drop) = round(p * 65536) / 65536, and the matching 1/(1-p).

    Draws 64 random bits per 4 elements (torch's generator), so it costs a quarter of the
    random numbers that `bernoulli_` draws."""
    n = 1
    for d in shape:
        n *= int(d)
    threshold = round(p * _LEVELS)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # the full 64-bit range: every bit uniform
    values = words.view(torch.int16)[:n].view(shape)
    keep = values >= threshold - _LEVELS // 2  # int16 values are uniform on [-32768, 32767]
    return keep, _LEVELS / (_LEVELS - threshold)


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        scaling: float,
        p: float,
        weight16: torch.Tensor | None = None,
    ) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        low = weight16 is not None
        y = F.linear(x2, weight, bias) if not low else None
        mask, scale = None, 1.0  # dropout: booleans (1 byte per element), the scale apart
        xd = x2
        if p > 0:
            mask, scale = keep_mask(x2.shape, p, x2.device)
            xd = torch.where(mask, x2, 0.0)
            if not low:  # float32: the order of operations the recorded runs were made with
                xd.mul_(scale)
        h = xd @ lora_a.t()
        if y is not None:
            y.addmm_(h, lora_b.t(), alpha=scaling)
        else:  # bf16 base (fp32 accumulation in the kernel) added to the float32 LoRA part
            if mask is not None:  # the dropout scale on the rank-r product, not the input
                h.mul_(scale)
            y = h @ (lora_b.t() * scaling)
            y.add_(_bf16_product(x2, weight16, transpose=True))  # bf16 read, float32 sum
            if bias is not None:
                y.add_(bias)
            weight = weight16  # what the backward pass multiplies by
        ctx.save_for_backward(x2, weight, lora_a, lora_b, h, mask)
        ctx.scaling, ctx.scale, ctx.lead, ctx.low = scaling, scale, lead, low
        return y.view(*lead, y.shape[-1])

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x2, weight, lora_a, lora_b, h, mask = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.shape[-1])
        g = dy2 @ lora_b
        g.mul_(ctx.scaling)
        d_b = dy2.t() @ h
        d_b.mul_(ctx.scaling)
        if mask is None:
            d_a = g.t() @ x2
        elif ctx.low:  # g is used twice below, both times times the dropout scale
            g.mul_(ctx.scale)
            d_a = g.t() @ torch.where(mask, x2, 0.0)
        else:
            d_a = g.t() @ torch.where(mask, x2, 0.0).mul_(ctx.scale)
        dx = None
        if ctx.needs_input_grad[0]:
            if ctx.low:  # bf16 base: the big product in bf16, added to the float32 LoRA part
                dx = g @ lora_a
                if mask is not None:
                    dx.mul_(mask)
                dx.add_(_bf16_product(dy2, weight, transpose=False))  # float32 sum
            else:
                dx = dy2 @ weight
                if mask is None:
                    dx.addmm_(g, lora_a)
                else:
                    dx.add_(torch.where(mask, g @ lora_a, 0.0), alpha=ctx.scale)
            dx = dx.view(*ctx.lead, dx.shape[-1])
        return dx, None, None, d_a, d_b, None, None, None


# The last input cast to bf16: q/k/v (and gate/up) projections share their input, so it is
# cast once for all of them. Holding the input itself keeps its storage from being reused
# while the entry is alive, so (storage, version, shape) identifies it.
_last_cast: list[Any] = [None]


# bf16 products go through oneDNN, which builds (JIT-compiles) a kernel for every new shape
# and caches it: with packed rows of varying length every step had new row counts, and
# building kernels ate the whole bf16 gain (measured: 6.1 ms per product with a new row count,
# 2.7 ms with a cached one, 6.1 ms in float32). Row counts are therefore padded to a multiple
# of ROW_BUCKET with zero rows, so a run meets a few shapes, each built once.
ROW_BUCKET = 128


def _padded_bf16(t: torch.Tensor) -> torch.Tensor:
    """`t` [rows, k] cast to bf16 into [rows rounded up to ROW_BUCKET, k], zeros below; the
    cast is the one pass the bf16 product needs anyway."""
    rows = t.shape[0]
    padded = -(-rows // ROW_BUCKET) * ROW_BUCKET
    if padded == rows:
        return t.to(torch.bfloat16)
    out = torch.empty(padded, t.shape[1], dtype=torch.bfloat16, device=t.device)
    out[:rows].copy_(t)
    out[rows:].zero_()
    return out


def _bf16_product(t: torch.Tensor, weight16: torch.Tensor, *, transpose: bool) -> torch.Tensor:
    """t @ W^T (transpose) or t @ W with bf16 operands on padded rows; the first rows of it."""
    x16 = _bf16_input(t) if transpose else _padded_bf16(t)
    out = F.linear(x16, weight16) if transpose else x16 @ weight16
    return out[: t.shape[0]]


def _bf16_input(x2: torch.Tensor) -> torch.Tensor:
    held = _last_cast[0]
    key = (x2.data_ptr(), x2._version, tuple(x2.shape), tuple(x2.stride()))
    if held is not None and held[0] == key and held[1].device == x2.device:
        return held[2]
    x16 = _padded_bf16(x2)
    _last_cast[0] = (key, x2.detach(), x16)  # detached: no autograd graph kept alive
    return x16


def _peft_linear_type() -> type | None:
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # pragma: no cover - peft is a dependency
        return None
    return Linear


def _can_fuse(layer: Any) -> bool:
    """What does not change during a run: the layer's adapters are plain LoRA on a plain
    `nn.Linear` (not DoRA or another peft variant, not a 4-bit base, no LoRA bias, standard
    dropout). Only such layers are put on the fast path, so the count `install` reports is
    the number of layers that really run fused."""
    if getattr(layer, "lora_variant", None):
        return False
    if getattr(layer, "fan_in_fan_out", False) or any(getattr(layer, "lora_bias", {}).values()):
        return False
    if type(layer.base_layer) is not nn.Linear:
        return False
    for name in layer.lora_A:
        a, b = layer.lora_A[name], layer.lora_B[name]
        if any(type(m) is not nn.Linear or m.bias is not None for m in (a, b)):
            return False
        dropout = layer.lora_dropout[name]
        if not isinstance(dropout, nn.Identity) and type(dropout) is not nn.Dropout:
            return False
    return True


def _fast_args(layer: Any, x: torch.Tensor) -> tuple | None:
    """The function's arguments when this call can take the fast path, else None."""
    if (
        not (layer.training and torch.is_grad_enabled())
        or layer.disable_adapters
        or layer.merged
        or torch.is_autocast_enabled(x.device.type)
    ):
        return None
    active = layer.active_adapters
    if len(active) != 1:
        return None
    name = active[0]
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return None
    if getattr(layer, "fan_in_fan_out", False) or getattr(layer, "lora_bias", {}).get(name):
        return None
    base = layer.base_layer
    if type(base) is not nn.Linear or base._forward_hooks or base._forward_pre_hooks:
        return None
    weight, bias = base.weight, base.bias
    if weight.requires_grad or (bias is not None and bias.requires_grad):
        return None
    a, b = layer.lora_A[name], layer.lora_B[name]
    if any(type(m) is not nn.Linear or m.bias is not None for m in (a, b)):
        return None
    dropout = layer.lora_dropout[name]
    if isinstance(dropout, nn.Identity):
        p = 0.0
    elif type(dropout) is nn.Dropout:
        p = float(dropout.p)
    else:
        return None
    if round(p * _LEVELS) >= _LEVELS:  # would drop everything: leave it to peft
        return None
    if not (x.dtype == weight.dtype == a.weight.dtype == b.weight.dtype):
        return None
    scaling = float(layer.scaling[name])
    if layer.__dict__.get("_base_dtype") is None or weight.dtype != torch.float32:
        return weight, bias, a.weight, b.weight, scaling, p
    return weight, bias, a.weight, b.weight, scaling, p, _low_precision_copy(layer, weight)


def _low_precision_copy(layer: Any, weight: torch.Tensor) -> torch.Tensor:
    """The frozen base weight in the layer's `_base_dtype`, made once and kept beside the
    float32 weight (not a parameter or buffer: state dicts, saving and merging never see it).
    Made again if the float32 weight changed since (an in-place merge or load)."""
    key = (weight.data_ptr(), weight._version, weight.device)
    held = layer.__dict__.get("_base_copy")
    if held is None or held[0] != key:
        held = (key, weight.detach().to(layer._base_dtype))
        layer.__dict__["_base_copy"] = held
    return held[1]


class _FastLoraMixin:
    """Forward of a peft LoRA `Linear` that takes the fused path when it can."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        fast = None if args or kwargs else _fast_args(self, x)
        if fast is None:
            return super().forward(x, *args, **kwargs)  # type: ignore[misc]
        return _LoraLinear.apply(x, *fast)


_fast_types: dict[type, type] = {}


def install(model: nn.Module, base_dtype: torch.dtype | None = None) -> int:
    """Put every plain peft LoRA linear layer of `model` on the fast path; returns how many.

    Swaps the layer's class for a subclass that only overrides `forward`, so isinstance checks,
    state dicts and peft's save/merge are untouched. `uninstall` swaps back.

    `base_dtype` (torch.bfloat16; models/precision.py decides): the frozen float32 base
    weight's two products (forward, and the gradient towards the input) run from a copy in
    that dtype; the LoRA products, their gradients and everything outside the layer stay
    float32. Costs 2 bytes per frozen weight; inference and eval keep peft's float32 path."""
    linear = _peft_linear_type()
    if linear is None:
        return 0
    count = 0
    for module in model.modules():
        if type(module) is linear and _can_fuse(module):
            module.__dict__["_base_dtype"] = base_dtype
            module.__dict__.pop("_base_copy", None)
            fast = _fast_types.get(linear)
            if fast is None:
                fast = type("FastLoraLinear", (_FastLoraMixin, linear), {})
                _fast_types[linear] = fast
            module.__class__ = fast
            count += 1
    return count


def uninstall(model: nn.Module) -> None:
    originals = {fast: base for base, fast in [*_fast_types.items(), *_frozen_types.items()]}
    for module in model.modules():
        base = originals.get(type(module))
        if base is not None:
            module.__class__ = base
            module.__dict__.pop("_base_dtype", None)
            module.__dict__.pop("_base_copy", None)


class _FrozenLinear(torch.autograd.Function):
    """y = x W^T + b with W frozen and held in bf16: the product forward and the input
    gradient backward in bf16 (fp32 accumulation), results and everything else float32."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight16: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        y = _bf16_product(x2, weight16, transpose=True).float()
        if bias is not None:
            y.add_(bias)
        ctx.save_for_backward(weight16)
        ctx.lead = x.shape[:-1]
        return y.view(*ctx.lead, y.shape[-1])

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (weight16,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        dy2 = dy.reshape(-1, dy.shape[-1])
        dx = _bf16_product(dy2, weight16, transpose=False).float()
        return dx.view(*ctx.lead, dx.shape[-1]), None, None


class _Bf16FrozenLinearMixin:
    """Forward of a frozen `nn.Linear` (the LM head) that runs `_FrozenLinear` while training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias  # type: ignore[attr-defined]
        if (
            torch.is_grad_enabled()
            and x.requires_grad
            and x.dtype == weight.dtype == torch.float32
            and not weight.requires_grad
            and (bias is None or not bias.requires_grad)
            and not torch.is_autocast_enabled(x.device.type)
        ):
            return _FrozenLinear.apply(x, _low_precision_copy(self, weight), bias)
        return super().forward(x)  # type: ignore[misc]


_frozen_types: dict[type, type] = {}


def install_head(model: nn.Module, dtype: torch.dtype | None) -> bool:
    """Run the frozen LM head's products in `dtype` (bf16) while training: on completion
    positions it is one big product (hidden x vocabulary) forward and one backward. The
    loss (log-softmax, cross-entropy) stays float32 on the float32 logits it returns. Only a
    plain frozen nn.Linear head is swapped; returns whether it was."""
    if dtype is None:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_head = getattr(base, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if head is None or type(head) is not nn.Linear or head.weight.requires_grad:
        return False
    fast = _frozen_types.setdefault(
        nn.Linear, type("Bf16FrozenLinear", (_Bf16FrozenLinearMixin, nn.Linear), {})
    )
    head.__dict__["_base_dtype"] = dtype
    head.__dict__.pop("_base_copy", None)
    head.__class__ = fast
    return True
