"""The llama.cpp engine behind the pool, with a stand-in for `llama_cpp.Llama` (the real one is a
15-minute optional build: tests/slow/test_serve_llamacpp.py runs it where it is installed)."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tunesmith.inference import GenerationSettings
from tunesmith.inference.completion import Completion
from tunesmith.inference.pool import ModelPool
from tunesmith.inference.scheduler import results

GREEDY = GenerationSettings(max_new_tokens=32, temperature=0.0)


class FakeLlama:
    """Answers every prompt with `reply` (token ids), one token per `delay` seconds, and records
    what it was asked: the prompt, the sampling arguments, the seed, overlapping calls."""

    def __init__(self, path: Path, context: int, reply: list[int], delay: float = 0.0):
        self.path, self.context, self.reply, self.delay = path, context, reply, delay
        self.calls: list[dict[str, Any]] = []
        self.seeds: list[int] = []
        self.active = 0
        self.most_active = 0
        self.closed = False
        self.fail_next = False
        self.resets = 0

    def set_seed(self, seed: int) -> None:
        self.seeds.append(seed)

    def reset(self) -> None:
        self.resets += 1

    def generate(self, tokens: list[int], **kwargs: Any):
        self.calls.append({"tokens": list(tokens), **kwargs})
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("llama_decode returned -1")
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            for t in self.reply:
                time.sleep(self.delay)
                yield t
            while True:  # llama.cpp goes on until its caller stops
                time.sleep(self.delay)
                yield self.reply[0]
        finally:
            self.active -= 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def made(tiny_tokenizer) -> dict[str, Any]:
    """The fake llama the pool opened, and its factory."""
    eos = tiny_tokenizer.eos_token_id
    reply = [*tiny_tokenizer.encode("hello world", add_special_tokens=False), eos]
    box: dict[str, Any] = {"reply": reply, "delay": 0.0}

    def factory(path: Path, context: int) -> FakeLlama:
        box["llama"] = FakeLlama(path, context, box["reply"], box["delay"])
        return box["llama"]

    box["factory"] = factory
    return box


def gguf_pool(made: dict[str, Any], tmp_path: Path, **kw: Any) -> tuple[ModelPool, Path]:
    gguf = tmp_path / "model-q8_0.gguf"
    gguf.write_bytes(b"GGUF")  # never opened: the factory stands in for llama.cpp
    pool = ModelPool(2, gguf_of=lambda target: gguf, gguf_factory=made["factory"], **kw)
    return pool, gguf


def test_a_target_with_a_gguf_is_answered_by_llama_cpp(made, tiny_model_dir, tmp_path, prompts):
    pool, gguf = gguf_pool(made, tmp_path, gguf_context=512)
    try:
        served = pool.get(str(tiny_model_dir))
        assert served.model.engine == "llama.cpp"
        assert pool.models() == [f"gguf:{gguf}"]
        assert served.context == 512  # min(the setting, the model's max_position_embeddings)
        done = served.complete(prompts[1], GREEDY)
        assert (done.text, done.finish_reason) == ("hello world", "stop")
        assert done.prompt_tokens == len(prompts[1])
        call = made["llama"].calls[0]
        assert call["tokens"] == prompts[1]  # our tokenizer's ids, as they are
        assert (call["temp"], call["top_k"], call["min_p"], call["repeat_penalty"]) == (0, 0, 0, 1)
        assert made["llama"].seeds == []  # greedy: no seed to set
        served.complete(prompts[1], GREEDY)
        assert made["llama"].resets == 2  # a fresh context per request: no prefix carried over
    finally:
        pool.close()


def test_sampling_settings_and_seed_reach_llama_cpp(made, tiny_model_dir, tmp_path, prompts):
    pool, _ = gguf_pool(made, tmp_path)
    try:
        served = pool.get(str(tiny_model_dir))
        settings = GenerationSettings(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=1234)
        served.complete(prompts[0], settings)
        call = made["llama"].calls[0]
        assert (call["temp"], call["top_p"]) == (0.7, 0.9)
        assert made["llama"].seeds == [1234]
    finally:
        pool.close()


def test_max_tokens_stop_strings_and_streaming(made, tiny_model_dir, tmp_path, prompts):
    pool, _ = gguf_pool(made, tmp_path)
    try:
        served = pool.get(str(tiny_model_dir))
        short = served.complete(prompts[0], GenerationSettings(max_new_tokens=1, temperature=0))
        assert short.finish_reason == "length" and short.completion_tokens == 1
        cut = served.complete(prompts[0], GREEDY, stops=[" wor"])
        assert (cut.text, cut.finish_reason) == ("hello", "stop")
        items = list(served.stream(prompts[0], GREEDY))
        assert isinstance(items[-1], Completion)
        assert "".join(i for i in items if isinstance(i, str)) == "hello world"
    finally:
        pool.close()


def test_requests_queue_one_at_a_time_and_a_cancelled_one_stops(
    made, tiny_model_dir, tmp_path, prompts
) -> None:
    made["delay"] = 0.01
    made["reply"] = made["reply"][:-1]  # no end of turn: only max_tokens or a cancel ends it
    pool, _ = gguf_pool(made, tmp_path)
    try:
        served = pool.get(str(tiny_model_dir))
        out: list[Completion] = []
        threads = [
            threading.Thread(target=lambda p=p: out.append(served.complete(p, GREEDY)))
            for p in prompts[:3]
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert [c.completion_tokens for c in out] == [32, 32, 32]
        assert made["llama"].most_active == 1  # never two sequences at once on one Llama
        stream = served.stream(prompts[0], GenerationSettings(max_new_tokens=1000))
        next(stream)
        stream.close()  # the client went away
        deadline = time.monotonic() + 10
        while served.model.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not served.model.busy and made["llama"].active == 0
    finally:
        pool.close()


def test_an_engine_error_ends_that_request_only(made, tiny_model_dir, tmp_path, prompts):
    pool, _ = gguf_pool(made, tmp_path)
    try:
        served = pool.get(str(tiny_model_dir))
        made["llama"].fail_next = True
        with pytest.raises(RuntimeError, match="llama_decode"):
            served.complete(prompts[0], GREEDY)
        assert served.complete(prompts[0], GREEDY).text == "hello world"
    finally:
        pool.close()


def test_drop_and_close_unload_the_gguf_model(made, tiny_model_dir, tmp_path, prompts):
    pool, _ = gguf_pool(made, tmp_path)
    served = pool.get(str(tiny_model_dir))
    served.complete(prompts[0], GREEDY)
    pool.drop(str(tiny_model_dir))
    assert pool.models() == []
    served.model.scheduler.close(wait=True)
    assert made["llama"].closed


def test_targets_without_a_gguf_stay_on_torch(made, tiny_model_dir, tmp_path, prompts):
    pool = ModelPool(2, gguf_of=lambda target: None, gguf_factory=made["factory"])
    try:
        served = pool.get(str(tiny_model_dir))
        assert served.model.engine == "torch" and "llama" not in made
        assert served.complete(prompts[0], GREEDY).completion_tokens > 0
    finally:
        pool.close()


def test_a_full_context_ends_the_reply_as_length(made, tiny_model_dir, tmp_path, prompts):
    made["reply"] = made["reply"][:-1]
    pool, _ = gguf_pool(made, tmp_path, gguf_context=len(prompts[1]) + 5)
    try:
        done = pool.get(str(tiny_model_dir)).complete(prompts[1], GREEDY)
        assert (done.completion_tokens, done.finish_reason) == (5, "length")
    finally:
        pool.close()


def test_a_gguf_llama_cpp_cannot_load_is_served_by_torch(tiny_model_dir, tmp_path, prompts):
    tries = []

    def broken(path: Path, context: int) -> Any:
        tries.append(path)
        raise ValueError(f"Failed to load model from file: {path}")

    pool = ModelPool(1, gguf_of=lambda target: tmp_path / "bad.gguf", gguf_factory=broken)
    try:
        served = pool.get(str(tiny_model_dir))
        assert served.model.engine == "torch"
        assert served.complete(prompts[0], GREEDY).completion_tokens > 0
        pool.drop(str(tiny_model_dir))
        assert pool.get(str(tiny_model_dir)).model.engine == "torch" and len(tries) == 1
    finally:
        pool.close()


class Source:
    """A GGUF source whose export lands when the test says: `files[target]`, `generation`."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.generation = 0
        self.asked: list[str] = []

    def __call__(self, target: str) -> Path | None:
        self.asked.append(target)
        return self.files.get(target)


