"""GGUF tensor layout: names, the rotary row order llama.cpp expects, quantisation fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.export.common import ExportError
from tunesmith.export.gguf import (
    encode_tensor,
    gguf_tensor_name,
    interleave_rotary_rows,
    llama_shape,
    plan_tensors,
)


def _rope_half(x: np.ndarray, pos: int, base: float = 10000.0) -> np.ndarray:
    """Hugging Face Llama: rotate the two halves of each head (x[j] with x[j + d/2])."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2) / d)
    ang = np.concatenate([pos * inv, pos * inv])
    rotated = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return x * np.cos(ang) + rotated * np.sin(ang)


def _rope_pairs(x: np.ndarray, pos: int, base: float = 10000.0) -> np.ndarray:
    """llama.cpp (LLAMA_ROPE_TYPE_NORM): rotate adjacent pairs (x[2i], x[2i + 1])."""
    d = x.shape[-1]
    ang = pos * base ** (-np.arange(0, d, 2) / d)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
    out[..., 1::2] = a * np.sin(ang) + b * np.cos(ang)
    return out


def test_interleaved_rows_give_the_same_attention_scores_under_llama_cpp_rope() -> None:
    rng = np.random.default_rng(0)
    heads, head_dim, hidden = 3, 8, 10
    wq = rng.normal(size=(heads * head_dim, hidden))
    wk = rng.normal(size=(heads * head_dim, hidden))
    x1, x2 = rng.normal(size=hidden), rng.normal(size=hidden)

    def scores(q_w: np.ndarray, k_w: np.ndarray, rope) -> np.ndarray:
        q = rope((q_w @ x1).reshape(heads, head_dim), 5)
        k = rope((k_w @ x2).reshape(heads, head_dim), 2)
        return (q * k).sum(-1)

    hf = scores(wq, wk, _rope_half)
    converted = scores(
        interleave_rotary_rows(wq, heads), interleave_rotary_rows(wk, heads), _rope_pairs
    )
    np.testing.assert_allclose(converted, hf, rtol=1e-10, atol=1e-10)
    # Without the reordering llama.cpp would compute different scores: the test can fail.
    assert not np.allclose(scores(wq, wk, _rope_pairs), hf, atol=1e-3)


def test_interleave_is_a_per_head_permutation() -> None:
    w = np.arange(8)[:, None] * np.ones((1, 2))
    assert interleave_rotary_rows(w, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(ExportError):
        interleave_rotary_rows(np.zeros((6, 2)), 4)


@pytest.mark.parametrize(
    ("hf", "gguf"),
    [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
        ("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
        ("model.layers.11.post_attention_layernorm.weight", "blk.11.ffn_norm.weight"),
        ("model.layers.3.self_attn.q_proj.weight", "blk.3.attn_q.weight"),
        ("model.layers.3.self_attn.k_proj.weight", "blk.3.attn_k.weight"),
        ("model.layers.3.self_attn.v_proj.weight", "blk.3.attn_v.weight"),
        ("model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"),
        ("model.layers.7.mlp.gate_proj.weight", "blk.7.ffn_gate.weight"),
        ("model.layers.7.mlp.up_proj.weight", "blk.7.ffn_up.weight"),
        ("model.layers.7.mlp.down_proj.weight", "blk.7.ffn_down.weight"),
    ],
)
def test_tensor_names_follow_the_gguf_spec(hf: str, gguf: str) -> None:
    assert gguf_tensor_name(hf) == gguf


def test_unknown_tensors_are_refused_not_dropped() -> None:
    with pytest.raises(ExportError, match="no GGUF name"):
        gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq")


def test_non_llama_and_unsupported_rope_are_refused() -> None:
    from transformers import GPT2Config, LlamaConfig

    with pytest.raises(ExportError, match="Llama-architecture"):
        llama_shape(GPT2Config())
    small = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1}
    llama3 = LlamaConfig(
        **small,
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
        },
    )  # fmt: skip
    with pytest.raises(ExportError, match="rope scaling 'llama3'"):
        llama_shape(llama3)
    linear = LlamaConfig(**small, rope_parameters={"rope_type": "linear", "factor": 2.0})
    assert llama_shape(linear).rope_scaling == ("linear", 2.0)
    shape = llama_shape(LlamaConfig(**small, num_key_value_heads=2, head_dim=32))
    assert (shape.n_heads, shape.n_kv_heads, shape.head_dim) == (4, 2, 32)


def test_tensor_plan_types_and_encoding() -> None:
    """Norms stay F32, rows the block size does not divide fall back to F16, q4 keeps the
    embedding at Q8_0, the tied lm_head is not written, and encoded sizes match the plan."""
    import torch
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=40, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    shape = llama_shape(config)
    gen = torch.Generator().manual_seed(0)
    state = {
        "model.embed_tokens.weight": torch.randn(96, 64, generator=gen),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(64, 64, generator=gen),
        "model.layers.0.mlp.down_proj.weight": torch.randn(64, 40, generator=gen),
        "model.layers.0.input_layernorm.weight": torch.ones(64),
        "lm_head.weight": torch.randn(96, 64, generator=gen),
    }
    plans = {p.gguf_name: p for p in plan_tensors(state, shape, "q4_0")}
    assert "output.weight" not in plans
    assert plans["token_embd.weight"].ggml_type == "Q8_0"
    assert plans["blk.0.attn_q.weight"].ggml_type == "Q4_0"
    assert plans["blk.0.attn_q.weight"].rotary_heads == 4
    assert plans["blk.0.ffn_down.weight"].ggml_type == "F16"  # 40 % 32 != 0
    assert plans["blk.0.attn_norm.weight"].ggml_type == "F32"
    q8 = encode_tensor(plans["token_embd.weight"], state["model.embed_tokens.weight"])
    assert q8.dtype == np.uint8 and q8.shape == (96, 2 * 34)  # 2 blocks of 32 per row
    q4 = encode_tensor(
        plans["blk.0.attn_q.weight"], state["model.layers.0.self_attn.q_proj.weight"]
    )
    assert q4.shape == (64, 2 * 18)
    assert (
        encode_tensor(
            plans["blk.0.ffn_down.weight"], state["model.layers.0.mlp.down_proj.weight"]
        ).dtype
        == np.float16
    )
    with pytest.raises(ExportError, match="unknown GGUF quantisation"):
        plan_tensors(state, shape, "q3_k_m")
