"""`tunesmith train`: a config file plus overrides, flags for the common case, or --resume.

    tunesmith train CONFIG.yaml [key=value ...]
    tunesmith train --model M --data FILE [--adapter lora] [--max-steps N] ...
    tunesmith train --resume RUN_DIR

Flags are sugar for overrides (`--max-steps 30` is `max_steps=30`) and win over the file.
No torch import here: everything heavy happens behind `tunesmith.api`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from tunesmith.cli.app import app, console
from tunesmith.cli.progress import EventView
from tunesmith.errors import ConfigError

# flag name -> dotted spec key
_FLAG_KEYS = {
    "model": "model",
    "method": "method",
    "data": "data.train",
    "validation": "data.validation",
    "validation_fraction": "data.validation_fraction",
    "adapter": "adapter",
    "epochs": "epochs",
    "max_steps": "max_steps",
    "time_budget": "time_budget",
    "output_dir": "output_dir",
    "learning_rate": "learning_rate",
    "batch_size": "batch_size",
    "grad_accum": "grad_accum",
    "max_seq_len": "data.max_seq_len",
    "seed": "seed",
    "device": "device",
}


def _split_args(args: list[str]) -> tuple[Path | None, list[str]]:
    """First positional argument is the config file unless it is a key=value override."""
    config: Path | None = None
    overrides: list[str] = []
    for i, arg in enumerate(args):
        if "=" in arg:
            overrides.append(arg)
        elif i == 0:
            config = Path(arg)
        else:
            raise ConfigError(
                f"unexpected argument '{arg}'",
                hint="overrides are key=value (for example lora.r=8); the config file comes first",
            )
    return config, overrides


@app.command()
def train(
    args: list[str] = typer.Argument(
        None, help="CONFIG.yaml, then key=value overrides (lora.r=8 data.packing=false ...)."
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model name or path."),
    method: str | None = typer.Option(
        None, "--method", help="supervised (sft, the default) | dpo | orpo (preference pairs)"
    ),
    data: Path | None = typer.Option(None, "--data", "-d", help="Training data file."),
    validation: Path | None = typer.Option(None, "--validation", help="Held-out data file."),
    validation_fraction: float | None = typer.Option(
        None, "--validation-fraction", help="Hold out this fraction of --data instead."
    ),
    adapter: str | None = typer.Option(None, "--adapter", help="lora | qlora | dora | none"),
    epochs: int | None = typer.Option(None, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    time_budget: str | None = typer.Option(
        None,
        "--time-budget",
        help="Fit the run into this much time (5m, 90s, 1h30m): steps are cut to what fits "
        "at the measured speed, and the run says what it cut.",
    ),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o"),
    learning_rate: float | None = typer.Option(None, "--learning-rate", "--lr"),
    batch_size: int | None = typer.Option(None, "--batch-size"),
    grad_accum: int | None = typer.Option(None, "--grad-accum"),
    max_seq_len: int | None = typer.Option(None, "--max-seq-len"),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(None, "--device"),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue RUN_DIR from its latest complete checkpoint."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Validate and print the spec, then exit without training."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Write the run into an existing non-empty directory that is not a run "
        "(its files may be overwritten).",
    ),
    dedupe: bool = typer.Option(
        False, "--dedupe", help="Drop exact repeats of a row (data.dedupe=true); each is listed."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="Plain log lines, no bar."),
) -> None:
    """Fine-tune a model (SFT, DPO or ORPO; LoRA, DoRA, QLoRA or full fine-tuning)."""
    from tunesmith import api

    config, overrides = _split_args(list(args or []))
    flags = {
        "model": model,
        "method": method,
        "data": data,
        "validation": validation,
        "validation_fraction": validation_fraction,
        "adapter": adapter,
        "epochs": epochs,
        "max_steps": max_steps,
        "time_budget": time_budget,
        "output_dir": output_dir,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "grad_accum": grad_accum,
        "max_seq_len": max_seq_len,
        "seed": seed,
        "device": device,
    }
    for name, value in flags.items():
        if value is not None:
            text = str(value) if isinstance(value, Path) else value
            overrides.append(f"{_FLAG_KEYS[name]}={json.dumps(text)}")
    if dedupe:
        overrides.append("data.dedupe=true")

    if resume is not None and (config is not None or overrides):
        raise ConfigError(
            "--resume continues a run exactly as it was configured",
            hint="drop the config file, overrides and flags",
        )
    if resume is None:
        spec = api.load_run_spec(config, overrides)
        if print_config:
            from tunesmith.config import dump_spec

            console.print(dump_spec(spec), highlight=False, end="")
            return
    with EventView(bars=not no_progress) as view:
        result = (
            api.resume(resume, on_event=view)
            if resume
            else api.train(spec, on_event=view, force=force)
        )

    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    last = result.metrics[-1] if result.metrics else {}
    if result.status == "cancelled":
        console.print(
            f"cancelled at step {last.get('step', 0)}; continue with: "
            f"tunesmith train --resume {result.run_dir}",
            highlight=False,
        )
        return
    summary = f"done ({result.status}): {len(result.metrics)} logged steps"
    if "loss" in last:
        summary += f", final loss {last['loss']:.4f}"
    console.print(summary, highlight=False)
    console.print(f"run: {result.run_dir}\nfinal: {result.final_dir}", highlight=False)


@app.command()
def cancel(run_dir: Path = typer.Argument(..., help="The run directory of a running training.")):
    """Ask a running training to stop: it saves a checkpoint and exits; --resume continues."""
    from tunesmith import api

    api.cancel(run_dir)
    console.print(f"cancel requested for {run_dir}", highlight=False)
