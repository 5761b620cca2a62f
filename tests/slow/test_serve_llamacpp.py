"""The llama.cpp serving engine with the real llama-cpp-python (the optional `llamacpp` extra): a
model exported by the server's GGUF cache at f32 (here the tiny model) gives the same greedy
answers through llama.cpp as through our float32 torch engine — the same token ids, chat
template, stop tokens and text on both engines."""

from __future__ import annotations

import pytest

from tunesmith.inference import GenerationSettings, prompt_ids
from tunesmith.inference.pool import ModelPool
from tunesmith.server.gguf_cache import GgufCache

pytestmark = pytest.mark.slow
GREEDY = GenerationSettings(max_new_tokens=12, temperature=0.0)
PROMPTS = ["hi", "what is the capital of france?", "classify: my delivery is late"]


def test_an_f32_export_answers_like_the_torch_engine(tiny_model_dir, tmp_path) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (llamacpp extra)")
    cache = GgufCache(tmp_path / "home", "f32")
    on_llama = ModelPool(1, gguf_of=cache)
    on_torch = ModelPool(1, precision="float32")
    try:
        assert cache.wait(str(tiny_model_dir), timeout=300) is not None  # exported in background
        fast, exact = on_llama.get(str(tiny_model_dir)), on_torch.get(str(tiny_model_dir))
        assert (fast.model.engine, exact.model.engine) == ("llama.cpp", "torch")
        for text in PROMPTS:
            ids = prompt_ids(exact.tokenizer, [{"role": "user", "content": text}])
            a, b = fast.complete(ids, GREEDY), exact.complete(ids, GREEDY)
            assert a.completion_tokens > 0
            assert (a.text, a.finish_reason) == (b.text, b.finish_reason), text
    finally:
        on_llama.close()
        on_torch.close()
        cache.close()
