"""`tunesmith models list|pull`, `tunesmith generate` and `tunesmith chat`."""

from __future__ import annotations

from dataclasses import replace

import typer
from rich.table import Table

from tunesmith.cli.app import app, console, err_console
from tunesmith.cli.progress import EventView
from tunesmith.events import Event

models_app = typer.Typer(help="List and prepare models.", no_args_is_help=True)
app.add_typer(models_app, name="models")

MODEL_HELP = "Alias, HF model dir, .gguf file, run dir, RUN@step-N/best/latest or hub id."
DEVICE_HELP = "auto (CUDA if available, else CPU), cpu, cuda, cuda:N"
DTYPE_HELP = "auto (bf16 on capable GPUs, float32 on CPU), float32, bf16, fp16"


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


@models_app.command("list")
def models_list() -> None:
    """Aliases and cached models, with size and parameter count."""
    from tunesmith import api

    table = Table(title="tunesmith models")
    for col in ("name", "kind", "status", "size", "parameters", "path"):
        table.add_column(col, overflow="fold")
    for row in api.list_models():
        table.add_row(
            row.name,
            row.kind,
            row.status,
            _human(row.size_bytes),
            _params(row.parameters),
            row.path or "-",
        )
    console.print(table)


@models_app.command("pull")
def models_pull(name: str = typer.Argument(..., help="Alias (see `models list`).")) -> None:
    """Prepare the local cache for a model (de-quantise the packaged GGUF once)."""
    from tunesmith import api

    with EventView() as view:

        def show(event: Event) -> None:  # the bar says which model it is converting
            view(replace(event, message=f"{name}: {event.message}") if event.message else event)

        path = api.pull_model(name, on_event=show)
    console.print(f"ready: {path}")


@app.command()
def generate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    prompt: str = typer.Argument(..., help="The user message."),
    system: str | None = typer.Option(None, help="Optional system message."),
    max_new_tokens: int = typer.Option(256, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
) -> None:
    """Answer one prompt through the model's chat template."""
    from tunesmith import api

    answer = api.generate(
        model,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        system=system,
        device=device,
        dtype=dtype,
    )
    typer.echo(answer)


@app.command()
def chat(
    model: str = typer.Argument(..., help=MODEL_HELP),
    system: str | None = typer.Option(None, help="Optional system message."),
    max_new_tokens: int = typer.Option(512, min=1),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    dtype: str = typer.Option("auto", help=DTYPE_HELP),
) -> None:
    """Interactive chat that streams tokens. /reset clears the conversation, /exit leaves."""
    from tunesmith import api

    loaded = api.load_model(model, device=device, dtype=dtype)
    base: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    err_console.print("[dim]/reset clears the conversation, /exit leaves[/]")
    while True:
        try:
            text = console.input("[bold green]you>[/] ")
        except EOFError:
            break
        command = text.strip()
        if command in ("/exit", "/quit"):
            break
        if command == "/reset":
            messages = list(base)
            err_console.print("[dim]conversation cleared[/]")
            continue
        if not command:
            continue
        messages.append({"role": "user", "content": text})
        console.print("[bold blue]model>[/] ", end="")
        pieces = []
        for piece in api.stream_chat(
            loaded, messages, max_new_tokens=max_new_tokens, temperature=temperature
        ):
            pieces.append(piece)
            console.print(piece, end="", highlight=False, markup=False)
        console.print()
        messages.append({"role": "assistant", "content": "".join(pieces).strip()})
