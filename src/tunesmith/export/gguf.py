"""Write a GGUF file for a Llama-architecture model ourselves, with the `gguf` package.

Converters that shell out to llama.cpp's scripts break whenever llama.cpp changes. The format
itself is small and stable: architecture hyper-parameters as `llama.*` keys, tensors under the
standard names (`blk.N.attn_q.weight`, ...), the tokenizer as `tokenizer.ggml.*` keys and the
chat template as `tokenizer.chat_template`. Two details matter for correct outputs:

* llama.cpp applies rotary embeddings to *interleaved* pairs of each head's dimensions, while
  Hugging Face Llama checkpoints rotate the two *halves* of each head. The rows of q_proj and
  k_proj are therefore reordered per head (first-half row j goes to 2j, second-half row j to
  2j+1), for K with the number of key/value heads.
* Quantisation (q8_0, q4_0, ...) is per block of 32 (q*_0/1) values along a row; 1-D tensors
  (norms) stay float32 as llama.cpp expects, and a row length not divisible by the block size
  falls back to f16 for that tensor rather than failing.

Tensor infos are written first and the data then streamed one tensor at a time, so peak memory
is the merged model plus one encoded tensor, not a second copy of the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.events import Reporter
from tunesmith.events import progress as progress_event
from tunesmith.export.common import ExportError
from tunesmith.export.gguf_vocab import GGUFVocab

ARCH = "llama"
SUPPORTED_MODEL_TYPES = {"llama", "mistral"}

# name -> (GGML tensor type, llama.cpp file type). q4/q5 types keep the token embedding at q8_0.
QUANT_TYPES: dict[str, tuple[str, int]] = {
    "f32": ("F32", 0),
    "f16": ("F16", 1),
    "bf16": ("BF16", 32),
    "q8_0": ("Q8_0", 7),
    "q5_1": ("Q5_1", 9),
    "q5_0": ("Q5_0", 8),
    "q4_1": ("Q4_1", 3),
    "q4_0": ("Q4_0", 2),
}

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}


@dataclass(frozen=True)
class LlamaShape:
    """The hyper-parameters GGUF needs, read from a transformers config."""

    n_layers: int
    hidden: int
    ffn: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    context: int
    rms_eps: float
    rope_theta: float
    rope_scaling: tuple[str, float] | None
    vocab: int
    tied: bool


def llama_shape(config: Any) -> LlamaShape:
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ExportError(
            f"GGUF export supports Llama-architecture models; this one is '{model_type}'",
            hint="export with --format hf instead",
        )
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ExportError("GGUF export does not support Llama models with bias terms")
    rope = dict(getattr(config, "rope_parameters", None) or {})
    legacy_scaling = getattr(config, "rope_scaling", None)
    if isinstance(legacy_scaling, dict):
        rope = {**legacy_scaling, **rope}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
    scaling: tuple[str, float] | None = None
    if rope_type == "linear":
        scaling = ("linear", float(rope["factor"]))
    elif rope_type != "default":
        raise ExportError(
            f"GGUF export does not support rope scaling '{rope_type}' yet",
            hint="export with --format hf instead",
        )
    heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return LlamaShape(
        n_layers=int(config.num_hidden_layers),
        hidden=int(config.hidden_size),
        ffn=int(config.intermediate_size),
        n_heads=heads,
        n_kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=head_dim,
        context=int(config.max_position_embeddings),
        rms_eps=float(config.rms_norm_eps),
        rope_theta=float(theta),
        rope_scaling=scaling,
        vocab=int(config.vocab_size),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
    )


def gguf_tensor_name(hf_name: str) -> str:
    """The GGUF name of a Hugging Face Llama parameter (raises for anything unknown)."""
    stem, _, suffix = hf_name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) >= 4 and parts[0] == "model" and parts[1] == "layers" and parts[2].isdigit():
        inner = ".".join(parts[3:])
        if inner in _LAYER_NAMES:
            return f"blk.{parts[2]}.{_LAYER_NAMES[inner]}.{suffix}"
    raise ExportError(f"no GGUF name for tensor '{hf_name}'", hint="is this a Llama model?")


def interleave_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder each head's rows from rotate-half layout (HF) to interleaved pairs (llama.cpp)."""
    rows = weight.shape[0]
    head_dim = rows // n_heads
    if head_dim * n_heads != rows or head_dim % 2:
        raise ExportError(f"cannot split {rows} rows into {n_heads} heads of even size")
    half = head_dim // 2
    within = np.empty(head_dim, dtype=np.int64)
    within[0::2] = np.arange(half)
    within[1::2] = np.arange(half, head_dim)
    order = (np.arange(n_heads)[:, None] * head_dim + within[None, :]).reshape(-1)
    return weight[order]


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: where it comes from, its GGML type and its shape (rows, cols)."""

    gguf_name: str
    hf_name: str
    ggml_type: str
    shape: tuple[int, ...]
    rotary_heads: int | None  # reorder rows for llama.cpp's rotary layout (q/k only)


def _tensor_type(name: str, shape: tuple[int, ...], wanted: str) -> str:
    """The GGML type a tensor is stored in: 1-D stays F32, a row length the quantisation block
    does not divide falls back to F16, and q4/q5 keep the token embedding at Q8_0."""
    from gguf import GGMLQuantizationType
    from gguf.constants import GGML_QUANT_SIZES

    if len(shape) < 2 or wanted == "F32":
        return "F32"
    if name == "token_embd.weight" and wanted.startswith(("Q4", "Q5")):
        wanted = "Q8_0"
    block = GGML_QUANT_SIZES[GGMLQuantizationType[wanted]][0]
    return wanted if shape[-1] % block == 0 else "F16"


def plan_tensors(state: dict[str, Any], shape: LlamaShape, quant: str) -> list[TensorPlan]:
    """Every tensor of a Llama state dict as it will be stored (raises for unknown ones)."""
    if quant not in QUANT_TYPES:
        raise ExportError(
            f"unknown GGUF quantisation '{quant}'", hint=f"use one of {', '.join(QUANT_TYPES)}"
        )
    plans = []
    for hf_name, tensor in state.items():
        if shape.tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        name = gguf_tensor_name(hf_name)
        dims = tuple(int(d) for d in tensor.shape)
        heads = shape.n_heads if ".attn_q." in name else None
        heads = shape.n_kv_heads if ".attn_k." in name else heads
        plans.append(
            TensorPlan(name, hf_name, _tensor_type(name, dims, QUANT_TYPES[quant][0]), dims, heads)
        )
    return plans


def _encode(array: np.ndarray, type_name: str) -> np.ndarray:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if type_name == "F32":
        return array.astype(np.float32)
    if type_name == "F16":
        return array.astype(np.float16)
    return quantize(array.astype(np.float32), GGMLQuantizationType[type_name])


def _info(plan: TensorPlan) -> tuple[tuple[int, ...], Any, int, Any]:
    """(shape as passed to the writer, numpy dtype, bytes, GGML type) before any data exists."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    qtype = GGMLQuantizationType[plan.ggml_type]
    if plan.ggml_type in ("F32", "F16"):
        dtype = np.dtype(np.float32 if plan.ggml_type == "F32" else np.float16)
        return plan.shape, dtype, int(np.prod(plan.shape)) * dtype.itemsize, qtype
    byte_shape = quant_shape_to_byte_shape(plan.shape, qtype)
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), qtype


