"""One chat template end to end.

The same conversation is rendered through
  (a) the inference engine (`tunesmith.inference.prompt_ids`, the tokenizer saved with the run),
  (b) the exported HF tokenizer,
  (c) the GGUF: the tokenizer transformers rebuilds from its metadata, and the
      `tokenizer.chat_template` string stored in it,
  (d) training tokenization (`tunesmith.data.tokenize.tokenize_conversation`),
  (e) the Ollama Modelfile TEMPLATE (executed with Go template semantics),
and every path must give identical token ids, and identical stop tokens.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "export"))
from export_helpers import make_run
from gotemplate_subset import ollama_values, render

CONVERSATIONS = [
    [
        {"role": "system", "content": "Reply with JSON only: category, priority."},
        {"role": "user", "content": "My refund for order 7 is late!  Please help"},
        {"role": "assistant", "content": '{"category": "refund", "priority": "high"}'},
        {"role": "user", "content": "And the invoice?\nThanks"},
        {"role": "assistant", "content": '{"category": "invoice", "priority": "low"}'},
    ],
    [
        {"role": "user", "content": "What is the capital of france?"},
        {"role": "assistant", "content": "Paris."},
    ],
]


@pytest.fixture(scope="module")
def exported(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from tunesmith.export import export_model

    root = tmp_path_factory.mktemp("template")
    run = make_run(tiny_model_dir, root / "run")
    hf = export_model(run, fmt="hf", out=root / "hf", verify=False)
    gguf = export_model(run, fmt="gguf", quantize="q8_0", out=root / "gguf", verify=False)
    return run, hf, gguf


def test_one_template_end_to_end(exported) -> None:
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.data.records import Conversation, Message
    from tunesmith.data.tokenize import IGNORE_INDEX, tokenize_conversation
    from tunesmith.export.merge import load_merged
    from tunesmith.export.source import resolve_source
    from tunesmith.inference import prompt_ids
    from tunesmith.models.load import load_tokenizer, stop_token_ids

    run, hf, gguf = exported
    engine_tok = load_tokenizer(run / "final")
    hf_tok = AutoTokenizer.from_pretrained(str(hf.out_dir))
    gguf_file = gguf.main_file
    gguf_tok = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    reader = GGUFReader(str(gguf_file))
    gguf_template = reader.fields["tokenizer.chat_template"].contents()
    modelfile = (gguf.out_dir / "Modelfile").read_text()
    match = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S)
    assert match is not None
    go_template = match.group(1)

    def ids_of(tok, messages, gen: bool, template: str | None = None) -> list[int]:
        out = tok.apply_chat_template(
            messages, add_generation_prompt=gen, tokenize=True, return_dict=True,
            chat_template=template,
        )  # fmt: skip
        return list(out["input_ids"])

    for conversation in CONVERSATIONS:
        turns = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
        for i in turns:
            prefix = conversation[:i]
            engine = prompt_ids(engine_tok, prefix)  # (a)
            assert prompt_ids(hf_tok, prefix) == engine  # (b)
            assert prompt_ids(gguf_tok, prefix) == engine  # (c) tokenizer from GGUF metadata
            assert ids_of(engine_tok, prefix, True, gguf_template) == engine  # (c) its template
            go_text = render(go_template, ollama_values(prefix))  # (e)
            assert gguf_tok(go_text, add_special_tokens=False)["input_ids"] == engine
        full = ids_of(engine_tok, conversation, False)
        assert ids_of(hf_tok, conversation, False) == full
        assert ids_of(gguf_tok, conversation, False) == full
        assert ids_of(gguf_tok, conversation, False, gguf_template) == full

        record = Conversation(tuple(Message(m["role"], m["content"]) for m in conversation))
        example = tokenize_conversation(record, engine_tok)  # (d)
        assert example.input_ids == full
        for i in turns:
            prompt = prompt_ids(engine_tok, conversation[:i])
            assert example.input_ids[: len(prompt)] == prompt
        trained_ends = [
            example.labels[k]
            for k in range(len(example.labels))
            if example.labels[k] != IGNORE_INDEX
            and (k + 1 == len(example.labels) or example.labels[k + 1] == IGNORE_INDEX)
        ]
        assert len(trained_ends) == len(turns)
        training_stops = set(engine_tok.convert_ids_to_tokens(trained_ends))

    # Stop tokens: what training teaches the model to emit at the end of an answer is exactly
    # what every runtime stops on.
    def names(tok, ids) -> set[str]:
        return set(tok.convert_ids_to_tokens(list(ids)))

    merged = load_merged(resolve_source(run))  # what the engine serves before export
    engine_stops = names(engine_tok, stop_token_ids(engine_tok, merged.model.generation_config))
    hf_model = AutoModelForCausalLM.from_pretrained(str(hf.out_dir))
    hf_stops = names(hf_tok, stop_token_ids(hf_tok, hf_model.generation_config))
    eos = hf_model.generation_config.eos_token_id
    hf_gen_stops = names(hf_tok, eos if isinstance(eos, list) else [eos])
    gguf_ids = [
        reader.fields[k].contents()
        for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id")
    ]
    gguf_stops = names(gguf_tok, gguf_ids)
    ollama_stops = set(re.findall(r'^PARAMETER stop "(.*)"$', modelfile, re.M))
    assert training_stops == {"<|im_end|>"}
    assert engine_stops == hf_stops == hf_gen_stops == gguf_stops == ollama_stops
    assert engine_stops == training_stops
    assert gguf_tok.eos_token == "<|im_end|>"
