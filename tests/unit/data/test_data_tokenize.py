"""Loss masks and token boundaries: training sees exactly the prompt ids inference uses."""

from __future__ import annotations

import pytest

from tunesmith.data.formats import message_dicts
from tunesmith.data.records import Conversation, Message, Source
from tunesmith.data.tokenize import (
    IGNORE_INDEX,
    _realign,
    tokenize_conversation,
    tokenize_many,
)
from tunesmith.errors import ConfigError, DataError
from tunesmith.inference.engine import prompt_ids

SRC = Source("data.jsonl", 7)


def conv(*pairs: tuple[str, str] | tuple[str, str, int], completion_only: bool = False):
    msgs = tuple(Message(p[0], p[1], p[2] if len(p) > 2 else None) for p in pairs)  # type: ignore[misc]
    return Conversation(msgs, SRC, completion_only)


def trained_spans(ex) -> list[list[int]]:
    """Runs of consecutive trained token ids."""
    spans: list[list[int]] = []
    prev = False
    for tok, lab in zip(ex.input_ids, ex.labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == tok  # labels are the ids themselves; the model shifts
            if not prev:
                spans.append([])
            spans[-1].append(tok)
        prev = lab != IGNORE_INDEX
    return spans


CASES = [
    conv(("user", "hello there"), ("assistant", "Paris is the capital.")),
    conv(("system", "You answer in json."), ("user", "name please"), ("assistant", '{"a": 1}')),
    conv(
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "and the second?"),
        ("assistant", "second answer"),
    ),
    conv(
        ("system", "Be brief."),
        ("user", "q1"),
        ("assistant", "a1", 0),
        ("user", "q2"),
        ("assistant", "  spaced answer\n\nwith lines  "),
        ("user", "q3"),
        ("assistant", "a3"),
    ),
]


@pytest.mark.parametrize("c", CASES, ids=["single", "system", "two-turn", "weights"])
def test_prompt_ids_match_inference_for_every_assistant_turn(tiny_tokenizer, c):
    ex = tokenize_conversation(c, tiny_tokenizer)
    msgs = message_dicts(c.messages)
    assert len(ex.input_ids) == len(ex.labels)
    for i, m in enumerate(c.messages):
        if m.role != "assistant":
            continue
        want = prompt_ids(tiny_tokenizer, msgs[:i])
        assert ex.input_ids[: len(want)] == want, f"turn {i}: prompt ids differ from inference"
        # The answer starts right after the prompt; a trained answer's first token has a label.
        assert (ex.labels[len(want)] != IGNORE_INDEX) == m.trained


def test_assistant_only_trains_answers_and_end_of_turn_not_the_newline(tiny_tokenizer):
    c = CASES[2]
    ex = tokenize_conversation(c, tiny_tokenizer)
    spans = trained_spans(ex)
    texts = [tiny_tokenizer.decode(s) for s in spans]
    assert texts == ["first answer<|im_end|>", "second answer<|im_end|>"]
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    last = max(i for i, t in enumerate(ex.input_ids) if t == im_end)
    assert ex.labels[last] == im_end
    assert ex.input_ids[last + 1 :] and all(lab == IGNORE_INDEX for lab in ex.labels[last + 1 :])
    assert ex.n_trained == sum(len(s) for s in spans)
    assert ex.prompt_tokens == ex.labels.index(spans[0][0])


def test_default_system_prompt_is_rendered_like_inference(tiny_tokenizer):
    ex = tokenize_conversation(CASES[0], tiny_tokenizer)
    text = tiny_tokenizer.decode(ex.input_ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>")


def test_weight_zero_turn_is_context_only(tiny_tokenizer):
    ex = tokenize_conversation(CASES[3], tiny_tokenizer)
    texts = [tiny_tokenizer.decode(s) for s in trained_spans(ex)]
    assert texts == ["  spaced answer\n\nwith lines  <|im_end|>", "a3<|im_end|>"]
    assert "a1" in tiny_tokenizer.decode(ex.input_ids)


def test_completion_only_and_last_train_only_the_final_answer(tiny_tokenizer):
    pairs = [
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "q"),
        ("assistant", "final answer"),
    ]
    for ex in (
        tokenize_conversation(conv(*pairs, completion_only=True), tiny_tokenizer),
        tokenize_conversation(conv(*pairs), tiny_tokenizer, train_on="last"),
    ):
        assert [tiny_tokenizer.decode(s) for s in trained_spans(ex)] == ["final answer<|im_end|>"]


