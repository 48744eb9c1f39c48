"""Entry point of the ``pytrafgen`` command: builds the Typer app from the command modules and
the plugins' ``register_commands`` hooks, and turns user mistakes into one-line errors."""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console

from pytrafgen.errors import PytrafgenError

# Each module defines ``register(app)``; listed in the order ``--help`` shows them.
COMMAND_MODULES: tuple[str, ...] = ("inspect", "tokenize", "vocab", "train", "generate", "evaluate", "compare",
                                     "plugins", "replay")

app = typer.Typer(
    name="pytrafgen",
    help="Learn from real packet captures and generate labeled network traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"pytrafgen {version('pytrafgen')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """pytrafgen: read, tokenize, learn, generate, evaluate and replay network traffic."""


def build_app() -> typer.Typer:
    for name in COMMAND_MODULES:
        importlib.import_module(f"pytrafgen.cli.{name}").register(app)
    from pytrafgen.plugins import add_plugin_commands

    add_plugin_commands(app)
    return app


def run() -> None:
    err = Console(stderr=True)
    try:
        build_app()(standalone_mode=False)
    except PytrafgenError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except typer.Abort:
        err.print("[red]aborted[/]")
        sys.exit(130)
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    run()