def test_a_target_moves_to_llama_cpp_once_its_export_lands(made, tiny_model_dir, tmp_path, prompts):
    source = Source()
    pool = ModelPool(2, gguf_of=source, gguf_factory=made["factory"])
    target = str(tiny_model_dir)
    try:
        first = pool.get(target)
        assert first.model.engine == "torch" and source.asked == [target]
        assert pool.get(target) is first and source.asked == [target]  # not asked per request
        source.generation += 1  # another target's export landed: this one is asked, stays
        assert pool.get(target) is first and source.asked == [target, target]
        assert pool.get(target) is first and len(source.asked) == 2
        request = first.submit(prompts[0], GREEDY)  # in flight on torch while it moves over
        gguf = tmp_path / "tiny-q8_0.gguf"
        gguf.write_bytes(b"GGUF")
        source.files[target] = gguf
        source.generation += 1
        moved = pool.get(target)
        assert moved.model.engine == "llama.cpp" and pool.models() == [f"gguf:{gguf}"]
        done = next(c for _, c in results(request.sink, 1) if isinstance(c, Completion))
        assert done.completion_tokens > 0  # torch finished what it had
        assert moved.complete(prompts[1], GREEDY).text == "hello world"
        assert pool.get(target) is moved and len(source.asked) == 3
    finally:
        pool.close()