def test_train_on_all_trains_every_token(tiny_tokenizer):
    ex = tokenize_conversation(CASES[2], tiny_tokenizer, train_on="all")
    assert ex.labels == ex.input_ids
    assert ex.input_ids == tokenize_conversation(CASES[2], tiny_tokenizer).input_ids


def test_unknown_train_on_is_a_config_error(tiny_tokenizer):
    with pytest.raises(ConfigError, match="train_on"):
        tokenize_conversation(CASES[0], tiny_tokenizer, train_on="prompt")


def test_too_long_is_rejected_naming_the_line_or_truncated(tiny_tokenizer):
    full = tokenize_conversation(CASES[2], tiny_tokenizer)
    limit = len(full.input_ids) - 3
    with pytest.raises(DataError) as info:
        tokenize_conversation(CASES[2], tiny_tokenizer, max_seq_len=limit)
    assert info.value.where == "data.jsonl:7"
    assert f"max_seq_len {limit}" in str(info.value)
    cut = tokenize_conversation(CASES[2], tiny_tokenizer, max_seq_len=limit, truncate=True)
    assert cut.truncated and cut.input_ids == full.input_ids[:limit]
    assert cut.labels == full.labels[:limit]
    with pytest.raises(DataError, match="no trained tokens"):
        tokenize_conversation(CASES[2], tiny_tokenizer, max_seq_len=10, truncate=True)


def test_special_token_text_in_content_is_an_error(tiny_tokenizer):
    bad = conv(("user", "hi"), ("assistant", "done<|im_end|> and more"))
    with pytest.raises(DataError) as info:
        tokenize_conversation(bad, tiny_tokenizer)
    assert "<|im_end|>" in str(info.value) and info.value.where == "data.jsonl:7"


def test_batch_matches_single_and_reports_errors_in_place(tiny_tokenizer):
    bad = conv(("user", "hi"), ("assistant", "x<|im_start|>"))
    out = tokenize_many([CASES[0], bad, CASES[3]], tiny_tokenizer)
    assert out[0].input_ids == tokenize_conversation(CASES[0], tiny_tokenizer).input_ids
    assert isinstance(out[1], DataError) and out[1].code == "special_token"
    assert out[2].labels == tokenize_conversation(CASES[3], tiny_tokenizer).labels


def test_realign_keeps_labels_where_tokens_align_from_either_end():
    ids = [1, 2, 3, 4, 5, 6]
    labels = [-100, -100, 3, 4, -100, 6]
    # A merge in the middle: tokens 3 and 4 became one token 34.
    assert _realign(ids, labels, [1, 2, 34, 5, 6]) == [-100, -100, -100, -100, 6]
    assert _realign(ids, labels, ids) == labels


EDGE = [
    conv(("user", "héllo — ünïcode ✓ 你好"), ("assistant", "\n\nstarts with newlines")),
    conv(
        ("user", "  leading spaces"),
        ("assistant", " one space"),
        ("user", "\tTab"),
        ("assistant", "\n"),
    ),
    conv(("system", "sys\n\n"), ("user", "a\r\nb"), ("assistant", "emoji 🎉🎉 end  ")),
]


def test_fast_paths_equal_plain_transformers_calls(tiny_tokenizer):
    from tunesmith.data.tokenize import ChatTokenizer

    fast = ChatTokenizer(tiny_tokenizer)
    assert fast._fast_render is not None and fast._split_re is not None
    slow = ChatTokenizer(tiny_tokenizer)
    slow._fast_render = None
    slow._split_re = None
    convs = CASES + EDGE
    a = tokenize_many(convs, fast)
    b = tokenize_many(convs, slow)
    assert [(x.input_ids, x.labels) for x in a] == [(x.input_ids, x.labels) for x in b]


@pytest.mark.parametrize("c", EDGE, ids=["unicode", "whitespace", "emoji"])
def test_edge_case_boundaries_match_inference(tiny_tokenizer, c):
    ex = tokenize_conversation(c, tiny_tokenizer)
    msgs = message_dicts(c.messages)
    for i, m in enumerate(c.messages):
        if m.role == "assistant":
            want = prompt_ids(tiny_tokenizer, msgs[:i])
            assert ex.input_ids[: len(want)] == want


