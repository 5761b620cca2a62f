"""The tokenizer as GGUF metadata (llama.cpp's `tokenizer.ggml.*` keys), for byte-level BPE.

A GGUF carries no tokenizer.json: llama.cpp, Ollama and transformers' GGUF loader rebuild the
tokenizer from a token list, token types, merges, a named pre-tokenizer and special token ids.
Each of those is derived here from the tokenizer the model was trained with, and anything we
cannot express faithfully (an unknown pre-tokenizer, a sentencepiece vocabulary) is refused
rather than written approximately: a GGUF that tokenises differently answers differently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunesmith.export.common import ExportError

# Token types as llama.cpp numbers them (gguf.TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED = 1, 2, 3, 4, 5

# Split patterns of the pre-tokenizers llama.cpp knows by name.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLIT_NAMES = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None
    eos_id: int | None
    unk_id: int | None
    pad_id: int | None
    eot_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str


def _is_byte_level(node: dict[str, Any] | None, *, use_regex: bool) -> bool:
    return bool(
        node
        and node.get("type") == "ByteLevel"
        and bool(node.get("use_regex", True)) == use_regex
        and not node.get("add_prefix_space", False)
    )


def pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for the pre-tokenizer described by tokenizer.json's `pre_tokenizer`."""
    if _is_byte_level(pre, use_regex=True):
        return "gpt-2"
    if pre and pre.get("type") == "Sequence":
        parts = pre.get("pretokenizers") or []
        if (
            len(parts) == 2
            and parts[0].get("type") == "Digits"
            and parts[0].get("individual_digits")
            and _is_byte_level(parts[1], use_regex=True)
        ):
            return "smollm"
        if (
            len(parts) == 2
            and parts[0].get("type") == "Split"
            and _is_byte_level(parts[1], use_regex=False)
        ):
            pattern = (parts[0].get("pattern") or {}).get("Regex")
            if pattern in _SPLIT_NAMES:
                return _SPLIT_NAMES[pattern]
    raise ExportError(
        "the tokenizer's pre-tokenizer has no llama.cpp equivalent, so a GGUF would tokenise "
        "text differently from training",
        hint="export with --format hf instead",
    )


def _adds_special(tokenizer: Any) -> tuple[bool, bool]:
    """Whether encoding plain text adds BOS in front / EOS at the end."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = len(full) > len(plain) and bos is not None and full[0] == bos
    add_eos = len(full) > len(plain) and eos is not None and full[-1] == eos
    return add_bos, add_eos


def build_vocab(tokenizer: Any, n_vocab: int, *, eot_id: int | None = None) -> GGUFVocab:
    """Token list, types and merges for a model whose embedding matrix has `n_vocab` rows."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError("GGUF export needs a fast (tokenizers) tokenizer")
    data = json.loads(backend.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ExportError(
            f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')}"
            + (" with byte fallback" if model.get("byte_fallback") else ""),
            hint="export with --format hf instead",
        )
    pre = pre_tokenizer_name(data.get("pre_tokenizer"))
    tokens: list[str | None] = [None] * n_vocab
    types = [NORMAL] * n_vocab
    for text, index in model.get("vocab", {}).items():
        if index >= n_vocab:
            raise ExportError(
                f"token {text!r} has id {index}, beyond the model's {n_vocab} embeddings"
            )
        tokens[index] = text
    for added in data.get("added_tokens", []):
        index = added["id"]
        if index >= n_vocab:
            raise ExportError(
                f"added token {added['content']!r} has id {index}, beyond the model's "
                f"{n_vocab} embeddings"
            )
        tokens[index] = added["content"]
        types[index] = CONTROL if added.get("special") else USER_DEFINED
    for index, text in enumerate(tokens):
        if text is None:  # embedding rows no token maps to (vocab padded to a multiple)
            tokens[index] = f"[PAD{index}]"
            types[index] = UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    add_bos, add_eos = _adds_special(tokenizer)
    return GGUFVocab(
        tokens=[t for t in tokens if t is not None],
        token_types=types,
        merges=merges,
        pre=pre,
        bos_id=tokenizer.bos_token_id,
        eos_id=tokenizer.eos_token_id,
        unk_id=tokenizer.unk_token_id,
        pad_id=tokenizer.pad_token_id,
        eot_id=eot_id,
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=str(tokenizer.chat_template),
    )
