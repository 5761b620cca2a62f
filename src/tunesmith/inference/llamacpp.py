"""Serving a GGUF model through llama.cpp (the optional `llamacpp` extra): fast single streams.

Why: on a CPU one stream of our PyTorch engine decodes at a fraction of llama.cpp's speed
(issue 13 measured 17.7 vs 55.9 tokens/s on the default model), because llama.cpp runs the
whole step in hand-written kernels over quantised weights with no Python between layers. So a
server with `llama-cpp-python` installed serves a target that has a GGUF file (the shipped
default model, or a fine-tune exported once to a cache, see server/gguf_cache.py) through
llama.cpp. One engine, one request at a time, first come first served: llama-cpp-python's
`Llama` holds one sequence, so concurrent requests queue here (an operator who wants batched
decoding of many streams sets `serve_engine: torch`). Several GGUF models (one per fine-tune)
take turns token by token: every llama.cpp step runs on one thread (`CPU`), in arrival order.

`LlamaCppScheduler` has the interface of `Scheduler` (`submit`, `busy`, `closed`, `close`), so
`Served` (pool.py) and the routes do not know which engine answers. It takes the prompt as
token ids of our tokenizer: the GGUF's vocabulary is the same (our exporter writes it from that
tokenizer, and the default model's tokenizer is read from its GGUF), and the reply goes
through the same `TextStream` (stop strings, stop tokens, max_tokens, incremental text).
Sampling: temperature 0 is greedy; otherwise llama.cpp's own sampler with the request's
temperature, top_p and seed, no top-k, min-p or repeat penalty (OpenAI's semantics): a seeded
request repeats itself on this engine, not across engines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import queue
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tunesmith.inference.scheduler import Inbox, Request

Factory = Callable[[Path, int], Any]  # (gguf file, context length) -> a llama_cpp.Llama


class Steps:
    """The one thread that runs every llama.cpp step in this process (a prompt's prefill, one
    token), in the order they were asked for, whichever model they belong to.

    Why one thread: a step already uses every core, so two at once only fight over them; a
    model that lets go and asks again at once goes behind the ones already waiting; and
    llama.cpp's OpenMP keeps one team of workers per calling thread: with a thread per model,
    four models on 2 cores make more OpenMP threads than cores, and libgomp then stops
    spinning at its barriers, each of the many per token becoming a sleep and a wake-up
    (measured through the server: ~50 instead of ~87 tokens/s)."""

    def __init__(self) -> None:
        self._inbox: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = (
            queue.SimpleQueue()
        )
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, step: Callable[[], Any]) -> Any:
        """`step()` on the steps thread; its result, or its exception raised here."""
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="llamacpp")
                self._thread.start()
        box: list[Any] = []
        done = threading.Event()
        self._inbox.put((step, box, done))
        done.wait()
        value, error = box
        if error is not None:
            raise error
        return value

    def _loop(self) -> None:
        while True:
            step, box, done = self._inbox.get()
            try:
                box[:] = [step(), None]
            except BaseException as exc:  # the caller raises it
                box[:] = [None, exc]
            finally:
                done.set()


CPU = Steps()  # every llama.cpp step of the process (prefill, one token), in arrival order


def available() -> bool:
    """Whether llama-cpp-python is installed (found without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def open_llama(gguf: Path, context: int) -> Any:
    """A `llama_cpp.Llama` for `gguf` on this machine's cores, quiet, `context` tokens long."""
    import os

    import llama_cpp

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return llama_cpp.Llama(
        model_path=str(gguf), n_ctx=context, n_threads=threads or 1, n_batch=512, verbose=False
    )


class LlamaCppScheduler(Inbox):
    """The generation thread of one GGUF model: requests in order, one at a time."""

    def __init__(
        self,
        gguf: Path,
        *,
        context: int = 2048,
        name: str = "gguf",
        factory: Factory | None = None,
    ):
        self.gguf = gguf
        self.context = context
        self.largest_batch = 0  # observability, as Scheduler (always 1 here once busy)
        self.steps = 0  # tokens generated
        # Loaded here, in the caller's thread: a file llama.cpp cannot open fails `pool.get`.
        self._llama = (factory or open_llama)(gguf, context)
        self._start(f"llamacpp-{name}")

    def _run(self) -> None:
        while True:
            request = self.inbox.get()
            if request is None:
                break
            try:
                if not request.cancelled.is_set():
                    self.largest_batch = 1
                    self._generate(request)
                request.finish()
            except Exception as exc:  # this request gets it; the engine goes on
                with contextlib.suppress(Exception):
                    request.finish(exc)
        with contextlib.suppress(Exception):
            self._llama.close()

    def _generate(self, request: Request) -> None:
        sampler = request.sampler
        room = self.context - len(request.ids)  # the server refuses longer asks up front
        if room <= 0:
            raise ValueError(
                f"the prompt ({len(request.ids)} tokens) fills this engine's context of "
                f"{self.context} tokens"
            )
        if not sampler.greedy:
            self._llama.set_seed(int(sampler.seed) % 2**31)
        # A fresh context for every request: llama-cpp-python would otherwise keep the common
        # prefix of the last prompt and evaluate only the rest, whose one-token kernels round
        # differently from a whole prompt's, so the same greedy request could answer
        # differently after another one (seen: 1 of 8 prompts after a warm-up of itself).
        # The cost is the prompt's prefill each time (TTFT), not decoding speed.
        self._llama.reset()
        tokens = self._llama.generate(
            request.ids,
            temp=0.0 if sampler.greedy else sampler.temperature,
            top_p=sampler.top_p,
            top_k=0,  # off: OpenAI's sampling has none
            min_p=0.0,
            repeat_penalty=1.0,
            reset=True,
        )
        try:
            while True:
                token = CPU.run(partial(next, tokens, None))
                if token is None:
                    return
                if request.cancelled.is_set():
                    return
                self.steps += 1
                piece = request.text.add(int(token))
                if piece:
                    request.emit(piece)
                if request.text.done:
                    return
                room -= 1
                if room <= 0:  # the context is full: the reply ends as if at max_tokens
                    request.text.finish_reason = "length"
                    return
        finally:
            close = getattr(tokens, "close", None)
            if close is not None:
                close()
