"""The engine behind the server: one base in memory serves its adapters (batched together),
DoRA adapters and other models get models of their own, least recently used out."""

from __future__ import annotations

import queue
import shutil

import pytest

from tunesmith.inference import GenerationSettings
from tunesmith.inference.completion import Completion
from tunesmith.inference.pool import ModelPool
from tunesmith.inference.scheduler import results

GREEDY = GenerationSettings(max_new_tokens=8, temperature=0.0)


@pytest.fixture
def pool():
    p = ModelPool(2, wait_ms=20)
    yield p
    p.close()


def test_adapters_share_the_base_model_in_memory(pool, tiny_model_dir, adapter_dirs) -> None:
    base = pool.get(str(tiny_model_dir))
    frozen = {p.data_ptr() for p in base.model.loaded.model.parameters()}
    served = [pool.get(str(d)) for d in adapter_dirs[:2]]
    assert pool.models() == [str(tiny_model_dir)]  # one model in memory for all three
    assert all(s.model is base.model for s in served)
    peft = base.model.adapters.model
    assert {p.data_ptr() for n, p in peft.named_parameters() if "lora_" not in n} == frozen
    assert len(peft.peft_config) == 2


def test_greedy_answers_do_not_depend_on_the_batch(pool, tiny_model_dir, adapter_dirs, dora_dir,
                                                   prompts) -> None:  # fmt: skip
    targets = [str(tiny_model_dir), *map(str, adapter_dirs[:2]), str(dora_dir)]
    served = {t: pool.get(t) for t in targets}
    alone = {
        (t, k): served[t].complete(ids, GREEDY) for t in targets for k, ids in enumerate(prompts)
    }
    sink: queue.Queue = queue.Queue()
    with served[str(tiny_model_dir)].model.lock:  # no row steps before all are in
        for t in targets:
            for k, ids in enumerate(prompts):
                served[t].submit(ids, GREEDY, sink=sink, tag=(t, k))
    together = {tag: c for tag, c in results(sink, len(alone)) if isinstance(c, Completion)}
    assert together == alone
    base = served[str(tiny_model_dir)].model
    assert base.scheduler.largest_batch == 3 * len(prompts)  # base + both adapters, one batch
    assert len({alone[(t, 1)].text for t in targets}) == len(targets)  # all answer differently


def test_dora_is_served_merged_as_a_model_of_its_own(pool, tiny_model_dir, dora_dir, prompts):
    import torch

    from tunesmith.inference.batch import BASE, Batch
    from tunesmith.models import load_model

    dora = pool.get(str(dora_dir))
    assert dora.model.key == f"merged:{dora_dir.resolve()}" and dora.adapter_dir is None
    assert not hasattr(dora.model.loaded.model, "peft_config")  # merged: a plain model
    unmerged = load_model(dora_dir).model  # base + DoRA adapter through peft, unmerged
    with torch.inference_mode():
        ids = torch.tensor([prompts[1]])
        want = unmerged(input_ids=ids).logits[:, -1]  # peft refuses adapter_names with DoRA
        with unmerged.disable_adapter():
            base = unmerged(input_ids=ids).logits[:, -1]
        got = Batch(dora.model.loaded.model).prefill(dora.model.loaded.model, [prompts[1]], [BASE])
    assert torch.allclose(want, got, atol=1e-4) and not torch.allclose(base, got, atol=1e-2)


def test_complete_and_stream_give_the_same_reply(pool, adapter_dirs, prompts) -> None:
    served = pool.get(str(adapter_dirs[0]))
    whole = served.complete(prompts[3], GREEDY, stops=["zz"])
    items = list(served.stream(prompts[3], GREEDY, stops=["zz"]))
    assert items[-1] == whole and "".join(items[:-1]) == whole.text  # type: ignore[arg-type]
    assert whole.prompt_tokens == len(prompts[3]) and whole.completion_tokens == 8


def test_least_recently_used_model_goes_and_comes_back(tiny_model_dir, tmp_path, prompts):
    other = tmp_path / "full-fine-tune"
    shutil.copytree(tiny_model_dir, other)
    pool = ModelPool(1)
    try:
        first = pool.get(str(tiny_model_dir))
        want = first.complete(prompts[0], GREEDY)
        pool.get(str(other))
        assert pool.models() == [str(other)] and str(tiny_model_dir) not in pool
        assert first.model.scheduler.closed
        assert first.complete(prompts[0], GREEDY) == want  # a stale handle loads it again
        assert pool.models() == [str(tiny_model_dir)]
    finally:
        pool.close()


def test_pinned_targets_stay(tiny_model_dir, tmp_path, prompts) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    pool = ModelPool(1, pinned={str(tiny_model_dir)})
    try:
        pool.get(str(tiny_model_dir))
        pool.get(str(other))
        assert set(pool.models()) == {str(tiny_model_dir), str(other)}
    finally:
        pool.close()


def test_drop_unloads_an_adapter_or_a_model(pool, tiny_model_dir, adapter_dirs, tmp_path):
    ft = pool.get(str(adapter_dirs[0]))
    peft = ft.model.adapters.model
    assert len(peft.peft_config) == 1
    pool.drop(str(adapter_dirs[0]))
    assert str(adapter_dirs[0]) not in pool and len(peft.peft_config) == 0
    assert pool.models() == [str(tiny_model_dir)]  # the base stays
    other = tmp_path / "full"
    shutil.copytree(tiny_model_dir, other)
    full = pool.get(str(other))
    pool.drop(str(other))
    assert str(other) not in pool.models() and full.model.scheduler.closed
    pool.drop("never-loaded")  # nothing to do


def test_unknown_models_are_model_errors(pool) -> None:
    from tunesmith.errors import ModelError

    with pytest.raises(ModelError):
        pool.get("no/such-model-here")


def _first_requests_at_once(pool: ModelPool, targets: list[str], ids: list[int]) -> dict:
    import threading

    gate = threading.Barrier(len(targets))
    answers: dict[str, object] = {}

    def first(target: str) -> None:
        gate.wait()
        try:
            answers[target] = pool.get(target).complete(ids, GREEDY)
        except Exception as exc:  # the assertion names it
            answers[target] = exc

    threads = [threading.Thread(target=first, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return answers


def test_first_requests_for_several_models_at_once_all_load(
    tiny_model_dir, adapter_dirs, dora_dir, prompts
) -> None:
    """transformers builds a model on the meta device through process-wide state, so two
    loads at once in one process broke each other ("Cannot copy out of meta tensor"); the
    pool loads one model (or adapter) at a time, whatever the requests' order."""
    targets = [str(tiny_model_dir), str(adapter_dirs[0]), str(dora_dir), str(adapter_dirs[1])]
    for _ in range(3):  # a race: a few rounds, each on a fresh pool
        pool = ModelPool(4, wait_ms=5)
        try:
            answers = _first_requests_at_once(pool, targets, prompts[0])
        finally:
            pool.close()
        assert len(answers) == len(targets)
        assert all(isinstance(a, Completion) for a in answers.values()), answers
