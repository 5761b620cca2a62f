"""The `tunesmith` command: a thin Typer layer over `tunesmith.api`.

User mistakes (`TunesmithError`) print one line to stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from tunesmith import __version__
from tunesmith.cli.app import app, err_console
from tunesmith.errors import TunesmithError


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunesmith {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Fine-tune LLMs on your own examples and prove the result beats the base model."""


# Command modules register themselves on `app` when imported.
from tunesmith.cli import (  # noqa: E402, F401
    data_cmds,
    eval_cmds,
    export_cmds,
    model_cmds,
    serve_cmds,
    train_cmds,
)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        app(args=argv, standalone_mode=True)
    except TunesmithError as exc:
        # The message is user data (keys, file names): never interpret it as rich markup.
        err_console.print(
            Text("error: ", style="bold red") + Text(str(exc)), highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