@pytest.mark.slow
def test_default_model_boundaries_match_inference():
    from tunesmith.models import load_tokenizer
    from tunesmith.models.load import resolve_path

    tok = load_tokenizer(resolve_path("smollm2-135m-instruct"))
    for c in CASES + EDGE:
        ex = tokenize_conversation(c, tok)
        msgs = message_dicts(c.messages)
        turns = [i for i, m in enumerate(c.messages) if m.role == "assistant"]
        for i in turns:
            want = prompt_ids(tok, msgs[:i])
            exact = ex.input_ids[: len(want)] == want
            # Every turn is exact unless an earlier answer's leading whitespace merged with the
            # template newline (then the example says so); the last turn is always exact.
            assert exact or (ex.retokenized and i != turns[-1])
            if exact:
                assert (ex.labels[len(want)] != IGNORE_INDEX) == c.messages[i].trained
    merged = tokenize_conversation(CASES[3], tok)
    assert merged.retokenized == 1  # "  spaced answer" follows "assistant\n"
    texts = [tok.decode(s) for s in trained_spans(merged)]
    assert texts[-1] == "a3<|im_end|>" and "spaced answer" in texts[0]


def test_template_failures_are_row_errors(tiny_model_dir):
    from tunesmith.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    from tunesmith.data.tokenize import chat_tokenizer

    ct = chat_tokenizer(tok)
    assert ct._fast_render is not None and ct._split_re is not None  # other samples verified
    out = tokenize_many([CASES[0], CASES[1]], tok)
    assert out[0].n_trained > 0
    assert isinstance(out[1], DataError) and out[1].code == "template"
    assert "System role not supported" in str(out[1]) and out[1].where == "data.jsonl:7"


def _record_encoded(monkeypatch) -> list[int]:
    """The longest text each tokenizer call was given."""
    from tunesmith.data import tokenize as tok_mod

    seen: list[int] = []
    real = tok_mod.ChatTokenizer.encode_many

    def spy(self, texts):
        seen.append(max(map(len, texts), default=0))
        return real(self, texts)

    monkeypatch.setattr(tok_mod.ChatTokenizer, "encode_many", spy)
    return seen


def test_a_multi_mb_row_is_rejected_by_characters_before_tokenizing(tiny_tokenizer, monkeypatch):
    import time

    from tunesmith.data.formats import RowError

    seen = _record_encoded(monkeypatch)
    big = conv(("user", "x " * 2_500_000), ("assistant", "ok"))  # a 5 MB row
    start = time.perf_counter()
    [result] = tokenize_many([big], tiny_tokenizer, max_seq_len=128)
    assert time.perf_counter() - start < 1.0
    assert isinstance(result, RowError) and result.code == "too_long"
    assert "5,000,002 characters" in str(result) and "data.jsonl:7" in str(result)
    assert max(seen, default=0) == 0  # the tokenizer never saw it


def test_truncate_cuts_a_huge_row_first_and_keeps_the_same_tokens(tiny_tokenizer, monkeypatch):
    from tunesmith.data import tokenize as tok_mod

    seen = _record_encoded(monkeypatch)
    limit = 128 * tok_mod.chat_tokenizer(tiny_tokenizer).max_token_chars
    big = conv(("user", "Summarise this."), ("assistant", "word and more " * 40_000))
    [capped] = tokenize_many([big], tiny_tokenizer, max_seq_len=128, truncate=True)
    assert capped.truncated and len(capped) == 128
    assert max(seen) <= 2 * limit + 200  # the template's few characters on top
    monkeypatch.setattr(tok_mod.ChatTokenizer, "bound_length", lambda self, c, n, t: c)
    [whole] = tokenize_many([big], tiny_tokenizer, max_seq_len=128, truncate=True)
    assert (capped.input_ids, capped.labels) == (whole.input_ids, whole.labels)


def test_the_character_bound_never_rejects_a_row_that_fits(tiny_tokenizer):
    """The bound rests on one fact: no token decodes to more than `max_token_chars`
    characters, so n characters are at least n / max_token_chars tokens."""
    from tunesmith.data import tokenize as tok_mod

    per_token = tok_mod.chat_tokenizer(tiny_tokenizer).max_token_chars
    special = set(tiny_tokenizer.all_special_tokens)
    decoded = {
        t: tiny_tokenizer.convert_tokens_to_string([t])
        for t in tiny_tokenizer.get_vocab()
        if t not in special
    }
    assert max(len(s) for s in decoded.values()) <= per_token
    longest = max(decoded.values(), key=len)
    text = longest * 3
    [ok] = tokenize_many(
        [conv(("user", "q"), ("assistant", text))], tiny_tokenizer, max_seq_len=128
    )
    assert not isinstance(ok, Exception), ok
