"""Tokenizer metadata for GGUF: token list, types, merges, pre-tokenizer, special ids."""

from __future__ import annotations

import pytest

from tunesmith.export.common import ExportError
from tunesmith.export.gguf_vocab import (
    _LLAMA3_SPLIT,
    CONTROL,
    NORMAL,
    UNUSED,
    build_vocab,
    pre_tokenizer_name,
)

BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}


def test_pre_tokenizer_names_llama_cpp_knows() -> None:
    assert pre_tokenizer_name(BYTE_LEVEL) == "gpt-2"
    smollm = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL],
    }
    assert pre_tokenizer_name(smollm) == "smollm"
    llama3 = {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": _LLAMA3_SPLIT}, "behavior": "Isolated"},
            {**BYTE_LEVEL, "use_regex": False},
        ],
    }
    assert pre_tokenizer_name(llama3) == "llama-bpe"


@pytest.mark.parametrize(
    "pre",
    [
        None,
        {**BYTE_LEVEL, "add_prefix_space": True},
        {"type": "Metaspace", "replacement": "▁"},
        {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "x"}},
                                               {**BYTE_LEVEL, "use_regex": False}]},
    ],
)  # fmt: skip
def test_unknown_pre_tokenizers_are_refused(pre) -> None:
    with pytest.raises(ExportError, match="pre-tokenizer"):
        pre_tokenizer_name(pre)


def test_vocab_of_the_tiny_tokenizer(tiny_tokenizer) -> None:
    n = len(tiny_tokenizer)
    vocab = build_vocab(tiny_tokenizer, n, eot_id=2)
    assert len(vocab.tokens) == len(vocab.token_types) == n
    assert vocab.pre == "gpt-2"
    for text, index in tiny_tokenizer.get_vocab().items():
        assert vocab.tokens[index] == text
    specials = {tiny_tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>",
                                                                   "<|im_end|>")}  # fmt: skip
    assert {i for i, t in enumerate(vocab.token_types) if t == CONTROL} == specials
    assert all(t == NORMAL for i, t in enumerate(vocab.token_types) if i not in specials)
    assert vocab.merges and all(len(m.split(" ")) == 2 for m in vocab.merges)
    assert vocab.eos_id == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert vocab.bos_id == tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    # The tokenizer adds no BOS to plain text; llama.cpp must not either.
    assert vocab.add_bos is False and vocab.add_eos is False
    assert vocab.chat_template == tiny_tokenizer.chat_template


def test_padded_embedding_rows_become_unused_tokens(tiny_tokenizer) -> None:
    n = len(tiny_tokenizer)
    vocab = build_vocab(tiny_tokenizer, n + 3)
    assert vocab.tokens[n:] == [f"[PAD{n}]", f"[PAD{n + 1}]", f"[PAD{n + 2}]"]
    assert vocab.token_types[n:] == [UNUSED] * 3


def test_more_tokens_than_embeddings_is_refused(tiny_tokenizer) -> None:
    with pytest.raises(ExportError, match="beyond the model"):
        build_vocab(tiny_tokenizer, len(tiny_tokenizer) - 5)


def test_non_bpe_tokenizers_are_refused() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")),
        unk_token="[UNK]",
    )
    with pytest.raises(ExportError, match="byte-level BPE"):
        build_vocab(tok, 2)
