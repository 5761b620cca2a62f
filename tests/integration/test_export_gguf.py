"""GGUF export of a merged LoRA run on the tiny model: reload, metadata, Modelfile, atomicity.

Tolerances on logits (tiny model, logits of magnitude ~1), reloaded through transformers' GGUF
loader vs. the float32 merged model:
  f32  max |diff| <= 1e-4   (exact up to summation order: proves names and rotary row order)
  f16  max |diff| <= 3e-3   (half precision weights)
  q8_0 max |diff| <= 3e-2   (8-bit blocks of 32)
Each tolerance is checked to be far below how much the adapter changed the model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "export"))
from export_helpers import make_run

TOLERANCE = {"f32": 1e-4, "f16": 3e-3, "q8_0": 3e-2}


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tiny_model_dir, tmp_path_factory.mktemp("gguf-run"))


@pytest.fixture(scope="module")
def reference(run: Path, tiny_model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.export.merge import load_merged
    from tunesmith.export.source import resolve_source
    from tunesmith.export.verify import logits_for, probe_ids

    merged = load_merged(resolve_source(run))
    ids = probe_ids(merged.tokenizer)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    return merged, ids, logits_for(merged.model, ids), logits_for(base, ids)


def _max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0"])
def test_gguf_reloads_within_quantisation_tolerance(run, reference, tmp_path, quant) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.export import export_model
    from tunesmith.export.verify import logits_for

    _, ids, merged_logits, base_logits = reference
    result = export_model(run, fmt="gguf", quantize=quant, out=tmp_path / "out", verify=False)
    gguf = result.main_file
    assert gguf.name == f"{run.name}-{quant}.gguf" and gguf.is_file()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    diff = _max_diff(logits_for(model, ids), merged_logits)
    assert diff <= TOLERANCE[quant], (quant, diff)
    assert _max_diff(base_logits, merged_logits) > 10 * TOLERANCE["q8_0"]


def test_gguf_metadata_and_tensor_types(run, reference, tmp_path) -> None:
    from gguf import GGUFReader

    from tunesmith.export import export_model

    merged, *_ = reference
    tok = merged.tokenizer
    seen = []
    result = export_model(
        run, fmt="gguf", quantize="q8_0", out=tmp_path / "out", verify=False, on_event=seen.append
    )
    # progress reaches the caller as one `export` phase, percent done, rising to 100
    assert seen and {(e.kind, e.phase, e.total) for e in seen} == {("progress", "export", 100)}
    done = [e.done for e in seen]
    assert done == sorted(done) and done[-1] == 100
    assert any("tensors" in e.message for e in seen)
    reader = GGUFReader(str(result.main_file))

    def field(key: str):
        return reader.fields[key].contents()

    cfg = merged.model.config
    assert field("general.architecture") == "llama"
    assert field("general.file_type") == 7  # MOSTLY_Q8_0
    assert field("llama.block_count") == cfg.num_hidden_layers
    assert field("llama.embedding_length") == cfg.hidden_size
    assert field("llama.feed_forward_length") == cfg.intermediate_size
    assert field("llama.attention.head_count") == cfg.num_attention_heads
    assert field("llama.attention.head_count_kv") == cfg.num_key_value_heads
    assert field("llama.context_length") == cfg.max_position_embeddings
    assert field("llama.rope.dimension_count") == cfg.hidden_size // cfg.num_attention_heads
    assert field("tokenizer.ggml.model") == "gpt2"
    assert field("tokenizer.ggml.pre") == "gpt-2"
    tokens = field("tokenizer.ggml.tokens")
    assert tokens == [tok.convert_ids_to_tokens(i) for i in range(len(tok))]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert field("tokenizer.ggml.token_type")[im_end] == 3  # CONTROL
    assert field("tokenizer.ggml.eos_token_id") == im_end
    assert field("tokenizer.ggml.eot_token_id") == im_end
    assert field("tokenizer.ggml.padding_token_id") == tok.pad_token_id
    assert field("tokenizer.ggml.bos_token_id") == tok.bos_token_id
    assert field("tokenizer.ggml.add_bos_token") is False
    assert field("tokenizer.chat_template") == tok.chat_template
    assert field("general.base_model.0.name") == str(merged.source.base_name)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert "output.weight" not in types  # tied embeddings: llama.cpp reuses token_embd
    assert len(types) == 2 + 9 * cfg.num_hidden_layers
    assert types["token_embd.weight"] == "Q8_0" and types["blk.1.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32" and types["output_norm.weight"] == "F32"


def test_export_verifies_writes_modelfile_and_provenance(run, tmp_path) -> None:
    import hashlib

    from tunesmith.export import export_model

    result = export_model(run, fmt="gguf", quantize="q8_0", out=tmp_path / "out", name="My Bot")
    names = sorted(p.name for p in result.files)
    assert names == ["Modelfile", "My-Bot-q8_0.gguf", "README.md", "export.json"]
    rt = result.roundtrip
    assert rt is not None and rt.tokens_match and rt.template_match
    assert rt.stop_tokens == ["<|im_end|>"]
    assert rt.max_abs_logit_diff <= TOLERANCE["q8_0"] and rt.positions > 100
    modelfile = (tmp_path / "out" / "Modelfile").read_text()
    assert "FROM ./My-Bot-q8_0.gguf" in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "ollama create My-Bot -f Modelfile" in readme and "tokenizer.chat_template" not in readme
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    digest = hashlib.sha256((tmp_path / "out" / "My-Bot-q8_0.gguf").read_bytes()).hexdigest()
    assert meta["sha256"] == {"My-Bot-q8_0.gguf": digest}
    assert meta["source"]["adapter_type"] == "lora" and meta["quantize"] == "q8_0"
    assert meta["roundtrip"]["tokens_match"] is True
    # issue 11 item 18: export.json lists the export's files (itself included), not []
    assert meta["files"] == names == sorted(p.name for p in (tmp_path / "out").iterdir())


def test_failed_export_leaves_nothing_and_existing_output_is_kept(run, tmp_path, monkeypatch):
    from tunesmith.export import ExportError, export_model
    from tunesmith.export import gguf as gguf_module

    out = tmp_path / "exports" / "out"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("user file")
    with pytest.raises(ExportError, match="not empty"):
        export_model(run, fmt="gguf", out=out)

    def broken(path: Path, **kwargs):
        path.write_bytes(b"GGUF half")
        raise OSError("disk full")

    monkeypatch.setattr(gguf_module, "write_gguf", broken)
    with pytest.raises(OSError, match="disk full"):
        export_model(run, fmt="gguf", out=out, force=True, verify=False)
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_output_over_the_inputs_is_refused_even_with_force(run, tiny_model_dir) -> None:
    from tunesmith.export import ExportError, export_model

    for out in (run, run / "final", tiny_model_dir, run.parent):
        with pytest.raises(ExportError, match="would overwrite the export's input"):
            export_model(run, fmt="gguf", out=out, force=True)
    assert (run / "final" / "adapter_model.safetensors").is_file()


def test_bad_quantisation_is_refused_before_any_work(run, tmp_path) -> None:
    from tunesmith.export import ExportError, export_model

    with pytest.raises(ExportError, match="q3_k"):
        export_model(run, fmt="gguf", quantize="q3_k", out=tmp_path / "o")
    with pytest.raises(ExportError, match="not available for the hf format"):
        export_model(run, fmt="hf", quantize="q8_0", out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_untied_padded_wide_head_model_round_trips_exactly(tiny_model_dir, tmp_path) -> None:
    """A full fine-tuned model (no adapter) exercising the other layout paths: a separate
    output.weight, embedding rows no token maps to, and head_dim != hidden / heads."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from tunesmith.export import export_model
    from tunesmith.export.verify import logits_for, probe_ids

    src = tmp_path / "full"
    src.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name.endswith(".jinja"):
            shutil.copy(f, src / f.name)
    tok = AutoTokenizer.from_pretrained(str(src))
    config = LlamaConfig(
        vocab_size=len(tok) + 4, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=1, head_dim=32, tie_word_embeddings=False,
        max_position_embeddings=512, rope_parameters={"rope_type": "default", "rope_theta": 5e4},
    )  # fmt: skip
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(str(src), safe_serialization=True)
    result = export_model(src, fmt="gguf", quantize="f32", out=tmp_path / "o", verify=False)
    gguf = result.main_file
    reloaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    assert reloaded.config.head_dim == 32 and reloaded.config.num_key_value_heads == 1
    assert not reloaded.config.tie_word_embeddings
    ids = probe_ids(tok)
    diff = _max_diff(logits_for(reloaded, ids), logits_for(model, ids))
    assert diff <= TOLERANCE["f32"], diff


