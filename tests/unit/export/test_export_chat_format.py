"""Chat template -> pieces -> Go TEMPLATE for Ollama, checked against the Jinja template."""

from __future__ import annotations

import re

import pytest
from gotemplate_subset import ollama_values, render

from tunesmith.export.chat_format import (
    VALIDATION_CONVERSATIONS,
    ChatFormat,
    analyse_template,
    end_of_turn_token,
    tokenizer_renderer,
)
from tunesmith.export.modelfile import ModelfileSpec, go_template, render_modelfile

CONVERSATIONS = [
    *VALIDATION_CONVERSATIONS,
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "c {{ not go }}"}],
]  # fmt: skip


def _jinja(template: str):
    from jinja2 import Environment

    compiled = Environment().from_string(template)
    return lambda messages, gen: compiled.render(messages=messages, add_generation_prompt=gen)


def test_chatml_pieces(tiny_tokenizer) -> None:
    fmt = analyse_template(tokenizer_renderer(tiny_tokenizer))
    assert fmt == ChatFormat(
        default_prefix="<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n",
        system_prefix="<|im_start|>system\n",
        system_suffix="<|im_end|>\n",
        user_prefix="<|im_start|>user\n",
        user_suffix="<|im_end|>\n",
        assistant_prefix="<|im_start|>assistant\n",
        assistant_suffix="<|im_end|>\n",
        generation_prompt="<|im_start|>assistant\n",
    )
    assert end_of_turn_token(fmt, tiny_tokenizer) == "<|im_end|>"


@pytest.mark.parametrize("gen", [False, True])
def test_go_template_renders_like_jinja(tiny_tokenizer, gen: bool) -> None:
    jinja = tokenizer_renderer(tiny_tokenizer)
    fmt = analyse_template(jinja)
    assert fmt is not None
    template = go_template(fmt)
    for conversation in CONVERSATIONS:
        expected = jinja(conversation, True)
        if not gen:  # Ollama always ends with the generation prompt; compare the rest too
            expected = expected[: -len(fmt.generation_prompt)]
            assert fmt.render(conversation, False) == jinja(conversation, False)
        got = render(template, ollama_values(conversation))
        assert (got if gen else got[: -len(fmt.generation_prompt)]) == expected


def test_llama3_style_template_translates() -> None:
    template = (
        "{{ '<|begin_of_text|>' }}{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] "
        "+ '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
        "{% endif %}"
    )
    fmt = analyse_template(_jinja(template))
    assert fmt is not None and fmt.default_prefix == "<|begin_of_text|>"
    for conversation in CONVERSATIONS:
        assert render(go_template(fmt), ollama_values(conversation)) == _jinja(template)(
            conversation, True
        )


@pytest.mark.parametrize(
    "template",
    [
        # the last assistant turn is left open: not a per-message template
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% if not loop.last %}</s>"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}",
        # the system prompt is folded into the first user turn (Llama-2 style)
        "{% for m in messages %}{% if m['role'] == 'system' %}{% set sys = m['content'] %}"
        "{% elif m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]{% else %}"
        "{{ m['content'] }}</s>{% endif %}{% endfor %}",
        # raises on a system message
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}",
    ],
)
def test_templates_the_pieces_cannot_reproduce_are_not_translated(template: str) -> None:
    def render_or_raise(messages, gen):
        from jinja2 import Environment

        env = Environment()

        def fail(msg):
            raise ValueError(msg)

        env.globals["raise_exception"] = fail
        return env.from_string(template).render(messages=messages, add_generation_prompt=gen)

    assert analyse_template(render_or_raise) is None


def test_literal_braces_survive_go() -> None:
    fmt = ChatFormat("{{sys}}", "<s>", "</s>", "U{{", "}}\n", "A:", "\n", "A:")
    template = go_template(fmt)
    conversation = [{"role": "user", "content": "hi"}]
    assert render(template, ollama_values(conversation)) == fmt.render(conversation, True)


def test_modelfile(tiny_tokenizer) -> None:
    fmt = analyse_template(tokenizer_renderer(tiny_tokenizer))
    spec = ModelfileSpec(
        gguf_name="m-q8_0.gguf", stops=["<|im_end|>", "<|im_end|>"], context_length=8192, fmt=fmt
    )
    text = render_modelfile(spec)
    assert text.splitlines()[0] == "FROM ./m-q8_0.gguf"
    assert re.findall(r"^PARAMETER stop (.*)$", text, re.M) == ['"<|im_end|>"']
    assert "PARAMETER num_ctx 4096" in text
    assert "PARAMETER temperature 0.2" in text
    body = re.search(r'TEMPLATE """(.*?)"""', text, re.S)
    assert body is not None and body.group(1) == go_template(fmt)
    without = render_modelfile(ModelfileSpec("m.gguf", ["</s>"], 512, None))
    assert "TEMPLATE" not in without and "PARAMETER num_ctx 512" in without
