"""The real default model (SmolLM2-135M-Instruct) through merge -> GGUF q8_0 -> reload.

Slow (a few minutes on a shared CPU). Set TUNESMITH_DEMO_RUN to a real demo run directory to
export that run; otherwise a small LoRA adapter with non-zero weights is built on the default
model. The held-out prompts of the bundled demo are answered greedily by the merged model and
by the GGUF reloaded through transformers' GGUF loader. Two agreement rates are printed:
  * token agreement: the GGUF model, fed the merged model's answer, predicts the same next
    token at this fraction of answer positions (what q8_0 costs per step; must be >= 90 %);
  * answer agreement: the fraction of whole greedy answers that are identical. One early flip
    on a near-tie changes the rest of an answer, so an untrained base model, which is unsure
    on these prompts, agrees less than a trained run that answers them confidently.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "export"))

REPO = Path(__file__).resolve().parents[2]
HELDOUT = REPO / "examples" / "demo" / "heldout.jsonl"
N_PROMPTS = int(os.environ.get("TUNESMITH_EXPORT_PROMPTS", "16"))
MAX_NEW_TOKENS = 48
MIN_TOKEN_AGREEMENT = 0.9


def _small_adapter_run(base_dir: Path, run_dir: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 2e-3)
    model.save_pretrained(str(run_dir / "final"), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(run_dir / "final"))
    manifest = {"base_model": "smollm2-135m-instruct", "base_model_path": str(base_dir)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


def _prompts() -> list[list[dict[str, str]]]:
    if not HELDOUT.is_file():
        pytest.skip("demo data not present")
    out = []
    for line in HELDOUT.read_text().splitlines()[:N_PROMPTS]:
        messages = json.loads(line)["messages"]
        out.append([m for m in messages if m["role"] != "assistant"])
    return out


@pytest.mark.slow
def test_default_model_gguf_q8_0_answers_like_merged(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith import api
    from tunesmith.inference import GenerationSettings, generate
    from tunesmith.models.registry import DEFAULT_MODEL, prepare, resolve

    torch.manual_seed(0)
    base_dir = prepare(resolve(DEFAULT_MODEL))
    demo = os.environ.get("TUNESMITH_DEMO_RUN")
    run = Path(demo) if demo else _small_adapter_run(base_dir, tmp_path / "run")
    result = api.export_model(run, format="gguf", quantize="q8_0", out=tmp_path / "gguf")
    rt = result.roundtrip
    assert rt is not None and rt.tokens_match and rt.template_match
    assert "<|im_end|>" in rt.stop_tokens

    merged = api.merge_adapter(run)
    gguf = result.main_file
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    gguf_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prompts = _prompts()
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, batch_size=8)
    want = generate(merged.model, merged.tokenizer, prompts, settings)
    got = generate(reloaded, gguf_tok, prompts, settings)
    exact = sum(a == b for a, b in zip(want, got, strict=True)) / len(prompts)
    token_agree = _teacher_forced_agreement(merged, reloaded, prompts, want)
    print(
        f"\nGGUF q8_0 vs merged on {len(prompts)} held-out prompts: token agreement "
        f"{token_agree:.1%}, identical answers {exact:.1%}; probe logits max |diff| "
        f"{rt.max_abs_logit_diff:.3f} (largest {rt.max_abs_logit:.1f}), "
        f"top-1 {rt.top1_agreement:.1%}"
    )
    for a, b in zip(want, got, strict=True):
        if a != b:
            print(f"  merged: {a!r}\n  gguf:   {b!r}")
    assert token_agree >= MIN_TOKEN_AGREEMENT


def _teacher_forced_agreement(merged, reloaded, prompts, answers) -> float:
    """Fraction of answer tokens the reloaded model predicts itself when fed the merged answer."""
    import torch

    from tunesmith.inference import prompt_ids

    tok = merged.tokenizer
    same = total = 0
    with torch.no_grad():
        for prompt, answer in zip(prompts, answers, strict=True):
            head = prompt_ids(tok, prompt)
            body = tok(answer, add_special_tokens=False)["input_ids"]
            if not body:
                continue
            ids = torch.tensor([head + body])
            want = merged.model(ids).logits[0, len(head) - 1 : -1].argmax(-1)
            got = reloaded(ids).logits[0, len(head) - 1 : -1].argmax(-1)
            same += int((want == got).sum())
            total += len(body)
    return same / max(total, 1)


@pytest.mark.slow
def test_default_model_template_and_vocab_translate() -> None:
    """The default model's own chat template becomes an equivalent Go TEMPLATE, and its
    tokenizer a GGUF vocabulary llama.cpp knows (byte-level BPE, gpt-2 pre-tokenizer)."""
    from gotemplate_subset import ollama_values, render

    from tunesmith.export.chat_format import (
        VALIDATION_CONVERSATIONS,
        analyse_template,
        end_of_turn_token,
        tokenizer_renderer,
    )
    from tunesmith.export.gguf_vocab import CONTROL, build_vocab
    from tunesmith.export.modelfile import go_template
    from tunesmith.models.load import load_tokenizer, resolve_path
    from tunesmith.models.registry import DEFAULT_MODEL

    tok = load_tokenizer(resolve_path(DEFAULT_MODEL))
    jinja = tokenizer_renderer(tok)
    fmt = analyse_template(jinja)
    assert fmt is not None and "SmolLM" in fmt.default_prefix
    assert end_of_turn_token(fmt, tok) == "<|im_end|>"
    for conversation in [*VALIDATION_CONVERSATIONS, *_prompts()[:5]]:
        assert render(go_template(fmt), ollama_values(conversation)) == jinja(conversation, True)
    vocab = build_vocab(tok, 49152, eot_id=tok.convert_tokens_to_ids("<|im_end|>"))
    assert vocab.pre == "gpt-2" and len(vocab.tokens) == 49152 and not vocab.add_bos
    assert sum(t == CONTROL for t in vocab.token_types) == len(tok.added_tokens_decoder)
