"""`tunesmith export`: merged HF safetensors or GGUF + Ollama Modelfile from a training run.

Thin layer over `tunesmith.api.export_model`; no torch/transformers import at module level.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunesmith.cli.app import app, console
from tunesmith.cli.progress import EventView


@app.command("export")
def export_cmd(
    run_dir: Path = typer.Argument(
        ...,
        help="Training run directory, one of its checkpoints (RUN@step-N, RUN@best, "
        "RUN@latest), or an adapter / model directory.",
    ),
    format: str = typer.Option("gguf", "--format", "-f", help="hf or gguf."),
    quantize: str | None = typer.Option(
        None,
        "--quantize",
        "-q",
        help="gguf: f32, f16, bf16, q8_0 (default), q5_1, q5_0, q4_1, q4_0; "
        "hf: f32 (default), f16, bf16.",
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output directory (default: RUN_DIR/export/FORMAT-QUANT)."
    ),
    base: str | None = typer.Option(
        None, "--base", help="Base model of the adapter, if the run does not record it."
    ),
    name: str | None = typer.Option(None, "--name", help="Model name for the GGUF/Modelfile."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty output directory."),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="Reload the export and compare it with the merge."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Export a fine-tuned model: merged safetensors (hf) or GGUF with an Ollama Modelfile."""
    import logging
    import warnings

    from tunesmith import api

    # Library noise on loading adapters, not the user's concern: bitsandbytes (pulled in by
    # peft) about optional CPU kernels, transformers about a method peft still calls.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

    # with --json the result is all that is printed: no progress, not even on stderr
    with EventView() as view:
        result = api.export_model(
            run_dir, format=format, quantize=quantize, out=out, base=base, name=name,
            force=force, verify=verify, on_event=None if as_json else view,
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    console.print(
        f"[bold green]exported[/] {result.format} ({result.quantize}) to {result.out_dir} "
        f"in {result.seconds:.1f}s",
        highlight=False,
    )
    for path in result.files:
        size = path.stat().st_size
        console.print(f"  {path.name:<40} {size / 1e6:10.1f} MB", highlight=False)
    for note in result.notes:
        console.print(f"  note: {note}", highlight=False)
    for warning in result.warnings:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    rt = result.roundtrip
    if rt is not None:
        console.print(
            f"  round trip: tokens {'identical' if rt.tokens_match else 'DIFFER'}, "
            f"chat template {'identical' if rt.template_match else 'DIFFERS'}, "
            f"stops on {', '.join(rt.stop_tokens)}; logits max |diff| "
            f"{rt.max_abs_logit_diff:.4g} (largest logit {rt.max_abs_logit:.3g}), "
            f"top-1 agreement {rt.top1_agreement:.1%} over {rt.positions} positions",
            highlight=False,
        )
    if result.format == "gguf":
        console.print(
            f"  run it: cd {result.out_dir} && ollama create {result.name} -f Modelfile",
            highlight=False,
        )
