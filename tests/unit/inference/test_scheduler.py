"""The per-model generation thread: batches waiting requests, streams each row per step, lets
a finished row go at once, admits newcomers between steps, and keeps answers batch-independent."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import pytest

from tunesmith.inference.batch import BASE
from tunesmith.inference.completion import Completion, TextStream
from tunesmith.inference.sampling import Sampler
from tunesmith.inference.scheduler import Request, Scheduler, results


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path, adapter_dirs: list[Path]):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    peft = PeftModel.from_pretrained(base, str(adapter_dirs[0]), adapter_name="a0")
    peft.load_adapter(str(adapter_dirs[1]), adapter_name="a1")
    return peft.eval()


@pytest.fixture
def scheduler(model, tiny_tokenizer):
    s = Scheduler(model, pad_id=tiny_tokenizer.pad_token_id, max_batch=8, wait_s=0.02)
    yield s
    s.close(wait=True)


def request(tok, ids, max_tokens=12, *, temperature=0.0, seed=None, adapter=BASE, sink=None, tag=0):
    end = tok.convert_tokens_to_ids("<|im_end|>")
    text = TextStream(tok, prompt_tokens=len(ids), max_tokens=max_tokens, stop_ids=[end])
    return Request(ids, text, Sampler(temperature, 1.0, seed), adapter, sink or queue.Queue(), tag)


def run(scheduler, reqs: list[Request]) -> dict:
    """Submit all, holding the model lock meanwhile: however slowly this thread runs, no row
    can make a step before the last one is in."""
    sink: queue.Queue = queue.Queue()
    with scheduler.lock:
        for r in reqs:
            r.sink = sink
            scheduler.submit(r)
    return {t: c for t, c in results(sink, len(reqs)) if isinstance(c, Completion)}


def mixed(tok, prompts) -> list[Request]:
    """Greedy and seeded-sampling rows over the base and two adapters, different lengths."""
    specs = [(0, BASE, 0.0), (1, "a0", 0.0), (2, "a1", 0.0), (3, "a0", 1.0), (1, "a1", 1.2)]
    return [
        request(tok, prompts[p], 10, temperature=t, seed=40 + i, adapter=a, tag=i)
        for i, (p, a, t) in enumerate(specs)
    ]


def test_answers_are_the_same_alone_and_batched(scheduler, tiny_tokenizer, prompts) -> None:
    alone = {}
    for r in mixed(tiny_tokenizer, prompts):
        alone.update(run(scheduler, [r]))
    assert scheduler.largest_batch == 1
    together = run(scheduler, mixed(tiny_tokenizer, prompts))
    assert scheduler.largest_batch == 5
    assert together == alone
    assert len({c.text for c in alone.values()}) >= 4  # adapters and sampling really differ


def test_newcomers_join_a_running_batch(scheduler, tiny_tokenizer, prompts) -> None:
    sink: queue.Queue = queue.Queue()
    long = request(tiny_tokenizer, prompts[1], 120, adapter="a0", sink=sink, tag="long")
    scheduler.submit(long)
    assert sink.get(timeout=30)[0] == "long"  # it is generating
    late = mixed(tiny_tokenizer, prompts)
    with scheduler.lock:  # the long row waits between two steps while they come in
        for r in late:
            r.sink = sink
            scheduler.submit(r)
    got = {t: c for t, c in results(sink, 1 + len(late)) if isinstance(c, Completion)}
    assert scheduler.largest_batch == 1 + len(late)  # joined between steps, no waiting
    alone = {}
    again = request(tiny_tokenizer, prompts[1], 120, adapter="a0", tag="long")
    for r in [*mixed(tiny_tokenizer, prompts), again]:
        alone.update(run(scheduler, [r]))
    assert got == alone


def test_a_finished_row_leaves_at_once_and_pieces_stream_per_step(
    scheduler, tiny_tokenizer, prompts
) -> None:
    sink: queue.Queue = queue.Queue()
    short = request(tiny_tokenizer, prompts[0], 2, adapter="a1", sink=sink, tag="short")
    long = request(tiny_tokenizer, prompts[2], 30, adapter="a1", sink=sink, tag="long")
    scheduler.submit(short)
    scheduler.submit(long)
    order = list(results(sink, 2))
    done_short = order.index(("short", next(c for t, c in order if t == "short" and
                                            isinstance(c, Completion))))  # fmt: skip
    long_pieces = [i for i, (t, c) in enumerate(order) if t == "long" and isinstance(c, str)]
    assert long_pieces[0] < done_short < long_pieces[-1]  # both streamed; short did not wait
    assert scheduler.largest_batch == 2
    final = order[-1][1]
    assert isinstance(final, Completion) and final.completion_tokens == 30
    assert final.text == "".join(c for t, c in order if t == "long" and isinstance(c, str))


def test_cancel_ends_a_row_early(scheduler, tiny_tokenizer, prompts) -> None:
    r = request(tiny_tokenizer, prompts[1], 400, adapter="a0")
    scheduler.submit(r)
    r.sink.get(timeout=30)
    r.cancel()
    *_, (_, last) = results(r.sink, 1)
    assert isinstance(last, Completion) and last.completion_tokens < 400
    deadline = time.monotonic() + 10
    while scheduler.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not scheduler.busy


def test_an_error_reaches_its_requests_and_the_thread_goes_on(
    scheduler, tiny_tokenizer, prompts
) -> None:
    bad = request(tiny_tokenizer, prompts[0], 5, adapter="no-such-adapter")
    scheduler.submit(bad)
    with pytest.raises(ValueError, match="no-such-adapter"):
        list(results(bad.sink, 1))
    good = run(scheduler, [request(tiny_tokenizer, prompts[0], 5, adapter="a0")])
    assert good[0].completion_tokens > 0


def test_max_batch_caps_a_step(model, tiny_tokenizer, prompts) -> None:
    s = Scheduler(model, pad_id=0, max_batch=2, wait_s=0.05)
    try:
        got = run(s, [request(tiny_tokenizer, prompts[i % 4], 4, tag=i) for i in range(5)])
    finally:
        s.close(wait=True)
    assert len(got) == 5 and s.largest_batch == 2
