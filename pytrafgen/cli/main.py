"""Entry point of the ``pytrafgen`` command: builds the Typer app from the command modules and
the plugins' ``register_commands`` hooks, and turns user mistakes into one-line errors."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from pytrafgen.errors import PytrafgenError

# Each module defines ``register(app)``; listed in the order ``--help`` shows them.
COMMAND_MODULES: tuple[str, ...] = ("inspect", "tokenize", "vocab", "train", "gaps", "generate", "evaluate", "compare",
                                     "detect", "plugins", "replay", "demo")

app = typer.Typer(
    name="pytrafgen",
    help="Learn from real packet captures and generate labeled network traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        from pytrafgen import __version__

        typer.echo(f"pytrafgen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """pytrafgen: read, tokenize, learn, generate, evaluate and replay network traffic."""


_built: list[bool] = []


def build_app() -> typer.Typer:
    if _built:  # registering twice would list every command twice
        return app
    _built.append(True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"pytrafgen.cli.{name}").register(app)
    from pytrafgen.plugins import add_plugin_commands

    add_plugin_commands(app)
    return app


def run() -> None:
    """Run the CLI. Click (standalone mode) handles usage errors, --help and Ctrl-C; pytrafgen's
    own errors (bad input, bad usage it detects) print as one line with exit code 2."""
    try:
        build_app()()
    except PytrafgenError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