def encode_tensor(plan: TensorPlan, tensor: Any) -> np.ndarray:
    """The bytes of one tensor as GGUF stores it (rotary rows reordered, then encoded)."""
    array = tensor.detach().to("cpu").float().numpy()
    if plan.rotary_heads is not None:
        array = interleave_rotary_rows(array, plan.rotary_heads)
    return _encode(array, plan.ggml_type)


def write_gguf(
    path: Path,
    *,
    config: Any,
    state: dict[str, Any],
    vocab: GGUFVocab,
    quant: str = "q8_0",
    name: str = "model",
    base_name: str | None = None,
    on_event: Reporter | None = None,
) -> dict[str, str]:
    """Write `path`; returns {tensor name: GGML type name} for the report. Reports about ten
    `progress` events (phase `export:gguf`, tensors written of all) to `on_event`."""
    import gguf

    shape = llama_shape(config)
    if len(vocab.tokens) != shape.vocab:
        raise ExportError(
            f"tokenizer covers {len(vocab.tokens)} ids but the model has {shape.vocab} embeddings"
        )
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_type("model")
    writer.add_name(name)
    if base_name:
        writer.add_base_model_count(1)
        writer.add_base_model_name(0, base_name)
    writer.add_file_type(QUANT_TYPES[quant][1] if quant in QUANT_TYPES else 0)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.head_dim)
    if shape.head_dim * shape.n_heads != shape.hidden:
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    if shape.rope_scaling is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(shape.rope_scaling[1])
    writer.add_vocab_size(shape.vocab)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    for value, add in (
        (vocab.bos_id, writer.add_bos_token_id),
        (vocab.eos_id, writer.add_eos_token_id),
        (vocab.unk_id, writer.add_unk_token_id),
        (vocab.pad_id, writer.add_pad_token_id),
        (vocab.eot_id, writer.add_eot_token_id),
    ):
        if value is not None:
            add(int(value))
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    writer.add_chat_template(vocab.chat_template)

    plans = plan_tensors(state, shape, quant)
    expected = 2 + (0 if shape.tied else 1) + 9 * shape.n_layers
    if len(plans) != expected:
        raise ExportError(f"expected {expected} tensors for this Llama model, found {len(plans)}")
    for plan in plans:  # tensor infos first, so data can be streamed one tensor at a time
        dims, dtype, nbytes, qtype = _info(plan)
        writer.add_tensor_info(plan.gguf_name, dims, dtype, nbytes, raw_dtype=qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        reported = 0
        for i, plan in enumerate(plans):
            writer.write_tensor_data(encode_tensor(plan, state[plan.hf_name]))
            done = (i + 1) / len(plans)
            if on_event and int(done * 10) > reported:  # about ten updates, whatever the size
                reported = int(done * 10)
                text = f"wrote {i + 1}/{len(plans)} tensors"
                on_event(progress_event("export:gguf", i + 1, len(plans), text))
    finally:
        writer.close()
    return {plan.gguf_name: plan.ggml_type for plan in plans}
