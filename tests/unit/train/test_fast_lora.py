"""The fused LoRA path computes what peft computes: outputs and every gradient, with and
without dropout; layers it does not cover fall back to peft; the dropout mask is a fair coin
with the configured rate and follows torch's seed."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from tunesmith.train import fast_lora


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(24, 16, bias=True)
        self.up_proj = nn.Linear(16, 40, bias=False)
        self.down_proj = nn.Linear(40, 24, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(torch.nn.functional.silu(self.up_proj(self.q_proj(x))))


def _pair(dropout: float = 0.0, use_dora: bool = False) -> tuple[nn.Module, nn.Module]:
    """Two identical peft models with non-zero B (peft starts B at zero); the second is fused."""
    torch.manual_seed(0)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=dropout,
        target_modules=["q_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
        use_dora=use_dora,
    )
    reference = get_peft_model(_Block(), config)
    reference.train()
    fused = copy.deepcopy(reference)
    return reference, fused


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), {"x": x.grad.clone(), **grads}


def _assert_same(a: tuple, b: tuple, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a[0], b[0], atol=tol, rtol=tol)
    assert a[1].keys() == b[1].keys() and len(a[1]) == 7  # x + A and B of three layers
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], atol=tol, rtol=tol, msg=name)


def _count_fused_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = fast_lora._LoraLinear.apply
    monkeypatch.setattr(fast_lora._LoraLinear, "apply", lambda *a: calls.append(1) or real(*a))
    return calls


# The bf16 base path rounds the layer input, the base weight and the base product to bf16
# (8 significant bits): outputs and gradients then agree with float32 peft to about 1 %.
BASE_DTYPES = [(None, 1e-5), (torch.bfloat16, 3e-2)]


@pytest.mark.parametrize(("base_dtype", "tol"), BASE_DTYPES)
def test_fused_matches_peft_without_dropout(monkeypatch, base_dtype, tol):
    reference, fused = _pair()
    assert fast_lora.install(fused, base_dtype) == 3
    calls = _count_fused_calls(monkeypatch)
    x = torch.randn(2, 7, 24)
    ref, got = _grads(reference, x), _grads(fused, x)
    _assert_same(ref, got, tol=tol)
    assert len(calls) == 3
    assert torch.equal(ref[0], got[0]) is (base_dtype is None)  # bf16 did run


@pytest.mark.parametrize(("base_dtype", "tol"), BASE_DTYPES)
def test_fused_matches_peft_with_the_same_dropout_mask(monkeypatch, base_dtype, tol):
    """Dropout on: the fused path drops with its mask; peft is given the very same mask."""
    p = 0.3
    reference, fused = _pair(dropout=p)
    fast_lora.install(fused, base_dtype)
    masks: dict[int, list[torch.Tensor]] = {}
    real_keep_mask = fast_lora.keep_mask

    def recording_keep_mask(shape, prob, device):
        keep, scale = real_keep_mask(shape, prob, device)
        masks.setdefault(shape[-1], []).append(keep)
        return keep, scale

    monkeypatch.setattr(fast_lora, "keep_mask", recording_keep_mask)
    x = torch.randn(3, 5, 24)
    got = _grads(fused, x)
    assert sorted(masks) == [16, 24, 40]  # one mask per layer, shaped like its input
    scale = 65536 / (65536 - round(p * 65536))

    class SameMask(nn.Module):
        def __init__(self, keep: torch.Tensor):
            super().__init__()
            self.keep = keep

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t * self.keep.view(t.shape) * scale

    for module in reference.modules():
        if hasattr(module, "lora_dropout"):
            width = module.base_layer.in_features
            module.lora_dropout["default"] = SameMask(masks[width][0])
    _assert_same(_grads(reference, x), got, tol=tol)
    assert not torch.equal(got[1]["x"], _grads(_pair()[0], x)[1]["x"])  # dropout did act


def test_inference_and_eval_take_peft_path_and_agree(monkeypatch):
    reference, fused = _pair(dropout=0.5)
    fast_lora.install(fused)
    calls = _count_fused_calls(monkeypatch)
    reference.eval(), fused.eval()
    x = torch.randn(4, 24)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), reference(x))
    assert calls == []


def test_dora_layers_fall_back_to_peft(monkeypatch):
    reference, fused = _pair(use_dora=True)
    # issue 11 item 18: DoRA layers are not counted (nor swapped) as fused: the log line
    # "N layers run as one fused autograd function" must not appear for a DoRA run
    assert fast_lora.install(fused) == 0
    assert not any(type(m).__name__ == "FastLoraLinear" for m in fused.modules())
    calls = _count_fused_calls(monkeypatch)
    x = torch.randn(2, 3, 24)
    ref, got = _grads(reference, x), _grads(fused, x)
    assert calls == []
    torch.testing.assert_close(got[0], ref[0])


def test_install_keeps_state_dict_and_uninstall_restores_class():
    _, fused = _pair()
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    fast_lora.install(fused)
    layer = fused.base_model.model.q_proj
    assert type(layer).__name__ == "FastLoraLinear"
    from peft.tuners.lora.layer import Linear

    assert isinstance(layer, Linear)
    assert fused.state_dict().keys() == before.keys()
    fast_lora.uninstall(fused)
    assert type(layer) is Linear


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_keep_mask_rate_scale_and_seed(p):
    torch.manual_seed(3)
    keep, scale = fast_lora.keep_mask((1000, 1001), p, torch.device("cpu"))
    assert keep.dtype == torch.bool and keep.shape == (1000, 1001)
    rate = 1 - keep.float().mean().item()
    assert abs(rate - p) < 5 * (p * (1 - p) / keep.numel()) ** 0.5 + 1 / 65536
    expected_p = round(p * 65536) / 65536
    assert scale == pytest.approx(1 / (1 - expected_p))
    # Rows and columns are not correlated: each row drops at about the same rate.
    per_row = 1 - keep.float().mean(dim=1)
    assert per_row.std().item() < 3 * (p * (1 - p) / 1001) ** 0.5
    torch.manual_seed(3)
    again, _ = fast_lora.keep_mask((1000, 1001), p, torch.device("cpu"))
    assert torch.equal(keep, again)
    other, _ = fast_lora.keep_mask((1000, 1001), p, torch.device("cpu"))
    assert not torch.equal(keep, other)


def test_bf16_base_product_is_the_bf16_rounded_float32_one():
    """What the bf16 path computes, exactly: the base product from bf16 input and weight,
    rounded to bf16 once; the LoRA part in float32 on top."""
    torch.manual_seed(1)
    _, fused = _pair()
    fast_lora.install(fused, torch.bfloat16)
    layer = fused.base_model.model.q_proj
    x = torch.randn(5, 24)
    got = layer(x)
    base = layer.base_layer
    expected = (x.bfloat16() @ base.weight.bfloat16().t()).float() + base.bias
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = expected + (x @ a.t()) @ b.t() * layer.scaling["default"]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_bf16_base_keeps_float32_master_weights_and_optimizer_state():
    _, fused = _pair(dropout=0.1)
    fast_lora.install(fused, torch.bfloat16)
    frozen = {n: p.detach().clone() for n, p in fused.named_parameters() if not p.requires_grad}
    keys = {k: v.dtype for k, v in fused.state_dict().items()}
    trainable = [p for p in fused.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    start = [p.detach().clone() for p in trainable]
    for _ in range(2):
        _grads(fused, torch.randn(3, 4, 24))
        assert all(p.grad.dtype == torch.float32 for p in trainable)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    assert all(p.dtype == torch.float32 for p in fused.parameters())
    assert all(not torch.equal(p, s) for p, s in zip(trainable, start, strict=True))  # trained
    for state in optimizer.state.values():
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    for name, p in fused.named_parameters():  # the base: untouched, still float32
        if name in frozen:
            assert torch.equal(p, frozen[name]) and p.dtype == torch.float32
    # the bf16 copies are no parameters or buffers: state dict and saving see float32 only
    assert {k: v.dtype for k, v in fused.state_dict().items()} == keys
    assert all(b.dtype != torch.bfloat16 for b in fused.buffers())


def test_bf16_copy_follows_a_changed_base_weight_and_uninstall_drops_it():
    _, fused = _pair()
    fast_lora.install(fused, torch.bfloat16)
    layer = fused.base_model.model.up_proj
    x = torch.randn(2, 16)
    before = layer(x)
    with torch.no_grad():
        layer.base_layer.weight.mul_(2.0)  # e.g. an adapter folded into the base in place
    after = layer(x)
    assert not torch.allclose(before, after)
    copy_ = layer.__dict__["_base_copy"][1]
    assert copy_.dtype == torch.bfloat16
    torch.testing.assert_close(copy_.float(), layer.base_layer.weight, atol=0.05, rtol=1e-2)
    fast_lora.uninstall(fused)
    assert "_base_copy" not in layer.__dict__ and "_base_dtype" not in layer.__dict__


class _WithHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(24, 50, bias=False)
        self.head.weight.requires_grad_(False)

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def test_bf16_head_while_training_float32_otherwise():
    torch.manual_seed(2)
    model = _WithHead()
    reference = copy.deepcopy(model)
    assert not fast_lora.install_head(model, None)
    assert fast_lora.install_head(model, torch.bfloat16)
    assert type(model.head).__name__ == "Bf16FrozenLinear"
    x = torch.randn(6, 24, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    got, want = model.head(x), reference.head(x_ref)
    assert got.dtype == torch.float32 and not torch.equal(got, want)  # bf16 products ran
    torch.testing.assert_close(got, want, atol=3e-2, rtol=3e-2)
    weights = torch.linspace(-1, 1, 50)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=3e-2, rtol=3e-2)
    assert model.head.weight.grad is None and model.head.weight.dtype == torch.float32
    with torch.no_grad():  # validation, generation: float32, exactly
        assert torch.equal(model.head(x), reference.head(x))
    fast_lora.uninstall(model)
    assert type(model.head) is nn.Linear and "_base_copy" not in model.head.__dict__