def test_tunesmith_serves_the_exported_gguf_like_the_merged_model(run, reference, tmp_path):
    """export -> serve: the registry loads the GGUF (de-quantising it once into its cache) and
    the engine's greedy answers equal the merged model's (f32 GGUF: identical weights)."""
    from tunesmith import api
    from tunesmith.export import export_model

    merged, *_ = reference
    result = export_model(run, fmt="gguf", quantize="f32", out=tmp_path / "o", verify=False)
    prompts = [
        [{"role": "user", "content": "Hello, my refund is late."}],
        [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "Paris?"}],
    ]
    seen = []
    served = api.load_model(result.main_file, device="cpu", on_event=seen.append)
    assert [e.phase for e in seen] == ["pull"] * len(seen) and seen[-1].done == 100
    want = api.generate(merged, prompts, max_new_tokens=12)
    got = api.generate(served, prompts, max_new_tokens=12)
    assert got == want and all(want)


def test_a_gguf_that_tokenises_differently_fails_the_export(run, tmp_path, monkeypatch) -> None:
    """Verification is not decoration: a broken tokenizer in the GGUF (here: merges cut short)
    makes the export fail, and nothing is left where the export would have been."""
    import dataclasses

    from tunesmith.export import ExportError, export_model, gguf_vocab

    real = gguf_vocab.build_vocab

    def truncated(*args, **kwargs):
        vocab = real(*args, **kwargs)
        return dataclasses.replace(vocab, merges=vocab.merges[:20])

    monkeypatch.setattr(gguf_vocab, "build_vocab", truncated)
    with pytest.raises(ExportError, match="tokenises the chat template differently"):
        export_model(run, fmt="gguf", quantize="f16", out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