def test_two_gguf_models_take_turns_token_by_token(tiny_model_dir, tmp_path, prompts) -> None:
    """Each llama.cpp step uses every core: two fine-tunes' requests interleave their tokens,
    never computing at once, and both progress (neither waits for the other's whole reply)."""
    steps: list[str] = []
    state = {"computing": 0, "most": 0}
    guard = threading.Lock()

    class Stepping:
        def __init__(self, path: Path) -> None:
            self.name = path.stem

        def generate(self, tokens: list[int], **kwargs: Any):
            for _ in range(20):
                with guard:
                    state["computing"] += 1
                    state["most"] = max(state["most"], state["computing"])
                time.sleep(0.003)  # the step's work
                with guard:
                    state["computing"] -= 1
                steps.append(self.name)
                yield 42

        def reset(self) -> None:
            pass

        def close(self) -> None:
            pass

    files = {}
    for name in ("a", "b"):
        files[name] = tmp_path / f"{name}.gguf"
        files[name].write_bytes(b"GGUF")
    other = tmp_path / "other-model"
    import shutil

    shutil.copytree(tiny_model_dir, other)
    targets = {str(tiny_model_dir): files["a"], str(other): files["b"]}
    pool = ModelPool(2, gguf_of=targets.get, gguf_factory=lambda path, ctx: Stepping(path))
    settings = GenerationSettings(max_new_tokens=20, temperature=0.0)
    try:
        served = [pool.get(t) for t in targets]
        threads = [threading.Thread(target=s.complete, args=(prompts[0], settings)) for s in served]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert state["most"] == 1  # never two llama.cpp steps at once
        assert sorted(steps) == ["a"] * 20 + ["b"] * 20
        first_b = steps.index("b")
        assert first_b < 20 and steps[first_b:].count("a") > 0  # interleaved, not one after another
    finally:
        pool.close()


def test_steps_run_in_arrival_order_on_one_thread() -> None:
    """A model that lets go and asks again at once goes behind the one already waiting; every
    step runs on the one steps thread; a step's exception reaches its caller."""
    from tunesmith.inference.llamacpp import Steps

    steps, order, threads = Steps(), [], set()
    release = threading.Event()

    def step(name: str, wait: bool = False) -> str:
        threads.add(threading.current_thread().name)
        if wait:
            release.wait(10)
        order.append(name)
        return name

    first = threading.Thread(target=steps.run, args=(partial(step, "a", True),))
    first.start()
    time.sleep(0.05)  # a's step is running
    other = threading.Thread(target=steps.run, args=(partial(step, "b"),))
    other.start()
    deadline = time.monotonic() + 10
    while steps._inbox.qsize() < 1 and time.monotonic() < deadline:
        time.sleep(0.001)  # b asked while a's step ran
    release.set()
    first.join(10)
    assert steps.run(partial(step, "a")) == "a"  # a asks again at once
    other.join(10)
    assert order == ["a", "b", "a"] and threads == {"llamacpp"}
    with pytest.raises(ValueError, match="boom"):
        steps.run(partial(int, "boom"))


def test_a_base_moving_over_keeps_serving_its_adapters_on_torch(
    made, tiny_model_dir, adapter_dirs, tmp_path, prompts
):
    """The base's export lands: the base moves to llama.cpp, its adapters (no export yet) stay
    on the same torch model in memory, not reloaded; requests racing the move load the GGUF
    once."""
    source = Source()
    opened: list[Path] = []

    def factory(path: Path, context: int) -> FakeLlama:
        opened.append(path)
        return made["factory"](path, context)

    pool = ModelPool(3, gguf_of=source, gguf_factory=factory)
    base, adapter = str(tiny_model_dir), str(adapter_dirs[0])
    try:
        on_torch = pool.get(base).model
        assert pool.get(adapter).model is on_torch and on_torch.engine == "torch"
        gguf = tmp_path / "base.gguf"
        gguf.write_bytes(b"GGUF")
        source.files[base] = gguf
        source.generation += 1
        got: list[Any] = []
        racers = [threading.Thread(target=lambda: got.append(pool.get(base))) for _ in range(4)]
        for t in racers:
            t.start()
        for t in racers:
            t.join(timeout=30)
        assert len(got) == 4 and {s.model.engine for s in got} == {"llama.cpp"}
        assert len({id(s) for s in got}) == 1 and opened == [gguf]  # loaded once
        kept = pool.get(adapter)
        assert kept.model is on_torch and on_torch.key in pool.models()  # not reloaded
        assert kept.complete(prompts[0], GREEDY).completion_tokens > 0
        assert pool.get(base).complete(prompts[1], GREEDY).text == "hello world"
    finally:
        pool.close()


def test_a_request_racing_an_unload_goes_to_the_models_successor(
    made, tiny_model_dir, tmp_path, prompts
):
    pool, _ = gguf_pool(made, tmp_path)
    try:
        served = pool.get(str(tiny_model_dir))
        served.model.scheduler.close()  # unloaded after this request got its binding
        pool.drop(str(tiny_model_dir))
        done = served.complete(prompts[0], GREEDY)  # answered by a newly loaded model
        assert done.text == "hello world"
    finally:
        pool.close()
