"""A tiny Llama-architecture model with a real (trained, byte-level BPE) tokenizer and the same
ChatML chat template as the default model. Built from a config in about a second, no network."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_WORDS = (
    "the a an of to and in is it you that he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than first "
    "water been call who oil its now find long down day did get come made may part order name "
    "email phone customer refund delivery late broken invoice account password reset urgent "
    "category priority sentiment positive negative neutral question answer capital france paris "
    "berlin germany json true false null hello thanks please help summary translate classify"
).split()


def _corpus() -> list[str]:
    import random

    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 14)
        words = [rng.choice(_WORDS) for _ in range(n)]
        line = " ".join(words).capitalize() + rng.choice([".", "?", "!", ":", ","])
        if rng.random() < 0.3:
            line = '{"' + words[0] + '": "' + " ".join(words[1:]) + '", "n": ' + str(n) + "}"
        lines.append(line)
    lines.append("".join(chr(c) for c in range(32, 127)))
    return lines


def build_tiny_tokenizer(out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Write a 2-layer, hidden-64 Llama with a real tokenizer to `out_dir` (safetensors)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(out_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=im_end,
        pad_token_id=im_end,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=im_end, pad_token_id=im_end
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
