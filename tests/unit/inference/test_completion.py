"""TextStream: the text of one reply, token by token, cut at its stop strings."""

from __future__ import annotations

from tunesmith.inference.completion import TextStream, first_stop


def feed(tok, text: str, **kw) -> tuple[list[str], TextStream]:
    stream = TextStream(tok, prompt_tokens=3, max_tokens=kw.pop("max_tokens", 1000), **kw)
    pieces = []
    for t in tok(text, add_special_tokens=False)["input_ids"]:
        pieces.append(stream.add(t))
        if stream.done:
            break
    return pieces, stream


def test_pieces_add_up_to_the_decoded_text(tiny_tokenizer) -> None:
    text = "Hello there, the refund is late! Please help."
    pieces, stream = feed(tiny_tokenizer, text)
    assert "".join(pieces) == text and len([p for p in pieces if p]) > 3
    assert not stream.done
    done = stream.result()
    assert done.text == text and done.prompt_tokens == 3 and done.finish_reason == "stop"


def test_a_stop_string_split_over_tokens_never_leaks(tiny_tokenizer) -> None:
    text = "the answer is paris END of story"
    pieces, stream = feed(tiny_tokenizer, text, stops=["END", "zzz"])
    assert stream.done and stream.finish_reason == "stop"
    assert "".join(pieces) == "the answer is paris " == stream.result().text
    assert not any("E" in p for p in pieces)  # held back until it was clearly the stop string


def test_text_that_only_looks_like_a_stop_string_is_released(tiny_tokenizer) -> None:
    end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    pieces, stream = feed(tiny_tokenizer, "an ENd to it", stops=["END"], stop_ids=[end])
    assert not stream.done and "".join(pieces) == "an ENd to "  # the last 2 characters wait
    pieces.append(stream.add(end))
    assert "".join(pieces) == "an ENd to it" and stream.finish_reason == "stop"


def test_end_of_turn_token_stops_and_is_not_counted(tiny_tokenizer) -> None:
    end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    stream = TextStream(tiny_tokenizer, prompt_tokens=1, max_tokens=50, stop_ids=[end])
    ids = tiny_tokenizer("thanks", add_special_tokens=False)["input_ids"]
    text = "".join(stream.add(t) for t in [*ids, end, *ids])
    result = stream.result()
    assert text == "thanks" == result.text
    assert result.completion_tokens == len(ids) and result.finish_reason == "stop"


def test_max_tokens_ends_with_length(tiny_tokenizer) -> None:
    pieces, stream = feed(tiny_tokenizer, "one two three four five six seven", max_tokens=3)
    result = stream.result()
    assert result.finish_reason == "length" and result.completion_tokens == 3
    assert "".join(pieces) == result.text and result.text


def test_a_multibyte_character_waits_for_its_last_byte(tiny_tokenizer) -> None:
    text = "café ok 🙂 done"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # the rare characters are several byte tokens
    pieces, _ = feed(tiny_tokenizer, text)
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_first_stop_is_the_earliest() -> None:
    assert first_stop("a b c", ["c", "b"]) == 2
    assert first_stop("abc", ["x", ""]) == -1
