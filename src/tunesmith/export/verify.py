"""Prove an export round-trips: reload it the way a user would and compare with the merged model.

For GGUF we reload with transformers' GGUF loader (an implementation independent of our writer:
its own de-quantiser, its own inverse of the rotary row order, its own tokenizer builder) and
read the raw metadata with gguf's reader. We compare, on fixed probe conversations rendered
through the chat template: the token ids, the chat template string, the stop tokens and the
logits. Token or template differences fail the export; logit differences are reported, since
their size is what the chosen quantisation costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.export.chat_format import VALIDATION_CONVERSATIONS
from tunesmith.export.common import ExportError


@dataclass
class RoundTrip:
    """Measured agreement between an exported model and the merged model it came from."""

    max_abs_logit_diff: float
    max_abs_logit: float
    top1_agreement: float
    positions: int
    tokens_match: bool
    template_match: bool
    stop_tokens: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_ids(tokenizer: Any) -> list[list[int]]:
    """Token ids of the probe conversations (prompts with the generation prompt, and the full
    rendered conversations), through the engine's own renderer. Conversations the template
    rejects (e.g. one without a system role) are left out; none left is an error."""
    from tunesmith.inference import prompt_ids

    out: list[list[int]] = []
    for conv in VALIDATION_CONVERSATIONS:
        try:
            prompt = prompt_ids(tokenizer, conv)
            full = tokenizer.apply_chat_template(
                list(conv), add_generation_prompt=False, tokenize=True, return_dict=True
            )
        except Exception:  # jinja raise_exception(...) for roles the template does not take
            continue
        out += [prompt, list(full["input_ids"])]
    if not out:
        raise ExportError("the chat template renders none of the probe conversations")
    return out


def logits_for(model: Any, ids: list[list[int]]) -> list[Any]:
    import torch

    outs = []
    with torch.no_grad():
        for seq in ids:
            outs.append(model(torch.tensor([seq])).logits[0].float())
    return outs


def compare_logits(reference: list[Any], candidate: list[Any]) -> tuple[float, float, float, int]:
    """(max |Δ|, max |reference|, top-1 agreement, positions compared)."""
    import torch

    diff, scale, agree, total = 0.0, 0.0, 0, 0
    for ref, cand in zip(reference, candidate, strict=True):
        if not torch.isfinite(cand).all():
            raise ExportError("the exported model produces non-finite logits")
        diff = max(diff, (ref - cand).abs().max().item())
        scale = max(scale, ref.abs().max().item())
        agree += int((ref.argmax(-1) == cand.argmax(-1)).sum().item())
        total += ref.shape[0]
    return diff, scale, agree / max(total, 1), total


def gguf_stop_tokens(gguf_path: Path) -> list[str]:
    """Token strings of the eos/eot ids stored in the GGUF (what llama.cpp stops on)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    tokens_field = reader.fields["tokenizer.ggml.tokens"]
    stops: list[str] = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"):
        if key in reader.fields:
            index = int(reader.fields[key].contents())
            token = tokens_field.contents(index)
            if token not in stops:
                stops.append(str(token))
    return stops


def verify_gguf(
    gguf_path: Path, tokenizer: Any, reference_ids: list[list[int]], reference: list[Any]
) -> RoundTrip:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    gguf_tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    tokens_match = probe_ids(gguf_tok) == reference_ids
    template_match = gguf_tok.chat_template == tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    diff, scale, top1, n = compare_logits(reference, logits_for(model, reference_ids))
    stops = gguf_stop_tokens(gguf_path)
    return RoundTrip(diff, scale, top1, n, tokens_match, template_match, stops)


def verify_hf(
    out_dir: Path, tokenizer: Any, reference_ids: list[list[int]], reference: list[Any]
) -> RoundTrip:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.models.load import stop_token_ids

    tok = AutoTokenizer.from_pretrained(str(out_dir))
    model = AutoModelForCausalLM.from_pretrained(
        str(out_dir), dtype=torch.float32, use_safetensors=True
    ).eval()
    diff, scale, top1, n = compare_logits(reference, logits_for(model, reference_ids))
    stops = [tok.convert_ids_to_tokens(i) for i in stop_token_ids(tok, model.generation_config)]
    return RoundTrip(
        diff,
        scale,
        top1,
        n,
        probe_ids(tok) == reference_ids,
        tok.chat_template == tokenizer.chat_template,
        stops,
    )
