"""The Typer application object shared by the command modules in this package.

Command modules must not import torch/transformers at module level: `tunesmith --help` stays fast.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="tunesmith",
    help="Fine-tune LLMs on your own examples and prove the result beats the base model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err_console = Console(stderr=True)
