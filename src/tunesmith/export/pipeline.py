"""`export_model`: one call from a run directory to a deployable, verified artefact.

Order matters for a user: everything that can be checked cheaply (format, quantisation, input
layout, output directory) is checked before the minutes-long merge; the export is written into
a temp directory (`tunesmith.io.atomic_dir`), verified there by reloading it, and only then
renamed into place. A failed export leaves nothing behind that looks finished, and an existing
output directory as it was. Progress goes to `on_event` as `progress` events of phase `export`
(percent done, with what is being done as the text).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.events import Event, Reporter
from tunesmith.events import progress as progress_event
from tunesmith.export.common import ExportError, check_out_dir
from tunesmith.export.gguf import QUANT_TYPES
from tunesmith.export.hf import HF_DTYPES
from tunesmith.export.source import ExportSource, resolve_source
from tunesmith.export.verify import RoundTrip
from tunesmith.io import atomic_dir

FORMATS = ("hf", "gguf")
DEFAULT_QUANT = {"hf": "f32", "gguf": "q8_0"}
PHASE = "export"
EXPORT_MANIFEST = "export.json"  # what was exported, from what, verified how, and its files


@dataclass
class ExportResult:
    format: str
    quantize: str
    out_dir: Path
    files: list[Path]
    source: ExportSource
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    roundtrip: RoundTrip | None = None
    seconds: float = 0.0
    name: str = ""

    @property
    def main_file(self) -> Path:
        ggufs = [p for p in self.files if p.suffix == ".gguf"]
        return ggufs[0] if ggufs else self.out_dir

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format": self.format,
            "quantize": self.quantize,
            "out_dir": str(self.out_dir),
            "files": [p.name for p in self.files],
            "source": {
                "kind": self.source.kind,
                "weights_dir": str(self.source.weights_dir),
                "base_model": self.source.base_name,
                "base_path": str(self.source.base_path) if self.source.base_path else None,
                "adapter_type": self.source.adapter_type,
                "run_dir": str(self.source.run_dir) if self.source.run_dir else None,
            },
            "notes": self.notes,
            "warnings": self.warnings,
            "roundtrip": self.roundtrip.as_dict() if self.roundtrip else None,
            "seconds": round(self.seconds, 2),
        }


def check_format(fmt: str, quantize: str | None) -> str:
    """Validate `fmt`/`quantize` and return the quantisation to use."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'", hint="use --format hf or gguf")
    quant = (quantize or DEFAULT_QUANT[fmt]).lower()
    allowed = HF_DTYPES if fmt == "hf" else QUANT_TYPES
    if quant not in allowed:
        raise ExportError(
            f"--quantize {quant} is not available for the {fmt} format",
            hint=f"use one of {', '.join(allowed)}",
        )
    return quant


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return slug or "model"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_out_dir(source: ExportSource, fmt: str, quant: str) -> Path:
    root = source.run_dir or source.weights_dir.parent
    step = f"step-{source.checkpoint_step}-" if source.checkpoint_step is not None else ""
    return root / "export" / f"{step}{fmt}-{quant}"


def _check_not_over_inputs(out_dir: Path, source: ExportSource) -> None:
    """Refuse an output directory that is, or contains, what is being exported (--force would
    otherwise delete the run or the base model)."""
    out = out_dir.expanduser().resolve()
    for inp in (source.weights_dir, source.run_dir, source.base_path, source.tokenizer_dir):
        if inp is not None and (out == inp or out in inp.parents):
            raise ExportError(
                f"output directory {out_dir} would overwrite the export's input {inp}",
                hint="choose an --out outside the run and model directories",
            )


def _require(roundtrip: RoundTrip, stop: str | None, what: str) -> None:
    if not roundtrip.tokens_match:
        raise ExportError(f"the exported {what} tokenises the chat template differently")
    if not roundtrip.template_match:
        raise ExportError(f"the exported {what} lost the chat template")
    if stop and stop not in roundtrip.stop_tokens:
        raise ExportError(
            f"the exported {what} does not stop on {stop!r} (stops on {roundtrip.stop_tokens})"
        )


