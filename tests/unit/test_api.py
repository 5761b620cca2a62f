"""tunesmith.api as the README shows it (issue 11 item 18): `generate` gives a string for one
prompt and a list for a list of prompts."""

from __future__ import annotations

from pathlib import Path

from tunesmith import api


def test_generate_returns_a_string_for_one_prompt_and_a_list_for_a_list(
    tiny_model_dir: Path,
) -> None:
    lm = api.load_model(str(tiny_model_dir))
    one = api.generate(lm, "hello there", max_new_tokens=4)
    assert isinstance(one, str)
    many = api.generate(lm, ["hello there", "what is json"], max_new_tokens=4)
    assert isinstance(many, list) and len(many) == 2 and many[0] == one
    conversation = [{"role": "user", "content": "hello there"}]
    assert api.generate(lm, conversation, max_new_tokens=4) == one  # one conversation: one answer
    assert api.generate(lm, [conversation], max_new_tokens=4) == [one]
    assert api.generate(lm, [], max_new_tokens=4) == []
