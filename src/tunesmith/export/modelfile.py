"""An Ollama `Modelfile` next to the GGUF, so `ollama create NAME -f Modelfile` just works.

The TEMPLATE is the model's own chat template translated to Go template syntax from the pieces
`chat_format` reads off the Jinja template (and checks against it). Ollama passes the system
prompt as `.System` and the turns as `.Messages`; the template renders the template's default
system block when there is no system prompt, exactly as the Jinja template does. The stop
parameters are the end-of-turn token and eos, so Ollama stops where training put the end of a
reply. Parameters: a low temperature (0.2) unless the generation config asks for sampling with
its own, because fine-tuned specialists (strict JSON, fixed formats) are judged on
consistency; repeat_penalty 1.0 because Ollama's default penalty breaks repetitive formats such
as JSON keys; num_ctx the model's context, capped at 4096 to keep memory modest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunesmith.export.chat_format import ChatFormat

NUM_CTX_CAP = 4096


def _literal(text: str) -> str:
    """Template text that Go renders as `text` verbatim."""
    if "{{" in text or "}}" in text:
        return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"
    return text


def go_template(fmt: ChatFormat) -> str:
    """The Go template that renders conversations exactly like the pieces of `fmt`."""
    lit = _literal
    parts = [
        "{{ if .System }}",
        lit(fmt.system_prefix), "{{ .System }}", lit(fmt.system_suffix),
        "{{ else }}", lit(fmt.default_prefix), "{{ end }}",
        "{{ range .Messages }}",
        '{{ if eq .Role "user" }}',
        lit(fmt.user_prefix), "{{ .Content }}", lit(fmt.user_suffix),
        '{{ else if eq .Role "assistant" }}',
        lit(fmt.assistant_prefix), "{{ .Content }}", lit(fmt.assistant_suffix),
        "{{ end }}{{ end }}",
        lit(fmt.generation_prompt),
    ]  # fmt: skip
    return "".join(parts)


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


@dataclass
class ModelfileSpec:
    gguf_name: str
    stops: list[str]
    context_length: int
    fmt: ChatFormat | None
    temperature: float = 0.2
    top_p: float | None = None
    header: str = ""
    warnings: list[str] = field(default_factory=list)


def sampling_defaults(generation_config: Any) -> tuple[float, float | None]:
    """(temperature, top_p) from the generation config when it samples, else our defaults."""
    if generation_config is not None and getattr(generation_config, "do_sample", False):
        temp = getattr(generation_config, "temperature", None)
        top_p = getattr(generation_config, "top_p", None)
        return (float(temp) if temp else 0.2, float(top_p) if top_p and top_p < 1 else None)
    return 0.2, None


def render_modelfile(spec: ModelfileSpec) -> str:
    lines = []
    if spec.header:
        lines += [f"# {line}" for line in spec.header.splitlines()]
    lines.append(f"FROM ./{spec.gguf_name}")
    template = go_template(spec.fmt) if spec.fmt is not None else None
    if template is not None and '"""' in template:
        spec.warnings.append('the chat template contains """, which a Modelfile cannot quote')
        template = None
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    else:
        lines.append(
            "# The chat template could not be translated to Go; Ollama picks a template by "
            "matching the GGUF's tokenizer.chat_template."
        )
    for stop in dict.fromkeys(spec.stops):
        lines.append(f"PARAMETER stop {_quote(stop)}")
    lines.append(f"PARAMETER temperature {spec.temperature:g}")
    if spec.top_p is not None:
        lines.append(f"PARAMETER top_p {spec.top_p:g}")
    lines.append("PARAMETER repeat_penalty 1")
    lines.append(f"PARAMETER num_ctx {min(spec.context_length, NUM_CTX_CAP)}")
    return "\n".join(lines) + "\n"