def _readme(result: ExportResult, display: str) -> str:
    """How to run what was exported, for whoever finds the directory later."""
    lines = [f"# {display}", "", f"Exported by tunesmith ({result.format}, {result.quantize})."]
    rt = result.roundtrip
    if rt is not None:
        lines += [
            "",
            f"Verified on export: token ids and chat template identical to training; stops on "
            f"{', '.join(rt.stop_tokens)}; logits max |diff| {rt.max_abs_logit_diff:.4g} "
            f"(largest logit {rt.max_abs_logit:.3g}), top-1 agreement {rt.top1_agreement:.1%}.",
        ]
    if result.format == "gguf":
        gguf = f"{display}-{result.quantize}.gguf"
        lines += [
            "", "Ollama:", "", "    ollama create " + display + " -f Modelfile",
            "    ollama run " + display, "", "llama.cpp:", "",
            f"    llama-cli -m {gguf} -cnv", "", "transformers:", "",
            "    from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'    model = AutoModelForCausalLM.from_pretrained(".", gguf_file="{gguf}")',
            f'    tokenizer = AutoTokenizer.from_pretrained(".", gguf_file="{gguf}")',
        ]  # fmt: skip
    else:
        lines += [
            "", "transformers:", "",
            "    from transformers import AutoModelForCausalLM, AutoTokenizer",
            '    model = AutoModelForCausalLM.from_pretrained(".")',
            '    tokenizer = AutoTokenizer.from_pretrained(".")',
            "    inputs = tokenizer.apply_chat_template(",
            '        messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"',
            "    )",
            "    out = model.generate(**inputs, max_new_tokens=256)  # stops at the end of a turn",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


def export_model(
    path: str | Path,
    *,
    fmt: str = "gguf",
    quantize: str | None = None,
    out: str | Path | None = None,
    base: str | Path | None = None,
    name: str | None = None,
    force: bool = False,
    verify: bool = True,
    on_event: Reporter | None = None,
) -> ExportResult:
    """Export a run dir / adapter dir / model dir as HF safetensors or GGUF (+ Modelfile)."""
    from tunesmith import __version__
    from tunesmith.export.chat_format import (
        analyse_template,
        end_of_turn_token,
        tokenizer_renderer,
    )
    from tunesmith.export.merge import load_merged

    def step(msg: str, frac: float) -> None:
        if on_event is not None:
            on_event(progress_event(PHASE, round(100 * frac), 100, msg, unit="%"))

    def gguf_step(event: Event) -> None:  # tensors written -> 20..75 % of the export
        if event.kind == "progress" and event.total:
            step(event.message, 0.2 + 0.55 * float(event.done or 0) / float(event.total))
        elif on_event is not None:
            on_event(event)

    started = time.monotonic()
    quant = check_format(fmt, quantize)
    source = resolve_source(path, base=base)
    out_dir = Path(out).expanduser() if out else default_out_dir(source, fmt, quant)
    _check_not_over_inputs(out_dir, source)
    check_out_dir(out_dir, force=force)
    if fmt == "gguf":  # refuse unsupported architectures before the merge
        from transformers import AutoConfig

        from tunesmith.export.gguf import llama_shape

        llama_shape(AutoConfig.from_pretrained(str(source.base_path or source.weights_dir)))

    step("merging" if source.kind == "adapter" else "loading", 0.05)
    merged = load_merged(source)
    model, tokenizer = merged.model, merged.tokenizer
    fmt_pieces = analyse_template(tokenizer_renderer(tokenizer))
    stop = end_of_turn_token(fmt_pieces, tokenizer)
    result = ExportResult(
        fmt, quant, out_dir, [], source, notes=list(merged.notes), warnings=list(merged.warnings)
    )
    if fmt_pieces is None and fmt == "gguf":
        result.warnings.append(
            "the chat template is not a simple per-message template; the Modelfile has no "
            "TEMPLATE and Ollama will pick one by matching the GGUF's chat template"
        )

    reference_ids: list[list[int]] = []
    reference: list[Any] = []
    if verify:
        from tunesmith.export.verify import logits_for, probe_ids

        step("computing reference logits", 0.15)
        reference_ids = probe_ids(tokenizer)
        reference = logits_for(model, reference_ids)

    display = _slug(name or source.display_name)
    result.name = display
    check_out_dir(out_dir, force=force)  # again: the merge took minutes
    with atomic_dir(out_dir, replace=True) as tmp:
        if fmt == "hf":
            step("writing safetensors", 0.3)
            _write_hf(tmp, merged, quant)
        else:
            step("writing GGUF", 0.2)
            _write_gguf(tmp, merged, result, display, fmt_pieces, stop, gguf_step)
        if verify:
            step("verifying the export (reloading it)", 0.8)
            result.roundtrip = _verify(tmp, result, tokenizer, reference_ids, reference)
            _require(result.roundtrip, stop, "GGUF" if fmt == "gguf" else "model")
        result.seconds = time.monotonic() - started
        (tmp / "README.md").write_text(_readme(result, display), encoding="utf-8")
        # export.json lists every file of the export, itself included
        names = sorted({p.name for p in tmp.iterdir() if p.is_file()} | {EXPORT_MANIFEST})
        result.files = [out_dir / n for n in names]
        manifest = result.as_dict()
        manifest["tunesmith_version"] = __version__
        weights = [p for p in sorted(tmp.iterdir()) if p.suffix in {".gguf", ".safetensors"}]
        manifest["sha256"] = {p.name: _sha256(p) for p in weights}
        (tmp / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    step("done", 1.0)
    return result


def _write_hf(tmp: Path, merged: Any, dtype: str) -> None:
    from tunesmith.export.hf import save_hf

    save_hf(merged.model, merged.tokenizer, tmp, dtype=dtype)


def _write_gguf(
    tmp: Path,
    merged: Any,
    result: ExportResult,
    display: str,
    fmt_pieces: Any,
    stop: str | None,
    on_event: Reporter | None,
) -> None:
    """The GGUF file and the Modelfile beside it."""
    from tunesmith import __version__
    from tunesmith.export.gguf import write_gguf
    from tunesmith.export.gguf_vocab import build_vocab
    from tunesmith.export.modelfile import ModelfileSpec, render_modelfile, sampling_defaults

    model, tokenizer = merged.model, merged.tokenizer
    eot_id = tokenizer.convert_tokens_to_ids(stop) if stop else None
    vocab = build_vocab(tokenizer, int(model.config.vocab_size), eot_id=eot_id)
    gguf_path = tmp / f"{display}-{result.quantize}.gguf"
    types = write_gguf(
        gguf_path, config=model.config, state=model.state_dict(), vocab=vocab,
        quant=result.quantize, name=display, base_name=result.source.base_name,
        on_event=on_event,
    )  # fmt: skip
    counts: dict[str, int] = {}
    for ggml_type in types.values():
        counts[ggml_type] = counts.get(ggml_type, 0) + 1
    result.notes.append(
        "tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
    )
    temperature, top_p = sampling_defaults(getattr(model, "generation_config", None))
    spec = ModelfileSpec(
        gguf_name=gguf_path.name,
        stops=[s for s in (stop, tokenizer.eos_token) if s],
        context_length=int(model.config.max_position_embeddings),
        fmt=fmt_pieces,
        temperature=temperature,
        top_p=top_p,
        header=f"Made by tunesmith {__version__}. Use: ollama create {display} -f Modelfile",
    )
    (tmp / "Modelfile").write_text(render_modelfile(spec), encoding="utf-8")
    result.warnings += spec.warnings


def _verify(
    tmp: Path, result: ExportResult, tokenizer: Any, ids: list[list[int]], reference: list[Any]
) -> RoundTrip:
    from tunesmith.export.verify import verify_gguf, verify_hf

    if result.format == "hf":
        return verify_hf(tmp, tokenizer, ids, reference)
    gguf = next(tmp.glob("*.gguf"))
    return verify_gguf(gguf, tokenizer, ids, reference)
