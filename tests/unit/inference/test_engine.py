"""Generation through the chat template: batching must not change answers."""

from __future__ import annotations

from pathlib import Path

from tunesmith.inference import GenerationSettings, generate, prompt_ids, stream
from tunesmith.models import load_model


def test_prompt_ids_end_with_generation_prompt(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    ids = prompt_ids(lm.tokenizer, [{"role": "user", "content": "hello"}])
    text = lm.tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n")
    assert "hello<|im_end|>" in text


def test_batched_generation_matches_one_by_one(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    convs = [
        [{"role": "user", "content": "hi"}],
        [{"role": "user", "content": "what is the capital of france and germany, please?"}],
        [{"role": "system", "content": "be short"}, {"role": "user", "content": "refund"}],
    ]
    settings = GenerationSettings(max_new_tokens=12, batch_size=3)
    batched = generate(lm.model, lm.tokenizer, convs, settings)
    single = [
        generate(lm.model, lm.tokenizer, [c], GenerationSettings(max_new_tokens=12))[0]
        for c in convs
    ]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def test_stream_yields_the_same_text_as_generate(tiny_model_dir: Path) -> None:
    lm = load_model(tiny_model_dir)
    conv = [{"role": "user", "content": "hello there"}]
    settings = GenerationSettings(max_new_tokens=10)
    whole = generate(lm.model, lm.tokenizer, [conv], settings)[0]
    pieces = list(stream(lm.model, lm.tokenizer, conv, settings))
    assert "".join(pieces).strip() == whole
